"""Near-duplicates at scale: the approximate index (faiss IVF) against the exact search.

Synthetic 512-d embeddings: a float32 Gaussian mixture (20 centres drawn from ``N(0, 2^2)`` per
dimension, each row = a random centre + ``N(0, 1)`` noise: two distinct rows have cosine ~0.8,
far from duplicates) in which ``--dup-fraction`` of the rows are replaced by near copies of an
earlier row of the same block of ``--recall-n`` rows (row + ``sigma |row| / sqrt(D)`` Gaussian
noise, ``sigma ~ U(0, 1.2 threshold)``: most within the threshold, some just outside).

1. On the first ``--recall-n`` rows: the exact all-pairs search and the index, both timed; the
   recall of the index = exact pairs it found / exact pairs (it never adds a pair, see
   :mod:`zcore.core.neighbors`), and the ratio of the two times (measured in the same run);
2. on all rows: ``near_duplicates(X, threshold)`` end to end (normalising, the index, the groups),
   timed, and the recall of the planted pairs within the threshold; the exact search's time at
   that size is extrapolated from step 1 (it is quadratic in N).

Example::

    python benchmarks/bench_neardup.py --n 1280000 --json benchmarks/results/neardup.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from zcore.core import neighbors  # noqa: E402
from zcore.core.methods import l2_normalize, near_duplicates  # noqa: E402

UPTIME = ""  # load average when the run started


def make_data(n, d, block, dup_fraction, threshold, seed=0, clusters=20):
    """Embeddings with planted near duplicates; returns ``X`` and the planted ``(src, dst)``."""
    rng = np.random.default_rng(seed)
    centers = (2.0 * rng.standard_normal((clusters, d))).astype(np.float32)
    X = np.empty((n, d), np.float32)
    chunk = 1 << 16
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        X[start : start + m] = rng.standard_normal((m, d), dtype=np.float32)
        X[start : start + m] += centers[rng.integers(0, clusters, m)]
    n_dup = int(dup_fraction * n)
    dst = np.sort(rng.choice(np.arange(1, n), n_dup, replace=False))
    src = (dst // block) * block + (rng.random(n_dup) * (dst % block)).astype(np.int64)
    keep = src < dst
    src, dst = src[keep], dst[keep]
    sigma = rng.uniform(0, 1.2 * threshold, len(dst)).astype(np.float32)
    norms = np.linalg.norm(X[src], axis=1)
    noise = rng.standard_normal((len(dst), d), dtype=np.float32)
    X[dst] = X[src] + (sigma * norms / np.sqrt(d))[:, None] * noise
    return X, src, dst


def _pairs_set(r, c, n):
    return set((r.astype(np.int64) * n + c).tolist())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_280_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--recall-n", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--dup-fraction", type=float, default=0.02)
    parser.add_argument("--nprobe", type=int, default=neighbors.NPROBE)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--note", default="", help="stored with the JSON (e.g. machine load)")
    args = parser.parse_args(argv)
    import faiss

    global UPTIME
    UPTIME = os.popen("uptime").read().strip()
    neighbors.NPROBE = args.nprobe
    min_cos = 1.0 - args.threshold**2 / 2.0 - 1e-6
    t0 = time.perf_counter()
    X, src, dst = make_data(args.n, args.d, args.recall_n, args.dup_fraction, args.threshold)
    print(
        f"data: {X.shape}, {len(dst)} planted copies, {time.perf_counter() - t0:.1f} s", flush=True
    )

    # 1. recall and speed against the exact search, on the first recall_n rows
    m = min(args.recall_n, args.n)
    Xn = l2_normalize(X[:m])
    t0 = time.perf_counter()
    er, ec = neighbors.threshold_pairs(Xn, min_cos, search="exact")
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ar, ac = neighbors.threshold_pairs(Xn, min_cos, search="faiss")
    ann_s = time.perf_counter() - t0
    exact = _pairs_set(er, ec, m)
    found = _pairs_set(ar, ac, m)
    recall = len(found & exact) / max(1, len(exact))
    small = {
        "n": m,
        "exact_pairs": len(exact),
        "index_pairs": len(found),
        "index_pairs_not_exact": len(found - exact),
        "recall": recall,
        "exact_s": exact_s,
        "index_s": ann_s,
        "speedup": exact_s / ann_s,
    }
    print(json.dumps(small), flush=True)
    del Xn

    # 2. near_duplicates end to end on all rows (the index: auto from ANN_MIN_ROWS rows)
    t0 = time.perf_counter()
    groups = near_duplicates(X, args.threshold)
    full_s = time.perf_counter() - t0
    Xs = X[src] / np.linalg.norm(X[src], axis=1, keepdims=True)
    Xd = X[dst] / np.linalg.norm(X[dst], axis=1, keepdims=True)
    within = np.einsum("ij,ij->i", Xs, Xd) >= min_cos
    group_of = np.full(args.n, -1, np.int64)
    for g, members in enumerate(groups.groups):
        group_of[members] = g
    same = (group_of[src] == group_of[dst]) & (group_of[src] >= 0)
    full = {
        "n": args.n,
        "search": neighbors.resolve_search("auto", args.n),
        "seconds": full_s,
        "groups": len(groups.groups),
        "kept": int(len(groups.keep)),
        "planted_within_threshold": int(within.sum()),
        "planted_recall": float(same[within].mean()) if within.any() else None,
        "exact_s_extrapolated": exact_s * (args.n / m) ** 2,
    }
    full["speedup_vs_exact_extrapolated"] = full["exact_s_extrapolated"] / full_s
    print(json.dumps(full), flush=True)
    res = {
        "machine": {"cpus": os.cpu_count(), "faiss": faiss.__version__, "note": args.note},
        "command": " ".join(sys.argv),
        "params": {
            "d": args.d,
            "threshold": args.threshold,
            "dup_fraction": args.dup_fraction,
            "nprobe": args.nprobe,
            "cells_per_sqrt_n": neighbors.IVF_CELLS_PER_SQRT,
            "candidate_dims": neighbors.CANDIDATE_DIMS,
            "kmeans_iterations": neighbors.KMEANS_ITERATIONS,
            "uptime_before": UPTIME,
        },
        "recall_subset": small,
        "full": full,
    }
    res["machine"]["uptime_after"] = os.popen("uptime").read().strip()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
