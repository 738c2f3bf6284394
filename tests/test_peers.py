"""Peer selection methods (zcore.core.peers): contracts, degenerate inputs and slow oracles."""

import itertools

import numpy as np
import pytest

from zcore.core import methods as M
from zcore.core import peers

ALL = {
    "kcenter_greedy": peers.kcenter_greedy,
    "facility_location": peers.facility_location,
    "typiclust": peers.typiclust,
    "probcover": peers.probcover,
    "semdedup": peers.semdedup,
    "prototypicality": peers.prototypicality,
}


def blobs(n_per=30, centers=4, d=8, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centers, d)) * 3
    X = np.concatenate([C[c] + spread * rng.normal(size=(n_per, d)) for c in range(centers)])
    return X.astype(np.float32), np.repeat(np.arange(centers), n_per)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("keep", [1, 7, 60, 119, 120])
def test_exactly_k_distinct_sorted_rows(name, keep):
    X, _ = blobs()
    idx = ALL[name](None, X, keep, seed=0)
    assert idx.dtype == np.int64 and idx.shape == (keep,)
    assert len(np.unique(idx)) == keep and np.all(np.diff(idx) > 0)
    assert idx.min() >= 0 and idx.max() < len(X)


@pytest.mark.parametrize("name", sorted(ALL))
def test_reproducible_by_seed(name):
    X = np.random.default_rng(3).normal(size=(150, 6)).astype(np.float32)
    a = ALL[name](None, X, 20, seed=5)
    b = ALL[name](None, X, 20, seed=5)
    assert np.array_equal(a, b)
    b2 = ALL[name](None, X, 20, seed=np.random.default_rng(5))
    assert np.array_equal(a, b2)  # an int seed and a Generator of that seed agree


