#!/usr/bin/env python
"""How long does each selection method take on a large pool? (numpy + scikit-learn only)

Synthetic embeddings: ``N`` x ``D`` float32 rows (default 1,000,000 x 512) drawn as a Gaussian
mixture — 1,000 centres ~ N(0, I), each row = a random centre + N(0, 0.5^2 I) noise — generated in
chunks with ``numpy.random.default_rng(seed)``; the scores are U(0, 1) draws (what ZCore scores
look like: a [0, 1] value per row). Then times every selection method of :data:`METHODS`
(``zcore.core.methods.select(method, n_keep, scores=..., embeddings=..., seed=0)`` with the
method's defaults) at 90 % pruning, and checks each result. ``target`` gets a target set of
:data:`TARGET_N` pool rows drawn at random (seed 1), as when the target is a saved view.

Usage::

    python benchmarks/bench_selection.py --json benchmarks/results/selection.json  # 1M x 512
    python benchmarks/bench_selection.py --n 100000 --d 128   # smaller
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


def synthetic(n, d, seed=0, n_centers=1000, noise=0.5, chunk=100_000):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, d), dtype=np.float32)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = rng.standard_normal((m, d), dtype=np.float32)
        block *= noise
        block += centers[rng.integers(n_centers, size=m)]
        X[start : start + m] = block
    return X, rng.random(n)


#: rows of the target set given to ``target`` (drawn from the pool)
TARGET_N = 10_000


def target_options(X):
    """Options of ``target``: :data:`TARGET_N` random rows of ``X`` (seed 1) as the target set."""
    rows = np.random.default_rng(1).choice(len(X), size=min(TARGET_N, len(X)), replace=False)
    return {"target_embeddings": X[np.sort(rows)]}


#: benchmark name -> (selection method, options or a function of the embeddings giving them):
#: every registered selection method, the default ("auto") included
METHODS = {
    "auto (default)": ("auto", {}),
    "topk": ("topk", {}),
    "cluster_balanced": ("cluster_balanced", {}),
    "stratified": ("stratified", {}),
    "hierarchical_kmeans": ("hierarchical_kmeans", {}),
    "typiclust": ("typiclust", {}),
    "semdedup": ("semdedup", {}),
    "prototypicality": ("prototypicality", {}),
    "target": ("target", target_options),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--prune", type=float, default=90.0, help="prune rate in %% (default 90)")
    p.add_argument(
        "--methods", nargs="*", default=list(METHODS), choices=list(METHODS), help="a subset"
    )
    p.add_argument("--json", default=None, help="also write the timings to this file")
    args = p.parse_args(argv)

    from zcore.core import methods as M

    t0 = time.perf_counter()
    X, scores = synthetic(args.n, args.d)
    t_gen = time.perf_counter() - t0
    n_keep = int(round((100 - args.prune) / 100 * args.n))
    rows = []
    for name in args.methods:
        method, options = METHODS[name]
        options = options(X) if callable(options) else options
        t1 = time.perf_counter()
        idx = M.select(method, n_keep, scores=scores, embeddings=X, seed=0, **options)
        t_sel = time.perf_counter() - t1
        assert len(idx) == n_keep and len(np.unique(idx)) == n_keep, name
        row = {
            "method": name,
            "select_s": round(t_sel, 1),
            "within_2_min": t_sel <= 120,
            # > 1 (this job's own threads) means other jobs shared the cores
            "load_avg_1min_after": round(os.getloadavg()[0], 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "n": args.n,
        "d": args.d,
        "n_keep": n_keep,
        "generate_s": round(t_gen, 1),
        "auto_is": M.AUTO,
        "methods": rows,
        "cpu_count": os.cpu_count(),
        "note": "2 cores shared with other jobs while measured",
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
