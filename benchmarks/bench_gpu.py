"""The torch engine on a GPU: identical integers to the CPU engine, time, and ratios measured in the
same run against a straightforward dense kernel and the memory-traffic floor.

Needs torch (with CUDA for the real figures; numba for a fast CPU check, else the numpy engine
checks); no FiftyOne. Synthetic 512-d embeddings (20 Gaussian centres drawn from ``N(0, 2^2)``
per dimension, each row = a random centre + ``N(0, 1)`` noise, float32, seed 0, as in
``bench_dask.py``), ``k = 1000``, ``sample_dim = 2``, ``redund_exp = 4``.

For each case ``N:points:baseline_points:check_points`` on the same draws:

- **engine**: the torch engine (:func:`zcore.core.engine_torch.prepare_torch`, then one
  ``accumulate`` of all points; the preparation, columns and sorted copies on the device, timed
  apart);
- **dense**: the straightforward batched torch kernel of the same law (dense float64 distances
  over all ``N`` samples per point, ``argmin``, ``topk``, fixed-point penalties with
  ``index_add_``; no tie rule), on the first ``baseline_points`` points: the same-run baseline,
  compared per million points (``speedup_vs_dense``);
- **floor**: two passes over the point's two float32 columns of ``N`` values per point at the
  device's copy bandwidth measured in the same run (``ratio_to_floor`` = engine time / floor;
  below 1 means the windowed engine reads less than the dense floor);
- **identical**: the engine's integers on the first ``check_points`` points against the CPU engine
  (``auto``: compiled numba when installed, in one process) on the same points.

On a machine with a GPU (about 3 minutes on an H200, most of it making the 1.28M x 512 matrix,
the dense baseline and the CPU check; an estimate: not yet run there), after the engine's tests on
the GPU (``pytest tests/test_engines.py -k windowed``, a few seconds)::

    python benchmarks/bench_gpu.py            # writes benchmarks/results/gpu.json
    python benchmarks/bench_gpu.py --quick    # smaller baseline and check, same engine figures

and on the CPU, to try the script itself (the same code path; no GPU meaning)::

    python benchmarks/bench_gpu.py --device cpu --cases 20000:3000:300:300 \\
        --out benchmarks/results/gpu_cpu_smoke.json
"""

import argparse
import json
import os
import platform
import subprocess
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
SAMPLE_DIM = 2
CASES = ["50000:500000:100000:20000", "1280000:1000000:20000:1000"]
QUICK_CASES = ["50000:500000:50000:5000", "1280000:1000000:5000:300"]