@pytest.mark.parametrize("name", sorted(ALL))
def test_tiny_identical_and_degenerate_inputs(name):
    fn = ALL[name]
    one = np.ones((1, 4), dtype=np.float32)
    assert fn(None, one, 1, seed=0).tolist() == [0]
    assert fn(None, one, 5, seed=0).tolist() == [0]  # capped at N
    same = np.ones((10, 3), dtype=np.float32)
    idx = fn(None, same, 4, seed=0)
    assert len(np.unique(idx)) == 4
    assert fn(None, same, 0, seed=0).size == 0
    with pytest.raises(ValueError, match="embeddings"):
        fn(None, None, 3, seed=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(None, np.array([[0.0, np.nan], [1, 1], [2, 2]]), 1, seed=0)
    with pytest.raises(ValueError, match="n_keep"):
        fn(None, same, -1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        fn(None, same, 2, seed="x")


@pytest.mark.parametrize("name", sorted(ALL))
def test_rows_with_nan_scores_are_never_selected(name):
    X, _ = blobs()
    scores = np.ones(len(X))
    scores[::3] = np.nan
    idx = ALL[name](scores, X, 50, seed=0)
    assert not np.isnan(scores[idx]).any() and len(idx) == 50
    idx = ALL[name](scores, X, 500, seed=0)  # more than eligible: all eligible
    assert np.array_equal(idx, np.flatnonzero(~np.isnan(scores)))


def test_kcenter_greedy_matches_a_brute_force_oracle():
    X = np.random.default_rng(1).normal(size=(40, 5))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    idx = peers.kcenter_greedy(None, X, 8, seed=2)
    first = int(np.random.default_rng(2).integers(40))
    chosen = [first]
    for _ in range(7):  # the farthest point from its nearest chosen centre, ties -> lower index
        d = [min(np.linalg.norm(Xn[i] - Xn[c]) for c in chosen) for i in range(40)]
        for c in chosen:
            d[c] = -1
        chosen.append(int(np.argmax(d)))
    assert idx.tolist() == sorted(chosen)


def test_facility_location_lazy_greedy_equals_plain_greedy():
    X = np.random.default_rng(4).normal(size=(35, 4)).astype(np.float32)
    Xn = M.l2_normalize(X)
    nbr, sim = peers.knn_graph(Xn, 5)
    W = np.zeros((35, 35))
    for i in range(35):
        for j, s in zip(nbr[i], sim[i]):
            W[i, j] = max(W[i, j], max(s, 0))
    W = np.maximum(W, W.T)
    np.fill_diagonal(W, 1.0)

    def F(S):
        return W[:, S].max(axis=1).sum() if S else 0.0

    greedy = []
    for _ in range(6):
        gains = [(F(greedy + [j]) - F(greedy), -j) for j in range(35) if j not in greedy]
        greedy.append(-max(gains)[1])
    idx = peers.facility_location(None, X, 6, seed=0, n_neighbors=5)
    assert F(list(idx)) == pytest.approx(F(greedy))


def test_knn_graph_is_exact():
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    Xn = M.l2_normalize(X)
    nbr, sim = peers.knn_graph(Xn, 4, chunk=7)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    for i in range(50):
        assert np.allclose(np.sort(S[i])[::-1][:4], sim[i], atol=1e-6)
        assert i not in nbr[i]


def test_probcover_greedy_maximises_new_coverage():
    X, _ = blobs(n_per=10, centers=3, d=4)
    Xn = M.l2_normalize(X)
    delta = 0.5
    idx = peers.probcover(None, X, 3, seed=0, delta=delta)
    D = np.linalg.norm(Xn[:, None] - Xn[None], axis=2)
    covered = np.zeros(len(X), bool)
    expect = []
    for _ in range(3):  # the ball covering most uncovered points, ties -> lower index
        gain = [(np.count_nonzero((D[j] <= delta) & ~covered), -j) for j in range(len(X))]
        j = -max(g for g in gain if -g[1] not in expect)[1]
        expect.append(j)
        covered |= D[j] <= delta
    assert idx.tolist() == sorted(expect)
    # three tight blobs: one ball per blob
    assert sorted(np.unique(np.repeat(np.arange(3), 10)[idx])) == [0, 1, 2]


def test_probcover_delta_rule_keeps_balls_pure():
    X, y = blobs(n_per=40, centers=5, d=6)
    Xn = M.l2_normalize(X)
    delta = peers.choose_delta(Xn, y, purity=0.95, rng=0)
    D = np.linalg.norm(Xn[:, None] - Xn[None], axis=2)
    pure = [(y[D[i] <= delta] == y[i]).all() for i in range(len(X))]
    assert np.mean(pure) >= 0.95 and delta > 0


def test_typiclust_takes_the_most_typical_sample_of_every_cluster():
    X, y = blobs(n_per=25, centers=4, d=5)
    outlier = np.zeros(len(X), bool)
    idx = peers.typiclust(None, X, 4, seed=0, labels=y)
    assert sorted(y[idx].tolist()) == [0, 1, 2, 3]
    Xn = M.l2_normalize(X)
    for i in idx:  # each pick maximises typicality inside its cluster
        m = np.flatnonzero(y == y[i])
        t = peers._typicality(Xn[m], 20)
        assert m[np.argmax(t)] == i
    del outlier


def test_semdedup_drops_exact_duplicates_first():
    X, _ = blobs(n_per=20, centers=3, d=6, spread=0.5)
    X = np.concatenate([X, X[:30]])  # 30 exact copies
    idx = peers.semdedup(None, X, 60, seed=0, eps=0.001, n_clusters=3)
    rows = [tuple(np.round(X[i], 5)) for i in idx]
    assert len(set(rows)) == 60  # no image kept twice


def test_prototypicality_easy_and_hard_split_the_order():
    X, _ = blobs(n_per=30, centers=3, d=4, spread=0.3)
    easy = peers.prototypicality(None, X, 30, seed=0, keep="easy", n_clusters=3)
    hard = peers.prototypicality(None, X, 60, seed=0, keep="hard", n_clusters=3)
    assert not set(easy) & set(hard)  # the 30 closest and the 60 farthest of 90 rows
    with pytest.raises(ValueError, match="keep"):
        peers.prototypicality(None, X, 3, keep="middle")


def test_every_subset_is_distinct_for_all_budgets_on_duplicates():
    X = np.repeat(np.random.default_rng(0).normal(size=(5, 3)), 4, axis=0)
    for name, keep in itertools.product(sorted(ALL), [1, 5, 12, 20]):
        idx = ALL[name](None, X, keep, seed=1)
        assert len(np.unique(idx)) == keep, name
