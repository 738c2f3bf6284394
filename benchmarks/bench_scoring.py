"""Benchmark of the scoring engines against the straightforward implementation.

Each configuration runs in its own subprocess (so its peak RSS is its own). In that process:

1. synthetic embeddings: a Gaussian mixture, float32, ``N x D``: 20 cluster centres drawn from
   ``N(0, 2^2)`` per dimension, each sample = a uniformly chosen centre + ``N(0, 1)`` noise per
   dimension (generated in chunks, so no float64 copy of the matrix is ever made);
2. the draws of the package (``embedding_stats``, ``draw_init``, ``draw_points``) for
   ``n_samples = min(max_points, points_per_sample * N)`` points, sample_dim 2;
3. the engine under test over all the points (one process, or ``accumulate_parallel`` with
   ``--workers`` forked workers), with ``k = min(1000, N - 2)`` and ``exp = 4``: wall time and
   peak memory (``ru_maxrss`` of the process, and for workers the sampled peak of the summed PSS
   of the process tree, which counts shared pages once);
4. the baseline, :func:`baseline_accumulate` (a frozen copy of the straightforward
   ``zcore.core.law.accumulate_numpy``: per point an L1 distance over all N samples, then
   ``argpartition`` over N), on the SAME draws: on all points when that fits in
   ``--baseline-seconds``, else on the first points until that time is spent, extrapolated per
   point to all points (the table marks it ``~``); the engine's integers on that subset are
   checked to be identical to the baseline's.

Examples
--------
``python benchmarks/bench_scoring.py --n 10000 20000 50000 --engine numba numba-windowed``
``python benchmarks/bench_scoring.py --n 1280000 --workers 2 --baseline-seconds 60``
"""

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def baseline_accumulate(X, dims, coords, coverage, penalty, *, k, exp, shift):
    """The straightforward implementation (a frozen copy of ``accumulate_numpy``): per point an
    L1 distance over all N samples for coverage, then ``argpartition`` over N for redundancy."""
    from zcore.core.law import penalty_weights, to_fixed

    n = X.shape[0]
    one = np.int64(1) << shift
    for p in range(len(dims)):
        cols = X[:, dims[p]].astype(np.float64)
        dist = np.abs(cols[:, 0] - coords[p, 0])
        for j in range(1, cols.shape[1]):
            dist += np.abs(cols[:, j] - coords[p, j])
        c = int(np.argmin(dist))
        coverage[c] += 1
        center = cols[c].copy()
        dist = np.abs(cols[:, 0] - center[0])
        for j in range(1, cols.shape[1]):
            dist += np.abs(cols[:, j] - center[j])
        dist[c] = np.inf
        if k < n - 1:
            part = np.argpartition(dist, k - 1)[:k]
            t = dist[part].max()
            below = np.flatnonzero(dist < t)
            idx = np.concatenate([below, np.flatnonzero(dist == t)[: k - below.size]])
        else:
            idx = np.flatnonzero(np.isfinite(dist))
        idx = idx[np.lexsort((idx, dist[idx]))]
        nd = dist[idx]
        if nd[0] == 0.0:
            penalty[idx[0]] += one
        else:
            penalty[idx] += to_fixed(penalty_weights(nd, exp), shift)


