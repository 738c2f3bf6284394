"""Every scoring engine computes the same law: identical integers, scores equal to an oracle.

The oracle (tests/oracle.py) is written from the law (the docstring of :mod:`zcore.core.law`), point by
point, with float64 penalties; it shares only the random draws with the package. The engines
(numpy, numba in each of its modes, torch on the CPU, the parallel runner) must agree with each
other on the coverage and fixed-point penalty integers exactly, and with the oracle on the final
scores within 1e-9.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from oracle import law_components, normalise

from zcore.core.draws import draw_init, draw_points, embedding_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engine_scores(coverage, penalty, shift, init):
    return normalise(coverage - np.ldexp(penalty.astype(np.float64), -shift) + init)


# --------------------------------------------------------------------------------------------
# data


def _gaussian(rng):
    return rng.normal(size=(300, 8)).astype(np.float32)


def _integer_ties(rng):
    X = rng.integers(0, 4, size=(200, 6)).astype(np.float32)  # many equal distances
    X[60:120] = X[:60]  # duplicate rows: distance 0 to their twin
    X[:, 2] = 3.0  # a constant dimension, never sampled
    return X


def _duplicates(rng):
    return np.repeat(rng.normal(size=(12, 5)).astype(np.float32), 10, axis=0)[:117]


def _tiny(rng):
    X = rng.normal(size=(50, 4)).astype(np.float32)
    X[:, 1] = np.round(X[:, 1])  # coarse dimension: ties along it
    return X


DATASETS = {
    "gaussian": _gaussian,
    "integer_ties": _integer_ties,
    "duplicates": _duplicates,
    "tiny": _tiny,
}


def _draws(X, n_points, sample_dim, seed):
    rng = np.random.default_rng(seed)
    init = draw_init(rng, X.shape[0])
    dims, coords = draw_points(rng, embedding_stats(X), n_points, sample_dim)
    return init, dims, coords


# --------------------------------------------------------------------------------------------
# engines under test


def _numba_variants():
    from zcore.core import engine_numba

    if not engine_numba.AVAILABLE:
        return {}
    windowed = {"dense_max_n": 0}  # the windowed kernel even for these small collections
    variants = {
        "numba": {},
        # the dense scan kernel, with batches of one point and of a few points
        "numba-dense": {"dense_max_n": 10**9},
        "numba-dense-batched": {"dense_max_n": 10**9, "dense_batch_elements": 256},
        # no slack: the threshold search must hit exactly k (ties overflow to the exact selection)
        "numba-dense-exact": {"dense_max_n": 10**9, "dense_slack": 0},
        # the search gives up at once: the exact selection among an overfull threshold
        "numba-dense-overflow": {"dense_max_n": 10**9, "dense_slack": 0, "dense_max_counts": 1},
        "numba-windowed": windowed,
        "numba-sorted": {**windowed, "sort_min_points": 0},  # every point by sorted scans
        "numba-plain": {**windowed, "sort_min_points": 10**9},  # every point by plain passes
        "numba-tiled": {**windowed, "sort_min_points": 2, "memory_budget": 0},  # a dim per block
        # exact distances from the rows of X (as for a large X), or from gathered columns
        "numba-rows": {**windowed, "columns_budget": 0, "column_min_points": 10**9},
        "numba-column": {
            **windowed,
            "columns_budget": 0,
            "column_min_points": 1,
            "sort_min_points": 1,
        },
    }
    return {name: engine_numba.NumbaKnobs(**knobs) for name, knobs in variants.items()}


def _run(accumulate, X, dims, coords, k, exp, shift, **kwargs):
    n = X.shape[0]
    coverage = np.zeros(n, np.int64)
    penalty = np.zeros(n, np.int64)
    accumulate(X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, **kwargs)
    return coverage, penalty


def _run_prepared(prepared, dims, coords, k, exp, shift, **kwargs):
    n = prepared.X.shape[0]
    coverage = np.zeros(n, np.int64)
    penalty = np.zeros(n, np.int64)
    prepared.accumulate(dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, **kwargs)
    return coverage, penalty


def _all_results(X, dims, coords, k, exp, shift):
    from zcore.core.engines import ENGINES
    from zcore.core.law import accumulate_numpy

    results = {"numpy": _run(accumulate_numpy, X, dims, coords, k, exp, shift)}
    for name, knobs in _numba_variants().items():
        prepared = ENGINES["numba"].prepare(X, knobs=knobs)
        results[name] = _run_prepared(prepared, dims, coords, k, exp, shift)
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        from zcore.core.engine_torch import TorchKnobs

        def torch_engine(**knobs):
            return ENGINES["torch"].prepare(X, device="cpu", knobs=TorchKnobs(**knobs))

        results["torch"] = _run_prepared(torch_engine(), dims, coords, k, exp, shift)
        # small windows: the exactness check, its fallback and ties; one-row fallback chunks
        variants = {
            "window-1": {"batch": 13, "window": 1},
            "window-k+1": {"batch": 13, "window": k + 1},
            "window-2k+8": {"batch": 13, "window": 2 * k + 8},
            "chunked": {"batch": 13, "window": k + 1, "batch_bytes": 1},
        }
        for name, knobs in variants.items():
            results[f"torch-{name}"] = _run_prepared(
                torch_engine(**knobs), dims, coords, k, exp, shift
            )
    return results


CASES = [
    # dataset, sample_dim, k, exp
    ("gaussian", 2, 40, 4.0),
    ("gaussian", 1, 1, 4.0),
    ("gaussian", 3, 298, 2.0),
    ("gaussian", 2, 298, 7.3),
    ("integer_ties", 2, 25, 4.0),
    ("integer_ties", 1, 198, 4.0),
    ("integer_ties", 3, 1, 0.0),
    ("integer_ties", 2, 198, 1.0),
    ("duplicates", 2, 30, 4.0),
    ("duplicates", 3, 115, 4.0),
    ("duplicates", 1, 1, 4.0),
    ("tiny", 2, 48, 4.0),
    ("tiny", 3, 5, 0.5),
    ("tiny", 1, 48, 4.0),
]


@pytest.mark.parametrize("dataset,sample_dim,k,exp", CASES)
def test_engines_agree_with_each_other_and_the_oracle(dataset, sample_dim, k, exp):
    from zcore.core.law import fixed_point_shift

    seed = CASES.index((dataset, sample_dim, k, exp))
    X = DATASETS[dataset](np.random.default_rng(seed))
    assert k <= X.shape[0] - 2
    n_points = 180
    init, dims, coords = _draws(X, n_points, sample_dim, seed)
    shift = fixed_point_shift(n_points)

    results = _all_results(X, dims, coords, k, exp, shift)
    cov0, pen0 = results["numpy"]
    for name, (cov, pen) in results.items():
        np.testing.assert_array_equal(cov, cov0, err_msg=f"coverage of {name} != numpy")
        np.testing.assert_array_equal(pen, pen0, err_msg=f"penalty of {name} != numpy")

    o_cov, o_pen = law_components(X, dims, coords, k, exp)
    np.testing.assert_array_equal(cov0, o_cov)
    np.testing.assert_allclose(np.ldexp(pen0.astype(np.float64), -shift), o_pen, rtol=0, atol=1e-9)
    expected = normalise(o_cov - o_pen + init)
    np.testing.assert_allclose(engine_scores(cov0, pen0, shift, init), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "device,batch", [("cpu", 1), ("cpu", 37), ("cpu", None), ("cuda", 37), ("cuda", None)]
)
def test_torch_windowed_search_matches_numpy(device, batch):
    """Collections larger than the windows, with ties and duplicated rows: the windowed searches,
    their exactness check, the full-search fallback and the window's growth and shrinking all
    run (CPU torch, the code path of a GPU; on a GPU too when there is one)."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU here")
    from zcore.core.engine_torch import TorchKnobs
    from zcore.core.engines import ENGINES
    from zcore.core.law import accumulate_numpy, fixed_point_shift

    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 6)).astype(np.float32)
    X[:, 1] = np.round(X[:, 1] * 2)  # a coarse dimension: long runs of equal values
    X[1000:1400] = X[:400]  # duplicated rows
    X[2000:2100] = X[2100:2200] = X[2200]  # a block of 300 identical rows (ties straddle k)
    n_points = 300
    _, dims, coords = _draws(X, n_points, 2, 3)
    shift = fixed_point_shift(n_points)
    k = 40
    expected = _run(accumulate_numpy, X, dims, coords, k, 4.0, shift)
    for window in (None, k + 1, 200):
        knobs = TorchKnobs(batch=batch, window=window)
        got = _run_prepared(
            ENGINES["torch"].prepare(X, device=device, knobs=knobs), dims, coords, k, 4.0, shift
        )
        np.testing.assert_array_equal(got[0], expected[0], err_msg=f"coverage, {knobs}")
        np.testing.assert_array_equal(got[1], expected[1], err_msg=f"penalty, {knobs}")