def sync(torch, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def dense_kernel(torch, XT, dims, coords, coverage, penalty, *, k, exp, shift, device):
    """The straightforward batched kernel: dense float64 L1 distances over all N per point."""
    n = XT.shape[1]
    dims_t = torch.from_numpy(dims.astype(np.int64)).to(device)
    coords_t = torch.from_numpy(coords).to(device)
    cov = torch.zeros(n, dtype=torch.int64, device=device)
    pen = torch.zeros(n, dtype=torch.int64, device=device)
    if torch.device(device).type == "cuda":
        budget = min(8 << 30, torch.cuda.mem_get_info()[0] // 4)
    else:
        budget = 256 << 20
    batch = max(1, min(4096, budget // (n * (4 * SAMPLE_DIM + 32))))
    scale = float(np.ldexp(1.0, shift))
    for b0 in range(0, len(dims), batch):
        d_b, q_b = dims_t[b0 : b0 + batch], coords_t[b0 : b0 + batch]
        m = d_b.shape[0]
        cols = XT[d_b.reshape(-1)].reshape(m, SAMPLE_DIM, n).double()
        dist = (cols - q_b[:, :, None]).abs().sum(dim=1)
        win = dist.argmin(dim=1)
        cov.index_add_(0, win, torch.ones_like(win))
        center = cols[torch.arange(m, device=device), :, win]
        dist = (cols - center[:, :, None]).abs().sum(dim=1)
        dist[torch.arange(m, device=device), win] = torch.inf
        nd, nn = torch.topk(dist, k, dim=1, largest=False, sorted=True)
        w = (nd[:, :1] / nd.clamp(min=1e-300)) ** exp
        w = torch.where(
            nd[:, :1] == 0, (nd == 0).double() * (torch.arange(k, device=device) == 0).double(), w
        )
        fixed = torch.round(w / w.sum(dim=1, keepdim=True) * scale).to(torch.int64)
        pen.index_add_(0, nn.reshape(-1), fixed.reshape(-1))
    coverage += cov.cpu().numpy()
    penalty += pen.cpu().numpy()


def device_bandwidth(torch, device, reps=10):
    """Bytes per second of a device-to-device copy (read + write): the memory-traffic yardstick."""
    nbytes = (1 << 27) if device == "cpu" else (1 << 30)
    x = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    sync(torch, device)
    t0 = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    sync(torch, device)
    return 2 * nbytes * reps / (time.perf_counter() - t0)


def zeros(n):
    return np.zeros(n, np.int64), np.zeros(n, np.int64)


def run_case(torch, n, points, base_points, check, d, device, bandwidth):
    from zcore.core.engine_torch import prepare_torch
    from zcore.core.engines import get_engine

    t0 = time.perf_counter()
    X = make_embeddings(n, d)
    rng = np.random.default_rng(1)
    draw_init(rng, n)
    dims, coords = draw_points(rng, embedding_stats(X), points, SAMPLE_DIM)
    make_s = time.perf_counter() - t0
    params = {"k": min(K, n - 2), "exp": 4.0, "shift": fixed_point_shift(points)}

    # the engine: preparation apart, a small warm-up call, then all points
    sync(torch, device)
    t0 = time.perf_counter()
    prepared = prepare_torch(X, device=device)
    sync(torch, device)
    prepare_s = time.perf_counter() - t0
    prepared.accumulate(X, dims[:64], coords[:64], *zeros(n), **params)
    sync(torch, device)
    cov_e, pen_e = zeros(n)
    t0 = time.perf_counter()
    prepared.accumulate(X, dims, coords, cov_e, pen_e, **params)
    sync(torch, device)
    engine_s = time.perf_counter() - t0

    # the dense baseline on a prefix (warm-up first), with the engine on the same prefix
    dense_kernel(torch, prepared.XT, dims[:8], coords[:8], *zeros(n), device=device, **params)
    sync(torch, device)
    cov_d, pen_d = zeros(n)
    t0 = time.perf_counter()
    dense_kernel(
        torch, prepared.XT, dims[:base_points], coords[:base_points], cov_d, pen_d,
        device=device, **params,
    )  # fmt: skip
    sync(torch, device)
    dense_s = time.perf_counter() - t0
    cov_p, pen_p = zeros(n)
    t0 = time.perf_counter()
    prepared.accumulate(X, dims[:base_points], coords[:base_points], cov_p, pen_p, **params)
    sync(torch, device)
    engine_prefix_s = time.perf_counter() - t0

    # exactness on a prefix against the CPU engine (one process)
    cov_g, pen_g = zeros(n)
    prepared.accumulate(X, dims[:check], coords[:check], cov_g, pen_g, **params)
    cpu = get_engine("auto")
    cpu.load()
    t0 = time.perf_counter()
    cpu_prepared = cpu.prepare(X)
    cov_c, pen_c = zeros(n)
    cpu_prepared.accumulate(dims[:check], coords[:check], cov_c, pen_c, **params)
    cpu_s = time.perf_counter() - t0

    floor_s = 2 * SAMPLE_DIM * 4 * n * points / bandwidth
    per_m = 1e6 / points
    return {
        "n": n,
        "d": d,
        "k": params["k"],
        "points": points,
        "make_data_s": make_s,
        "prepare_s": prepare_s,
        "engine_s": engine_s,
        "engine_s_per_million_points": engine_s * per_m,
        "points_per_s": points / engine_s,
        "floor_s": floor_s,
        "ratio_to_floor": engine_s / floor_s,
        "dense_points": base_points,
        "dense_s": dense_s,
        "dense_s_per_million_points": dense_s * 1e6 / base_points,
        "engine_s_same_points": engine_prefix_s,
        "speedup_vs_dense": dense_s / engine_prefix_s,
        "dense_identical": bool(np.array_equal(cov_d, cov_p) and np.array_equal(pen_d, pen_p)),
        "checked_points": check,
        "cpu_engine": cpu.name,
        "cpu_s_checked_with_prepare": cpu_s,
        "identical": bool(np.array_equal(cov_g, cov_c) and np.array_equal(pen_g, pen_c)),
    }


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", help="N:points:baseline_points:check_points (default: see --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller baseline and check")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--device", default="cuda", help="torch device ('cpu' to try it here)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu.json"))
    args = parser.parse_args(argv)
    cases = args.cases or (QUICK_CASES if args.quick else CASES)
    on_gpu = torch.device(args.device).type == "cuda"
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    res = {
        "device": torch.cuda.get_device_name(args.device) if on_gpu else "cpu (no GPU)",
        "note": None if on_gpu else "CPU torch: proves the script and the integers, no GPU timing",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "commit": commit,
        "command": " ".join(["python", "benchmarks/bench_gpu.py", *(argv or sys.argv[1:])]),
        "runs": [],
    }
    bandwidth = device_bandwidth(torch, args.device)
    res["bandwidth_gbs"] = bandwidth / 1e9
    for case in cases:
        n, points, base_points, check = (int(v) for v in case.split(":"))
        r = run_case(torch, n, points, base_points, check, args.d, args.device, bandwidth)
        print(json.dumps(r), flush=True)
        res["runs"].append(r)
    res["load_average_end"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
