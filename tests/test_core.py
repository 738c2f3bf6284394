"""The numpy core against the slow oracle, seeding, workers, invariances and validation.

No FiftyOne here: the core must work on plain arrays.
"""

import sys

import numpy as np
import pytest
from oracle import oracle_scores

from zcore import select_top_indices, zcore_scores


def _data(n=80, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_core_does_not_import_fiftyone():
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import zcore, zcore.core, sys; assert 'fiftyone' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"redund_nn": 1},
        {"redund_nn": 78},  # = N - 2, the cap
        {"sample_dim": 1},
        {"sample_dim": 3, "redund_exp": 0},
        {"redund_exp": 2.5, "rand_init": False},
    ],
)
def test_matches_oracle(kwargs):
    X = _data()
    params = {"n_samples": 400, "redund_nn": 10, **kwargs}
    got = zcore_scores(X, seed=3, **params)
    want = oracle_scores(X, seed=3, **params)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_matches_oracle_with_ties_and_duplicates():
    # integer-valued embeddings: many equal distances; duplicated rows: zero distances
    rng = np.random.default_rng(1)
    X = rng.integers(0, 4, size=(40, 5)).astype(np.float32)
    X[10] = X[11] = X[12]
    got = zcore_scores(X, n_samples=300, redund_nn=7, seed=5)
    want = oracle_scores(X, n_samples=300, redund_nn=7, seed=5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_redund_nn_larger_than_n_is_capped():
    X = _data(20)
    np.testing.assert_array_equal(
        zcore_scores(X, n_samples=100, redund_nn=1000, seed=0),
        zcore_scores(X, n_samples=100, redund_nn=18, seed=0),
    )


def test_same_seed_same_scores_different_seed_different():
    X = _data()
    a = zcore_scores(X, n_samples=300, redund_nn=10, seed=7)
    b = zcore_scores(X, n_samples=300, redund_nn=10, seed=7)
    c = zcore_scores(X, n_samples=300, redund_nn=10, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generator_seed_equals_int_seed():
    X = _data()
    a = zcore_scores(X, n_samples=200, redund_nn=10, seed=np.random.default_rng(11))
    b = zcore_scores(X, n_samples=200, redund_nn=10, seed=11)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_workers_give_identical_scores(num_workers):
    X = _data(120)
    single = zcore_scores(X, n_samples=1000, redund_nn=20, seed=2)
    multi = zcore_scores(
        X, n_samples=1000, redund_nn=20, seed=2, use_multiprocessing=True, num_workers=num_workers
    )
    np.testing.assert_array_equal(single, multi)


def test_scores_range_and_direction():
    X = _data(100)
    s = zcore_scores(X, n_samples=500, redund_nn=10, seed=0)
    assert s.shape == (100,) and s.dtype == np.float64
    assert s.min() == 0.0 and s.max() == 1.0


def test_isolated_sample_scores_high_and_crowded_low():
    # one far-away point and a tight cluster of 5 near-duplicates among spread-out samples
    X = _data(200, 4, seed=4)
    X[0] = 8.0
    X[1:6] = X[1] + 1e-3 * np.random.default_rng(0).normal(size=(5, 4))
    s = zcore_scores(X, n_samples=4000, redund_nn=20, seed=0, rand_init=False)
    assert s[0] > np.quantile(s, 0.9)
    assert np.median(s[1:6]) < np.median(s)


def test_constant_dimensions_are_never_sampled():
    X = _data(50, 4)
    with_const = np.concatenate(
        [X[:, :2], np.full((50, 1), 3.0), X[:, 2:], np.zeros((50, 2))], axis=1
    )
    a = zcore_scores(X, n_samples=300, redund_nn=5, seed=1)
    b = zcore_scores(with_const, n_samples=300, redund_nn=5, seed=1)
    np.testing.assert_array_equal(a, b)


def test_dtype_and_memory_order_do_not_matter():
    X = _data()
    a = zcore_scores(X, n_samples=200, redund_nn=10, seed=0)
    b = zcore_scores(np.asfortranarray(X.astype(np.float64)), n_samples=200, redund_nn=10, seed=0)
    c = zcore_scores(X.tolist(), n_samples=200, redund_nn=10, seed=0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_list_of_models_is_concatenated():
    X = _data(60, 10)
    a = zcore_scores(X, n_samples=200, redund_nn=10, seed=0)
    b = zcore_scores([X[:, :4], X[:, 4:]], n_samples=200, redund_nn=10, seed=0)
    np.testing.assert_array_equal(a, b)


def test_permuting_rows_permutes_scores_without_rand_init():
    X = _data(60)
    perm = np.random.default_rng(0).permutation(60)
    a = zcore_scores(X, n_samples=300, redund_nn=10, seed=0, rand_init=False)
    b = zcore_scores(X[perm], n_samples=300, redund_nn=10, seed=0, rand_init=False)
    np.testing.assert_allclose(a[perm], b, atol=1e-12)


def test_identical_rows_give_no_nan():
    X = np.ones((10, 4), dtype=np.float32)
    X[:, 0] = np.arange(10) % 2  # two groups of identical rows
    s = zcore_scores(X, n_samples=50, redund_nn=5, seed=0, sample_dim=1)
    assert np.isfinite(s).all()


def test_default_n_samples_is_10_per_sample():
    X = _data(30)
    calls = []
    zcore_scores(X, redund_nn=5, seed=0, progress=lambda done, total, label: calls.append(total))
    assert calls and calls[-1] == 300


def test_progress_callback_reaches_total():
    X = _data(30)
    seen = []
    zcore_scores(
        X,
        n_samples=1000,
        redund_nn=5,
        seed=0,
        progress=lambda d, t, label: seen.append((d, t, label)),
    )
    points = [(d, t) for d, t, label in seen if label == "scoring"]
    assert points[-1] == (1000, 1000) and seen[-1][2] == "scoring"
    assert all(b[0] >= a[0] for a, b in zip(points, points[1:]))


@pytest.mark.parametrize(
    "embeddings, kwargs, match",
    [
        (np.array([[0.0, np.nan], [1, 2], [3, 4]]), {}, "NaN or infinite"),
        (np.array([[0.0, np.inf], [1, 2], [3, 4]]), {}, "NaN or infinite"),
        ([[1.0, 2.0], [3.0], [4.0, 5.0]], {}, "ragged"),
        (np.arange(10.0), {}, "2-d"),
        (np.zeros((2, 3)), {}, "at least 3"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), {}, "not numeric"),
        (None, {}, "None"),
        ([np.zeros((5, 2)), np.zeros((4, 2))], {}, "different numbers of samples"),
        (np.ones((5, 3)), {}, "non-constant dimension"),
        (np.eye(5), {"sample_dim": 6}, "fewer than sample_dim"),
        (np.eye(5), {"n_samples": 0}, "n_samples must be >= 1"),
        (np.eye(5), {"redund_nn": 0}, "redund_nn must be >= 1"),
        (np.eye(5), {"redund_exp": -1}, "redund_exp must be >= 0"),
        (np.eye(5), {"seed": "abc"}, "seed must be"),
        (np.eye(5), {"seed": -3}, "non-negative"),
        (np.eye(5), {"progress": "yes"}, "progress must be"),
    ],
)
def test_bad_input_raises_clear_value_error(embeddings, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zcore_scores(embeddings, **kwargs)


def test_select_top_indices():
    s = np.array([0.2, 0.9, np.nan, 0.5, 0.9, 0.1])
    assert select_top_indices(s, size=3).tolist() == [1, 4, 3]
    assert select_top_indices(s, size=100).tolist() == [1, 4, 3, 0, 5]
    assert select_top_indices(s, fraction=0.4).tolist() == [1, 4]  # 40% of 5 scored
    assert select_top_indices(s, threshold=0.5).tolist() == [1, 4, 3]
    assert select_top_indices([None, 1.0, 0.0], fraction=1.0).tolist() == [1, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"size": 2, "fraction": 0.5}, "exactly one"),
        ({"size": -1}, "size must be >= 0"),
        ({"fraction": 1.5}, "fraction must be <= 1"),
        ({"fraction": 0}, r"fraction must be in \(0, 1\]"),
        ({"threshold": float("nan")}, "finite"),
    ],
)
def test_select_top_indices_bad_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_top_indices([0.1, 0.2, 0.3], **kwargs)