def test_numba_engine_larger_problem_matches_numpy():
    """Enough points per dimension for the sorted scans, shrinking and retries to all run."""
    from zcore.core import engine_numba
    from zcore.core.law import accumulate_numpy, fixed_point_shift

    if not engine_numba.AVAILABLE:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(6, 6)) * 3
    X = (centers[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 6))).astype(np.float32)
    X[::7] = np.round(X[::7], 1)  # some ties
    _, dims, coords = _draws(X, 2500, 2, 5)
    shift = fixed_point_shift(len(dims))
    variants = [
        {},  # the dense kernel (a small collection)
        {"dense_max_n": 0},  # the windowed kernel
        {  # windowed, blocks of two dims, rows of X and gathered columns
            "dense_max_n": 0,
            "memory_budget": 3000 * 8 * 2,
            "columns_budget": 0,
            "column_min_points": 20,
        },
    ]
    for k in (1, 37, 400):
        expected = _run(accumulate_numpy, X, dims, coords, k, 4.0, shift)
        for knobs in variants:
            got = _run(
                engine_numba.accumulate_numba,
                X,
                dims,
                coords,
                k,
                4.0,
                shift,
                knobs=engine_numba.NumbaKnobs(**knobs),
            )
            np.testing.assert_array_equal(got[0], expected[0], err_msg=f"{knobs}")
            np.testing.assert_array_equal(got[1], expected[1], err_msg=f"{knobs}")


