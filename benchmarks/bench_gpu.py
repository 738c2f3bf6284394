"""The torch engine on a GPU against the compiled CPU engine: identical integers, and time.

Needs torch with CUDA (and numba for the comparison); no FiftyOne. Synthetic 512-d embeddings
(20 Gaussian centres drawn from ``N(0, 2^2)`` per dimension, each row = a random centre +
``N(0, 1)`` noise, float32, seed 0, as in ``bench_dask.py``), ``k = 1000``, ``sample_dim = 2``.

For each case ``N:points[:check]`` the same draws are scored by the torch engine on ``cuda`` and,
on the first ``check`` points, by the compiled engine in one CPU process; the integers of those
points must be identical. Reported: GPU seconds (and per million points), CPU seconds for the
checked points, the GPU's points per second, and the ratio to the **memory-traffic floor**: two
passes over the point's ``sample_dim`` float32 columns of ``N`` values per point, at the device's
copy bandwidth measured in the same run (``bandwidth_gbs``: a large device-to-device copy).

One short script for a machine with a GPU (about 3 minutes on an H200, most of it the CPU check
and the CPU engine's preparation at 1.28M)::

    python benchmarks/bench_gpu.py

and on the CPU, to try the script itself (same code path, no timing meaning)::

    python benchmarks/bench_gpu.py --device cpu --cases 5000:2000:500 --out /tmp/gpu_cpu.json
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_dask import make_embeddings  # noqa: E402

from zcore.core.draws import draw_init, draw_points, embedding_stats  # noqa: E402
from zcore.core.law import fixed_point_shift  # noqa: E402

K = 1000


def run_case(n, points, check, d, device="cuda"):
    import torch

    from zcore.core.engine_numba import accumulate_numba, warmup
    from zcore.core.engine_torch import accumulate_torch

    X = make_embeddings(n, d)
    rng = np.random.default_rng(1)
    draw_init(rng, n)
    dims, coords = draw_points(rng, embedding_stats(X), points, 2)
    params = {"k": min(K, n - 2), "exp": 4.0, "shift": fixed_point_shift(points)}

    # GPU: all points (a first small call warms CUDA up, not timed)
    cov_w, pen_w = np.zeros(n, np.int64), np.zeros(n, np.int64)
    accumulate_torch(X, dims[:64], coords[:64], cov_w, pen_w, device=device, **params)
    if device != "cpu":
        torch.cuda.synchronize()
    cov_g, pen_g = np.zeros(n, np.int64), np.zeros(n, np.int64)
    t0 = time.perf_counter()
    accumulate_torch(X, dims, coords, cov_g, pen_g, device=device, **params)
    if device != "cpu":
        torch.cuda.synchronize()
    gpu_s = time.perf_counter() - t0

    # the checked prefix, on the GPU again and on the CPU (compiled engine, one process)
    cov_gc, pen_gc = np.zeros(n, np.int64), np.zeros(n, np.int64)
    accumulate_torch(X, dims[:check], coords[:check], cov_gc, pen_gc, device=device, **params)
    warmup()
    cov_c, pen_c = np.zeros(n, np.int64), np.zeros(n, np.int64)
    t0 = time.perf_counter()
    accumulate_numba(X, dims[:check], coords[:check], cov_c, pen_c, **params)
    cpu_s = time.perf_counter() - t0
    return {
        "n": n,
        "d": d,
        "points": points,
        "gpu_s": gpu_s,
        "gpu_s_per_million_points": gpu_s * 1e6 / points,
        "checked_points": check,
        "cpu_numba_s_checked": cpu_s,
        "identical": bool(np.array_equal(cov_gc, cov_c) and np.array_equal(pen_gc, pen_c)),
        "points_per_s_gpu": points / gpu_s,
        "floor_bytes": 2 * 2 * n * 4 * points,
    }


def device_bandwidth(device, nbytes=1 << 30, reps=10):
    """Bytes per second of a device-to-device copy (read + write), the memory-traffic yardstick."""
    import torch

    if device == "cpu":
        nbytes = 1 << 27
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * nbytes * reps / (time.perf_counter() - t0)


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=["50000:500000:20000", "1280000:1000000:1000"]
    )
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--device", default="cuda", help="torch device ('cpu' to try it here)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu.json"))
    args = parser.parse_args(argv)
    res = {
        "gpu": torch.cuda.get_device_name(0) if args.device != "cpu" else "none (cpu)",
        "torch": torch.__version__,
        "cpu": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "runs": [],
    }
    bandwidth = device_bandwidth(args.device)
    res["bandwidth_gbs"] = bandwidth / 1e9
    for case in args.cases:
        n, points, check = (int(v) for v in case.split(":"))
        r = run_case(n, points, check, args.d, args.device)
        r["floor_s"] = r.pop("floor_bytes") / bandwidth
        r["ratio_to_floor"] = r["gpu_s"] / r["floor_s"]
        print(json.dumps(r), flush=True)
        res["runs"].append(r)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