def make_embeddings(n, d, seed, clusters=20):
    """Gaussian mixture, float32, generated in chunks of rows."""
    rng = np.random.default_rng(seed)
    centers = (2.0 * rng.standard_normal((clusters, d))).astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    chunk = max(1, (1 << 24) // d)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        X[start : start + m] = rng.standard_normal((m, d), dtype=np.float32)
        X[start : start + m] += centers[rng.integers(0, clusters, m)]
    return X


class _TreeMemory:
    """Peak of the summed PSS (or RSS without PSS) of this process and its children, sampled;
    children whose process name contains one of ``skip`` are left out."""

    def __init__(self, every=0.25, skip=()):
        import psutil

        self.psutil = psutil
        self.every = every
        self.skip = tuple(skip)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self):
        me = self.psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                if any(name in proc.name() for name in self.skip):
                    continue
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (self.psutil.Error, OSError):
                pass
        self.peak = max(self.peak, total)

    def _loop(self):
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _max_rss_bytes(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss * 1024  # Linux: kilobytes


def run_config(n, d, points_per_sample, max_points, workers, engine_name, baseline_seconds, seed):
    """One configuration, in this process; returns a dict of results."""
    from zcore.core.draws import draw_init, draw_points, embedding_stats
    from zcore.core.engines import get_engine
    from zcore.core.law import fixed_point_shift
    from zcore.core.parallel import accumulate_parallel
    from zcore.core.validation import check_embeddings

    knobs = None
    if engine_name in ("numba-windowed", "numba-dense"):  # one compiled kernel at every N
        from zcore.core.engine_numba import NumbaKnobs

        knobs = NumbaKnobs(dense_max_n=0 if engine_name == "numba-windowed" else 2**62)
        engine = get_engine("numba").load()
    else:
        engine = get_engine(engine_name).load()  # compiles / loads the numba cache before timing
    X = check_embeddings(make_embeddings(n, d, seed))
    n_points = int(min(max_points, points_per_sample * n))
    rng = np.random.default_rng(seed)
    stats = embedding_stats(X)
    draw_init(rng, n)
    dims, coords = draw_points(rng, stats, n_points, 2)
    params = {"k": min(1000, n - 2), "exp": 4.0, "shift": fixed_point_shift(n_points)}

    with _TreeMemory() as tree:
        start = time.perf_counter()
        # As scoring wires it: per-matrix preparation once (in the parent, shared by the workers).
        prepared = engine.prepare(X, knobs=knobs)
        if workers > 1:
            coverage, penalty = accumulate_parallel(
                prepared, dims, coords, num_workers=workers, params=params
            )
        else:
            coverage = np.zeros(n, np.int64)
            penalty = np.zeros(n, np.int64)
            prepared.accumulate(dims, coords, coverage, penalty, **params)
        engine_s = time.perf_counter() - start
    peak_self = _max_rss_bytes()
    peak_children = _max_rss_bytes(resource.RUSAGE_CHILDREN)
    del coverage, penalty

    # Baseline on the same draws: all points, or a prefix extrapolated per point.
    base_cov = np.zeros(n, np.int64)
    base_pen = np.zeros(n, np.int64)
    start = time.perf_counter()
    done = 0
    step = 1
    while done < n_points and (time.perf_counter() - start < baseline_seconds or done < 10):
        hi = min(n_points, done + step)
        baseline_accumulate(X, dims[done:hi], coords[done:hi], base_cov, base_pen, **params)
        done = hi
        step = min(2 * step, 256)
    base_s = time.perf_counter() - start
    base_total = base_s / done * n_points

    # The fast engine on the baseline's points: identical integers?
    sub_cov = np.zeros(n, np.int64)
    sub_pen = np.zeros(n, np.int64)
    prepared.accumulate(dims[:done], coords[:done], sub_cov, sub_pen, **params)
    del prepared
    exact = bool(np.array_equal(sub_cov, base_cov) and np.array_equal(sub_pen, base_pen))

    return {
        "n": n,
        "d": d,
        "points": n_points,
        "engine": engine_name,
        "workers": workers,
        "engine_s": engine_s,
        "baseline_s": base_total,
        "baseline_points": done,
        "baseline_extrapolated": done < n_points,
        "ratio": base_total / engine_s,
        "peak_rss_mb": peak_self / 2**20,
        "peak_child_rss_mb": peak_children / 2**20,
        "tree_pss_mb": tree.peak / 2**20,
        "x_mb": X.nbytes / 2**20,
        "exact": exact,
    }


def _format_table(rows):
    head = (
        f"{'N':>9} {'D':>4} {'points':>9} {'engine':>14} {'wrk':>3} {'baseline s':>12} "
        f"{'engine s':>9} {'ratio':>7} {'peak RSS MB':>11} {'tree PSS MB':>11} "
        f"{'X MB':>7} {'exact':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        base = f"{'~' if r['baseline_extrapolated'] else ''}{r['baseline_s']:.1f}"
        lines.append(
            f"{r['n']:>9} {r['d']:>4} {r['points']:>9} {r['engine']:>14} {r['workers']:>3} "
            f"{base:>12} {r['engine_s']:>9.1f} {r['ratio']:>7.1f} {r['peak_rss_mb']:>11.0f} "
            f"{r['tree_pss_mb']:>11.0f} {r['x_mb']:>7.0f} {'yes' if r['exact'] else 'NO':>5}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[10_000, 20_000, 50_000],
        help="numbers of samples (one configuration each)",
    )
    parser.add_argument("--d", type=int, default=512, help="embedding dimension")
    parser.add_argument(
        "--points-per-sample",
        type=float,
        default=10.0,
        help="sampling points per sample (n_samples = this * N, capped)",
    )
    parser.add_argument(
        "--max-points", type=int, default=1_000_000, help="cap on the number of sampling points"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="worker processes (1 = one process; several values = several runs)",
    )
    parser.add_argument(
        "--engine",
        nargs="+",
        default=["numba"],
        help="engines under test (numba, numba-windowed / numba-dense = one of its kernels at every "
        "N, torch...)",
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=30.0,
        help="time budget of the baseline per configuration (then extrapolated)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--note", default="", help="stored with the JSON (e.g. machine load)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child:
        cfg = json.loads(args._child)
        print(json.dumps(run_config(**cfg)))
        return

    print(
        "Synthetic embeddings: Gaussian mixture (20 centres ~ N(0, 4) per dim, + N(0, 1) noise), "
        "float32; sample_dim=2, k=min(1000, N-2), exp=4.\n"
        "Baseline = straightforward numpy (copy of accumulate_numpy) on the same draws; '~' = timed on a prefix "
        "of the points and extrapolated per point. 'exact' = identical integers on that prefix.\n"
        "peak RSS = ru_maxrss of the configuration's process (includes X); tree PSS = sampled peak "
        "of the summed PSS of that process and its workers.",
        flush=True,
    )
    rows = []
    for n, workers, engine in itertools.product(args.n, args.workers, args.engine):
        cfg = {
            "n": n,
            "d": args.d,
            "points_per_sample": args.points_per_sample,
            "max_points": args.max_points,
            "workers": workers,
            "engine_name": engine,
            "baseline_seconds": args.baseline_seconds,
            "seed": args.seed,
        }
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(cfg)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"N={n} workers={workers} failed:\n{out.stderr}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(_format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_format_table(rows))
    if args.json:
        meta = {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "note": args.note,
            "command": " ".join(sys.argv),
        }
        with open(args.json, "w") as fh:
            json.dump({"machine": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