def _dense_datasets(rng):
    n = 2011  # not a multiple of the 16 lanes nor of the 256-sample blocks: every tail runs
    mixture = (rng.normal(size=(8, 5)) * 3)[rng.integers(0, 8, n)] + rng.normal(size=(n, 5))
    X = mixture.astype(np.float32)
    X[::9] = np.round(X[::9], 1)  # ties along the dimensions and at the k-th distance
    X[1500:1600] = X[:100]  # duplicated rows: distance 0 to a twin
    # Large values: float32 rounding of the coordinates and of the differences is far above
    # float64's, so the float32 filters lean on their error margins.
    offset = (1e6 + rng.normal(size=(n, 4)) * 4).astype(np.float32)
    huge = (rng.normal(size=(n, 3)) * 1e31).astype(np.float32)  # beyond the float32 filters
    return {"mixture": X, "offset": offset, "huge": huge}


@pytest.mark.parametrize("sample_dim", [2, 1, 3])
def test_dense_kernel_paths_match_numpy(sample_dim):
    """The dense kernel on a collection larger than its blocks and lanes, under knobs that run
    each of its paths: the float32 filters or float64 only, subsamples of every size (every
    sample, the default, a single one), an admission estimate so low that most searches fall
    back to the search over all samples, a width with no slack (ties overflow it)."""
    from zcore.core import engine_numba
    from zcore.core.law import accumulate_numpy, fixed_point_shift

    if not engine_numba.AVAILABLE:
        pytest.skip("numba not installed")
    variants = [
        {},
        {"dense_float32": False},
        {"dense_sub_stride": 1},
        {"dense_sub_stride": 5000},
        {"dense_admit": 0.3},
        {"dense_slack": 0, "dense_admit": 1.0},
        {"dense_slack": 0, "dense_max_counts": 2},
    ]
    for name, X in _dense_datasets(np.random.default_rng(11)).items():
        if sample_dim > X.shape[1]:
            continue
        _, dims, coords = _draws(X, 300, sample_dim, 4)
        shift = fixed_point_shift(len(dims))
        for k in (300, 37):
            expected = _run(accumulate_numpy, X, dims, coords, k, 4.0, shift)
            for knobs in variants:
                prepared = engine_numba.prepare(
                    X, engine_numba.NumbaKnobs(dense_max_n=10**9, **knobs)
                )
                got = _run(prepared.accumulate, X, dims, coords, k, 4.0, shift)
                np.testing.assert_array_equal(got[0], expected[0], err_msg=f"{name} {knobs}")
                np.testing.assert_array_equal(got[1], expected[1], err_msg=f"{name} {knobs}")


