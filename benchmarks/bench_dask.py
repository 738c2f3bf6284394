"""Dask backend vs the in-process engine, same machine, same draws, same workers.

For each size ``N`` (synthetic 512-d embeddings: 20 Gaussian centres drawn from ``N(0, 2^2)`` per
dimension, each row = a random centre + ``N(0, 1)`` noise, float32, seed 0), the same points are
scored twice and the integers compared:

- **in-process**: the compiled engine prepared once, the points split over ``--workers`` forked
  processes (``zcore_scores(..., use_multiprocessing=True)``);
- **Dask**: a ``LocalCluster`` of ``--workers`` single-threaded processes (started before the
  clock: ``cluster_s`` is reported apart), one row shard per worker
  (``zcore_scores(..., backend="dask")``).

Reported per size: seconds for each (set-up, scoring), the overhead ratio, where the Dask time
went (shard compute, driver waiting, driver merging), candidates sent per point, and from the
measured per-shard cost a projection for 24M samples on 8 and 32 workers (see ``--project``).

Examples
--------
``python benchmarks/bench_dask.py --n 50000 --points 500000``
``python benchmarks/bench_dask.py --n 50000 1280000 --points 500000 100000``
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zcore.core.dask_backend import accumulate_dask  # noqa: E402
from zcore.core.draws import draw_init, draw_points, embedding_stats  # noqa: E402
from zcore.core.engine_numba import warmup  # noqa: E402
from zcore.core.engines import ENGINES  # noqa: E402
from zcore.core.law import fixed_point_shift  # noqa: E402
from zcore.core.parallel import accumulate_parallel  # noqa: E402

CLUSTERS = 20
K = 1000
EXP = 4.0


def make_embeddings(n, d, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(CLUSTERS, d)).astype(np.float32)
    X = np.empty((n, d), np.float32)
    for start in range(0, n, 50_000):
        b = min(50_000, n - start)
        X[start : start + b] = centres[rng.integers(0, CLUSTERS, b)]
        X[start : start + b] += rng.standard_normal((b, d), dtype=np.float32)
    return X


def run_size(n, points, d, workers, client):
    X = make_embeddings(n, d)
    rng = np.random.default_rng(1)
    draw_init(rng, n)
    dims, coords = draw_points(rng, embedding_stats(X), points, 2)
    k, shift = min(K, n - 2), fixed_point_shift(points)
    params = {"k": k, "exp": EXP, "shift": shift}

    t0 = time.perf_counter()
    engine = ENGINES["numba"].prepare(X)
    t1 = time.perf_counter()
    if workers > 1:
        cov_l, pen_l = accumulate_parallel(engine, dims, coords, num_workers=workers, params=params)
    else:
        cov_l = np.zeros(n, np.int64)
        pen_l = np.zeros(n, np.int64)
        engine.accumulate(dims, coords, cov_l, pen_l, **params)
    t2 = time.perf_counter()
    del engine

    stats = {}
    cov_d = np.zeros(n, np.int64)
    pen_d = np.zeros(n, np.int64)
    t3 = time.perf_counter()
    accumulate_dask(X, dims, coords, cov_d, pen_d, client=client, stats=stats, **params)
    t4 = time.perf_counter()
    same = bool(np.array_equal(cov_l, cov_d) and np.array_equal(pen_l, pen_d))
    local = {"prepare_s": t1 - t0, "score_s": t2 - t1, "total_s": t2 - t0}
    dask = {**stats, "total_s": t4 - t3, "score_s": t4 - t3 - stats["setup_s"]}
    return {
        "n": n,
        "d": d,
        "points": points,
        "k": k,
        "workers": workers,
        "identical": same,
        "local": local,
        "dask": dask,
        "overhead": dask["total_s"] / local["total_s"],
        "overhead_scoring": dask["score_s"] / local["score_s"],
    }


def project(rows, n_target, workers_list, points, d):
    """Per-shard compute per point c(n_s) = a * n_s**b fitted through the measured sizes;
    compute = points * c(N / W) (shards in parallel), driver = points * merge cost per point,
    set-up = measured set-up seconds per shard row * N / W."""
    xs = [r["n"] / r["workers"] for r in rows]
    cs = [np.mean(r["dask"]["shard_busy_s"]) / r["points"] for r in rows]
    if len(rows) >= 2:
        b = math.log(cs[-1] / cs[0]) / math.log(xs[-1] / xs[0])
    else:
        b = 0.63  # the in-process engine's measured cost exponent
    a = cs[-1] / xs[-1] ** b
    big = rows[-1]
    merge_pp = big["dask"]["merge_s"] / big["points"]
    setup_per_row = big["dask"]["setup_s"] / (big["n"] / big["workers"])
    out = []
    for w in workers_list:
        ns = n_target / w
        compute = points * a * ns**b
        driver = points * merge_pp
        out.append(
            {
                "workers": w,
                "rows_per_shard": ns,
                "shard_compute_s": compute,
                "driver_merge_s": driver,
                "setup_s": setup_per_row * ns,
                "total_s": setup_per_row * ns + max(compute, driver),
                "worker_memory_gb": ns * d * 13 / 1e9,
                "driver_traffic_gb": points * big["dask"]["candidates_per_point"] * 16 / 1e9,
            }
        )
    return {"exponent": b, "per_point_s_at_shard": list(zip(xs, cs)), "rows": out}


def to_markdown(res):
    lines = [
        "# Dask backend vs the in-process engine",
        "",
        f"Machine: {res['machine']}. Same draws, same {res['runs'][0]['workers']} workers "
        "(forked processes vs a LocalCluster of single-threaded processes), k = "
        f"{K}, D = {res['runs'][0]['d']}. Generated by `python benchmarks/bench_dask.py "
        f"{res['argv']}`.",
        "",
        "| N | points | in-process: prepare + score | Dask: set-up + score | overhead | "
        "overhead (scoring only) | identical |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in res["runs"]:
        lo, da = r["local"], r["dask"]
        lines.append(
            f"| {r['n']:,} | {r['points']:,} | {lo['prepare_s']:.1f} + {lo['score_s']:.1f} s | "
            f"{da['setup_s']:.1f} + {da['score_s']:.1f} s | {r['overhead']:.2f}x | "
            f"{r['overhead_scoring']:.2f}x | {'yes' if r['identical'] else 'NO'} |"
        )
    lines += [
        "",
        "Where the Dask time went (seconds; the LocalCluster start is not counted above):",
        "",
        "| N | cluster start | set-up (send + prepare + sort shards) | shard compute (mean) | "
        "driver waiting | driver merging | batches x points | candidates per point |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        da = r["dask"]
        lines.append(
            f"| {r['n']:,} | {da['cluster_s']:.1f} | {da['setup_s']:.1f} | "
            f"{np.mean(da['shard_busy_s']):.1f} | {da['wait_s']:.1f} | {da['merge_s']:.1f} | "
            f"{da['batches']} x {da['batch_points']:,} | {da['candidates_per_point']:.0f} |"
        )
    p = res["projection"]
    lines += [
        "",
        f"## Projection: {p['n']:,} samples, {p['points']:,} points (the default cap), on paper",
        "",
        f"Per-shard compute per point fitted as a * rows^b through the measured shards (b = "
        f"{p['exponent']:.2f}); driver merge cost per point and set-up per row as measured at the "
        "largest size. Shards run in parallel; the driver merges while they compute.",
        "",
        "| workers | rows per shard | set-up | shard compute | driver merge | total | "
        "memory per worker | traffic to the driver |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in p["rows"]:
        lines.append(
            f"| {row['workers']} | {row['rows_per_shard']:,.0f} | {row['setup_s'] / 60:.1f} min | "
            f"{row['shard_compute_s'] / 60:.1f} min | {row['driver_merge_s'] / 60:.1f} min | "
            f"{row['total_s'] / 60:.1f} min | {row['worker_memory_gb']:.1f} GB | "
            f"{row['driver_traffic_gb']:.0f} GB |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    import distributed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50_000])
    parser.add_argument("--points", type=int, nargs="+", default=None, help="per N")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--project", type=int, default=24_000_000)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "dask.md"))
    args = parser.parse_args(argv)
    points = args.points or [min(1_000_000, 10 * n) for n in args.n]
    warmup()
    runs = []
    with (
        distributed.LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            dashboard_address=None,
            memory_limit=0,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for n, p in zip(args.n, points):
            r = run_size(n, p, args.d, args.workers, client)
            print(json.dumps(r, default=float), flush=True)
            runs.append(r)
    res = {
        "machine": f"{platform.node() or 'vm'}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
        "runs": runs,
        "projection": {
            "n": args.project,
            "points": 1_000_000,
            **project(runs, args.project, [8, 32], 1_000_000, args.d),
        },
    }
    md = to_markdown(res)
    print(md)
    with open(args.out, "w") as f:
        f.write(md)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(res, f, indent=1, default=float)


if __name__ == "__main__":
    main()
