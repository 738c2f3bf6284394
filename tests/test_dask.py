"""The Dask backend computes the same law as the in-process engines, on a real LocalCluster.

The rows are sharded across 2 worker processes (and across more shards than workers, and shards
smaller than ``k``); coverage and penalty integers must equal the numpy reference's exactly, for the
numba and the numpy shard engines, on the nasty cases of the engine tests (ties, duplicate rows,
constant dimensions, k close to N).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_engines import CASES, DATASETS, _draws

from zcore.core.law import accumulate_numpy, fixed_point_shift

distributed = pytest.importorskip("distributed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _reference(X, dims, coords, k, exp, shift):
    coverage = np.zeros(len(X), np.int64)
    penalty = np.zeros(len(X), np.int64)
    accumulate_numpy(X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift)
    return coverage, penalty


@pytest.mark.parametrize("dataset,sample_dim,k,exp", CASES)
def test_dask_equals_the_reference(client, dataset, sample_dim, k, exp):
    from zcore.core.dask_backend import accumulate_dask

    X = DATASETS[dataset](np.random.default_rng(7))
    _, dims, coords = _draws(X, 400, sample_dim, seed=11)
    shift = fixed_point_shift(400)
    want = _reference(X, dims, coords, k, exp, shift)
    # 2 shards (one per worker) in one batch; 5 shards (smaller than k) in batches of 37 points
    for engine, n_shards, batch in (("numba", None, None), ("numba", 5, 37), ("numpy", 3, 64)):
        coverage = np.zeros(len(X), np.int64)
        penalty = np.zeros(len(X), np.int64)
        done = []
        accumulate_dask(
            X,
            dims,
            coords,
            coverage,
            penalty,
            k=k,
            exp=exp,
            shift=shift,
            client=client,
            n_shards=n_shards,
            engine=engine,
            batch_points=batch,
            progress=done.append,
        )
        assert np.array_equal(coverage, want[0]), (engine, n_shards)
        assert np.array_equal(penalty, want[1]), (engine, n_shards)
        assert sum(done) == len(dims)


def test_zcore_scores_dask_equals_local(client):
    from zcore import zcore_scores

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 32)).astype(np.float32)
    X[10:30] = X[10]
    kw = {"n_samples": 3000, "redund_nn": 100, "seed": 5}
    local = zcore_scores(X, **kw)
    assert np.array_equal(zcore_scores(X, backend="dask", client=client, **kw), local)
    # a scheduler address works too
    address = client.scheduler.address
    assert np.array_equal(zcore_scores(X, backend="dask", client=address, **kw), local)


def test_zcore_scores_dask_starts_its_own_local_cluster():
    from zcore import zcore_scores

    X = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    kw = {"n_samples": 500, "redund_nn": 20, "seed": 2}
    got = zcore_scores(X, backend="dask", num_workers=2, **kw)
    assert np.array_equal(got, zcore_scores(X, **kw))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backend": "spark"}, "unknown backend 'spark'"),
        ({"client": "tcp://x:1"}, "only with backend='dask'"),
        ({"backend": "dask", "use_multiprocessing": True}, "leave use_multiprocessing off"),
        ({"backend": "dask", "engine": "torch"}, "not torch"),
        ({"backend": "dask", "device": "cpu"}, "not torch"),
    ],
)
def test_bad_backend_options(kwargs, match):
    from zcore import zcore_scores

    X = np.random.default_rng(1).normal(size=(50, 4))
    with pytest.raises(ValueError, match=match):
        zcore_scores(X, n_samples=10, redund_nn=5, **kwargs)


def test_plugin_imports_without_dask_and_says_what_to_install():
    code = """
import sys
sys.modules["distributed"] = None
sys.modules["dask"] = None
import numpy as np
import zcore
from zcore import zcore_scores
X = np.random.default_rng(0).normal(size=(20, 3))
try:
    zcore_scores(X, n_samples=5, redund_nn=3, backend="dask")
except ImportError as e:
    print("ERR", e)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "ERR backend='dask' needs dask.distributed" in out.stdout
    assert "requirements-dask.txt" in out.stdout


def test_compute_operator_delegated_on_a_dask_cluster(client, make_dataset, monkeypatch):
    """The compute_zcore operator, delegated, scores on the cluster given by its address (listed
    in ZCORE_DASK_SCHEDULERS by the server's owner) and writes the same scores as the in-process
    engine; an immediate run is refused."""
    import fiftyone.operators as foo
    from conftest import run_queued
    from fiftyone.operators.executor import ExecutionError

    from zcore import zcore_scores

    ds, X = make_dataset(80, 6)
    monkeypatch.setenv("ZCORE_DASK_SCHEDULERS", client.scheduler.address)
    fast = {"n_samples": 300, "redund_nn": 10, "seed": 3}
    uri = "@zcore/zcore/compute_zcore"
    params = {"embeddings": "embeddings", "dask_scheduler": client.scheduler.address, **fast}
    with pytest.raises(ExecutionError, match="only in a delegated"):
        foo.execute_operator(uri, ctx={"dataset": ds, "params": params})
    r = foo.execute_operator(uri, ctx={"dataset": ds, "params": params}, request_delegation=True)
    assert r.error is None, r.error
    op = run_queued(ds)  # the only operation queued
    assert op.run_state == "completed", op.result and op.result.error
    ds.reload()
    np.testing.assert_array_equal(np.array(ds.values("zcore_score")), zcore_scores(X, **fast))


def test_global_bound_is_the_smallest_guaranteed_kth_distance():
    """Brute force over the reported values: the bound is the smallest value v such that the
    shards guarantee k candidates within v, and at least k candidates truly lie within it."""
    from zcore.core.dask_backend import global_bound, quantile_ranks

    rng = np.random.default_rng(0)
    for k, shards in [(1000, 2), (1000, 7), (37, 3), (5, 4), (64, 2)]:
        ranks = quantile_ranks(k)
        cands = [
            np.sort(rng.integers(0, 50, size=rng.integers(k // 2, 2 * k))) for _ in range(shards)
        ]
        q = np.full((shards, 1, ranks.size), np.inf)
        for s, c in enumerate(cands):
            ok = ranks <= c.size
            q[s, 0, ok] = c[ranks[ok] - 1]
        bound = global_bound(q, k)[0]
        values = sorted(set(q.ravel()) - {np.inf})
        guaranteed = [
            sum(
                max([r for r, v in zip(ranks, q[s, 0]) if v <= x], default=0) for s in range(shards)
            )
            for x in values
        ]
        want = next((x for x, g in zip(values, guaranteed) if g >= k), np.inf)
        assert bound == want
        if np.isfinite(bound):
            assert sum(int((c <= bound).sum()) for c in cands) >= k


def test_dask_scores_a_memory_mapped_matrix(client, tmp_path):
    from zcore import zcore_scores

    X = np.random.default_rng(4).normal(size=(500, 16)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    kw = {"n_samples": 800, "redund_nn": 30, "seed": 9}
    got = zcore_scores(mapped, backend="dask", client=client, **kw)
    assert np.array_equal(got, zcore_scores(X, **kw))