def test_dense_kernel_portable_compress_matches_numpy():
    """Compiled for a generic CPU (no AVX-512), the compress steps of the dense kernel are
    LLVM's portable masked stores: the same integers."""
    code = """
import numpy as np
from zcore.core import engine_numba, kernels
from zcore.core.draws import draw_points, embedding_stats
from zcore.core.law import accumulate_numpy
assert not kernels._x86_compress()
rng = np.random.default_rng(3)
X = rng.normal(size=(1013, 4)).astype(np.float32)
X[::7] = np.round(X[::7])
dims, coords = draw_points(rng, embedding_stats(X), 200, 2)
out = []
for run in (accumulate_numpy, engine_numba.prepare(X).accumulate):
    cov, pen = np.zeros(1013, np.int64), np.zeros(1013, np.int64)
    run(X, dims, coords, cov, pen, k=150, exp=4.0, shift=40)
    out.append((cov, pen))
assert (out[0][0] == out[1][0]).all() and (out[0][1] == out[1][1]).all()
print("ok")
"""
    from zcore.core import engine_numba

    if not engine_numba.AVAILABLE:
        pytest.skip("numba not installed")
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_progress_counts_every_point_once():
    from zcore.core.engines import get_engine
    from zcore.core.law import fixed_point_shift

    X = _gaussian(np.random.default_rng(1))
    _, dims, coords = _draws(X, 1000, 2, 1)
    for name in ("numpy", "numba", "torch"):
        try:
            engine = get_engine(name).load().prepare(X)
        except ImportError:
            continue
        calls = []
        _run_prepared(engine, dims, coords, 10, 4.0, fixed_point_shift(1000), progress=calls.append)
        assert sum(calls) == 1000, name
        assert all(c > 0 for c in calls), name


# --------------------------------------------------------------------------------------------
# the parallel runner


def test_parallel_numba_matches_one_process():
    from zcore.core import engine_numba
    from zcore.core.engines import ENGINES
    from zcore.core.law import accumulate_numpy, fixed_point_shift
    from zcore.core.parallel import accumulate_parallel

    if not engine_numba.AVAILABLE:
        pytest.skip("numba not installed")
    X = _integer_ties(np.random.default_rng(3))
    _, dims, coords = _draws(X, 400, 2, 3)
    params = {"k": 50, "exp": 4.0, "shift": fixed_point_shift(400)}
    expected = _run(accumulate_numpy, X, dims, coords, **params)
    # X prepared once before forking (the dense and the windowed kernels), and the numpy engine
    windowed = engine_numba.NumbaKnobs(dense_max_n=0)
    for engine in (
        ENGINES["numba"].prepare(X),
        ENGINES["numba"].prepare(X, knobs=windowed),
        ENGINES["numpy"].prepare(X),
    ):
        done = []
        cov, pen = accumulate_parallel(
            engine, dims, coords, num_workers=2, params=params, progress=done.append
        )
        np.testing.assert_array_equal(cov, expected[0])
        np.testing.assert_array_equal(pen, expected[1])
        assert sum(done) == 400


class _FailingEngine:
    def __init__(self, X):
        self.X = X

    def accumulate(self, dims, coords, coverage, penalty, **kwargs):
        raise ValueError("engine failure for the test")


class _SlowEngine(_FailingEngine):
    def accumulate(self, dims, coords, coverage, penalty, *, progress=None, **kwargs):
        progress(1)
        time.sleep(30)


def _assert_released(names):
    assert names, "the runner reported no shared blocks"
    left = [name for name in names if os.path.exists(os.path.join("/dev/shm", name.lstrip("/")))]
    assert not left, f"shared memory not released: {left}"


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_shared_memory_released_when_a_worker_fails():
    from zcore.core.parallel import accumulate_parallel

    X = _gaussian(np.random.default_rng(0))
    _, dims, coords = _draws(X, 20, 2, 0)
    names = []
    with pytest.raises(RuntimeError, match="engine failure for the test"):
        accumulate_parallel(
            _FailingEngine(X),
            dims,
            coords,
            num_workers=2,
            params={"k": 5, "exp": 4.0, "shift": 30},
            _shared_names=names,
        )
    _assert_released(names)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_shared_memory_released_on_keyboard_interrupt():
    from zcore.core.parallel import accumulate_parallel

    X = _gaussian(np.random.default_rng(0))
    _, dims, coords = _draws(X, 20, 2, 0)
    names = []

    def interrupt(n):
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        accumulate_parallel(
            _SlowEngine(X),
            dims,
            coords,
            num_workers=2,
            params={"k": 5, "exp": 4.0, "shift": 30},
            progress=interrupt,
            _shared_names=names,
        )
    assert time.monotonic() - start < 20, "the workers were not stopped"
    _assert_released(names)


# --------------------------------------------------------------------------------------------
# choosing an engine