def test_workers_forked_from_a_non_main_thread():
    # FiftyOne runs operators in a thread pool: the workers are forked from a non-main thread there
    from concurrent.futures import ThreadPoolExecutor

    X = _data(60)
    single = zcore_scores(X, n_samples=300, redund_nn=10, seed=4)
    with ThreadPoolExecutor(1) as pool:
        multi = pool.submit(
            zcore_scores,
            X,
            n_samples=300,
            redund_nn=10,
            seed=4,
            use_multiprocessing=True,
            num_workers=2,
        ).result()
    np.testing.assert_array_equal(single, multi)


def test_engines_give_identical_scores_through_the_public_api():
    X = _data(90)
    kw = {"n_samples": 500, "redund_nn": 15, "seed": 9}
    ref = zcore_scores(X, engine="numpy", **kw)
    np.testing.assert_array_equal(zcore_scores(X, engine="numba", **kw), ref)
    np.testing.assert_array_equal(zcore_scores(X, engine="torch", device="cpu", **kw), ref)
    np.testing.assert_array_equal(zcore_scores(X, **kw), ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"engine": "fast"}, "unknown engine"),
        ({"engine": "numpy", "device": "cuda"}, "CPU only"),
        ({"engine": "torch", "use_multiprocessing": True}, "torch engine runs in one process"),
    ],
)
def test_bad_engine_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zcore_scores(_data(), n_samples=10, **kwargs)