def test_get_engine_names_and_errors():
    from zcore.core import engine_numba
    from zcore.core.config import ENGINE_CHOICES
    from zcore.core.engines import ENGINE_NAMES, ENGINES, get_engine

    assert set(ENGINE_NAMES) == {"auto", "numpy", "numba", "torch"} == set(ENGINE_CHOICES)
    assert get_engine("numpy") is ENGINES["numpy"]
    expected_auto = "numba" if engine_numba.AVAILABLE else "numpy"
    assert get_engine().name == expected_auto
    assert get_engine("AUTO").name == expected_auto
    with pytest.raises(ValueError, match="'numpy', 'numba', 'torch'"):
        get_engine("fast")
    with pytest.raises(ValueError, match="CPU only"):
        get_engine("numpy", device="cuda")


def _python(code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_core_imports_and_falls_back_without_numba_or_torch():
    code = """
import sys
sys.modules["numba"] = None  # makes `import numba` raise ImportError
sys.modules["torch"] = None
import numpy as np
from zcore.core import engine_numba, engines
from zcore.core.config import Execution
assert engine_numba.AVAILABLE is False
assert engines.get_engine().name == "numpy"
assert Execution().engine_name == "numpy"
for name in ("numba", "torch"):
    try:
        Execution(engine=name)
    except ImportError as exc:
        assert "pip install" in str(exc)
    else:
        raise AssertionError(name + " engine without its package")
import zcore.core.engine_torch  # importable without torch
print("ok")
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_torch_is_not_imported_by_the_core():
    code = """
import sys
import zcore.core, zcore.core.engines, zcore.core.engine_torch, zcore.core.engine_numba
import zcore.core.kernels, zcore.core.config
print("torch" in sys.modules)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# the pieces the torch engine computes on the device


def test_law_power_uses_products_only_for_whole_exponents():
    from zcore.core.law import law_power

    x = np.random.default_rng(0).random(1000) + 1e-3
    for exp in (0, 1, 2, 0.0, 2.0):  # what numpy's ** computes for these: ones, x, x * x
        np.testing.assert_array_equal(law_power(x, exp), x**exp)
    np.testing.assert_array_equal(law_power(x, 4), (x * x) * (x * x))
    np.testing.assert_array_equal(law_power(x, 5.0), x * ((x * x) * (x * x)))
    np.testing.assert_array_equal(law_power(x, 7.3), x**7.3)
    out = np.empty_like(x)
    assert law_power(x, 3, out=out) is out
    np.testing.assert_array_equal(out, x * (x * x))


def test_torch_power_and_pairwise_sum_match_numpy_bits():
    torch = pytest.importorskip("torch")
    from zcore.core.engine_torch import law_power_torch, pairwise_sum
    from zcore.core.law import law_power

    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 255, 1000, 4097):
        w = rng.random((5, n)) ** 4 * 10.0 ** rng.integers(-3, 3, size=(5, 1))
        got = pairwise_sum(torch.from_numpy(w)).numpy()
        np.testing.assert_array_equal(got, w.sum(axis=1), err_msg=f"n={n}")
    x = rng.random((3, 500)) + 1e-6
    for exp in (0, 1, 2, 3, 4, 9):
        got = law_power_torch(torch.from_numpy(x), exp).numpy()
        np.testing.assert_array_equal(got, law_power(x, exp), err_msg=f"exp={exp}")
    with pytest.raises(ValueError, match="whole exponent"):
        law_power_torch(torch.from_numpy(x), 0.5)


@pytest.mark.parametrize("exp", [4.0, 3.0, 1.0, 0.0, 2.5])
def test_compiled_penalties_match_the_law_on_ties(exp):
    """apply_penalties (compiled weights for whole exponents, numpy otherwise) against the law's
    own add_point_penalties, on candidate rows in any order with tied distances and padding."""
    from zcore.core import kernels
    from zcore.core.law import add_point_penalties, k_smallest

    if not kernels.AVAILABLE:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(int(exp * 10))
    n, k, width, rows = 500, 23, 40, 60
    dist = rng.integers(1, 9, size=(rows, width)).astype(np.float64) / 3.0  # many ties
    dist[:, -3:] = np.inf  # padding
    dist[5, 7] = 0.0  # a row with a duplicate of the center
    idx = np.stack([rng.permutation(n)[:width] for _ in range(rows)])
    shift = 40
    expected = np.zeros(n, np.int64)
    for r in range(rows):
        full = np.full(n, np.inf)
        full[idx[r]] = dist[r]
        nn, nd = k_smallest(full, k, n)
        add_point_penalties(expected, nn, nd, exp=exp, shift=shift)
    got = np.zeros(n, np.int64)
    ws = kernels.Workspace(rows, width, k)
    kernels.apply_penalties(dist, idx, got, k, exp, shift, np.int64(1) << shift, ws)
    np.testing.assert_array_equal(got, expected)
