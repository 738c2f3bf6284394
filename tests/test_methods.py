"""Selection methods of zcore.core.methods (numpy + scikit-learn only)."""

import numpy as np
import pytest

from zcore.core import methods as M
from zcore.core.registry import method_names


def _blobs(sizes, d=8, seed=0, spread=0.05):
    """Well-separated Gaussian blobs of the given sizes; returns (X, blob label)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), d)) * 10
    X = np.concatenate([c + spread * rng.normal(size=(n, d)) for c, n in zip(centers, sizes)])
    lab = np.repeat(np.arange(len(sizes)), sizes)
    return X.astype(np.float32), lab


@pytest.fixture(scope="module")
def data():
    X, lab = _blobs([200, 120, 60, 15, 5])
    scores = np.random.default_rng(1).random(len(X))
    return X, lab, scores


def _call(name, data, n_keep, seed=0, **kw):
    X, _, scores = data
    if name == "target":
        kw.setdefault("target_embeddings", X[:40])
    return M.select(name, n_keep, scores=scores, embeddings=X, seed=seed, **kw)


@pytest.mark.parametrize("name", list(method_names()))
@pytest.mark.parametrize("n_keep", [1, 37, 150, 400])
def test_exact_count_distinct_in_range(data, name, n_keep):
    idx = _call(name, data, n_keep)
    assert idx.dtype == np.int64
    assert len(idx) == n_keep
    assert len(np.unique(idx)) == n_keep
    assert idx.min() >= 0 and idx.max() < len(data[0])


@pytest.mark.parametrize("name", list(method_names()))
def test_reproducible_by_seed_and_generator(data, name):
    a = _call(name, data, 80, seed=3)
    b = _call(name, data, 80, seed=3)
    np.testing.assert_array_equal(a, b)
    c = _call(name, data, 80, seed=np.random.default_rng(3))
    d = _call(name, data, 80, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("name", ["cluster_balanced", "stratified", "hierarchical_kmeans"])
def test_seed_changes_random_methods(data, name):
    kw = {"keep": "random"} if name == "cluster_balanced" else {}
    assert not np.array_equal(_call(name, data, 80, seed=0, **kw), _call(name, data, 80, 1, **kw))


@pytest.mark.parametrize("name", list(method_names()))
def test_more_than_available_returns_all_eligible(data, name):
    X, _, scores = data
    s = scores.copy()
    s[:10] = np.nan  # missing scores are never selected
    kw = {"target_embeddings": X[:40]} if name == "target" else {}
    idx = M.select(name, 10_000, scores=s, embeddings=X, seed=0, **kw)
    np.testing.assert_array_equal(np.sort(idx), np.arange(10, len(X)))


def test_zero_keep(data):
    for name in method_names():
        assert len(_call(name, data, 0)) == 0


def test_topk_is_select_top_indices(data):
    from zcore import select_top_indices

    _, _, scores = data
    np.testing.assert_array_equal(
        M.topk(scores, None, 50, seed=0), select_top_indices(scores, size=50)
    )
    low = M.topk(scores, None, 5, keep="low")
    np.testing.assert_array_equal(low, np.argsort(scores)[:5])


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="cluster_balanced.*hierarchical_kmeans.*stratified"):
        M.select("nope", 3, scores=np.ones(5))


# --- quotas ---------------------------------------------------------------------------------


def test_fill_quotas_equal_redistributes():
    rng = np.random.default_rng(0)
    q = M.fill_quotas([2, 3, 50], 30, rng)
    np.testing.assert_array_equal(q, [2, 3, 25])
    q = M.fill_quotas([10, 10, 10], 10, rng)
    assert q.sum() == 10 and q.max() - q.min() <= 1
    assert M.fill_quotas([1, 2], 10, rng).tolist() == [1, 2]


def test_fill_quotas_proportional():
    q = M.fill_quotas([100, 300, 600], 100, np.random.default_rng(0), weights=[100, 300, 600])
    np.testing.assert_array_equal(q, [10, 30, 60])


def test_cluster_balanced_equal_quota_with_small_clusters(data):
    X, lab, scores = data
    # labels given: the blobs (sizes 200, 120, 60, 15, 5); 100 = 20 each, the two small blobs
    # can only give 15 and 5, the rest goes equally to the three big ones
    idx = M.cluster_balanced(scores, None, 100, labels=lab, quota="equal", seed=0)
    counts = np.bincount(lab[idx], minlength=5)
    assert counts[3] == 15 and counts[4] == 5
    assert sorted(counts[:3].tolist()) == [26, 27, 27]
    # inside each cluster the highest scores are kept
    for c in range(3):
        members = np.flatnonzero(lab == c)
        best = members[np.argsort(-scores[members])[: counts[c]]]
        assert set(best) == set(idx[lab[idx] == c])


def test_cluster_balanced_keep_low_and_proportional(data):
    X, lab, scores = data
    idx = M.cluster_balanced(scores, None, 40, labels=lab, quota="proportional", keep="low")
    counts = np.bincount(lab[idx], minlength=5)
    assert counts.sum() == 40 and abs(counts[0] - 20) <= 1 and abs(counts[1] - 12) <= 1
    members = np.flatnonzero(lab == 0)
    worst = members[np.argsort(scores[members])[: counts[0]]]
    assert set(worst) == set(idx[lab[idx] == 0])


def test_cluster_balanced_kmeans_finds_blobs(data):
    X, lab, scores = data
    idx = M.cluster_balanced(scores, X, 25, n_clusters=5, quota="equal", seed=0)
    assert sorted(np.bincount(lab[idx], minlength=5).tolist()) == [5, 5, 5, 5, 5]
    idx = M.cluster_balanced(None, X, 25, n_clusters=5, quota="equal", keep="closest", seed=0)
    for c in range(5):  # the 5 members closest to each blob's mean
        members = np.flatnonzero(lab == c)
        d = ((X[members] - X[members].mean(0)) ** 2).sum(1)
        assert len(set(members[np.argsort(d)[:5]]) & set(idx)) >= 4
    assert sorted(np.bincount(lab[idx], minlength=5).tolist()) == [5, 5, 5, 5, 5]


def test_default_n_clusters_switches_at_the_budget_fraction():
    # kept fraction >= 15 %: round(sqrt(K)) clusters, between 2 and 100
    assert M.BUDGET_FRACTION == 0.15 and M.MAX_BUDGET_CLUSTERS == 1000
    assert M.default_n_clusters(10_000, 3000) == 55
    assert M.default_n_clusters(10_000, 2000) == 45
    assert M.default_n_clusters(10_000, 1500) == 39  # exactly 15 %: still sqrt
    # below 15 %: one cluster per kept sample, at most 1,000
    assert M.default_n_clusters(10_000, 1499) == 1000
    assert M.default_n_clusters(10_000, 1000) == 1000
    assert M.default_n_clusters(10_000, 500) == 500
    assert M.default_n_clusters(10_000, 1) == 1
    # explicit rules and another switch point
    assert M.default_n_clusters(10_000, 500, rule="sqrt") == 22
    assert M.default_n_clusters(10_000, 3000, rule="budget") == 1000
    assert M.default_n_clusters(10_000, 3000, budget_fraction=0.5) == 1000
    assert M.default_n_clusters(10_000, 500, budget_fraction=0.0) == 22
    assert M.default_n_clusters(5, 3, rule="budget") == 3 and M.default_n_clusters(1, 1) == 1
    with pytest.raises(ValueError, match="n_clusters"):
        M.default_n_clusters(100, 10, rule="many")


def _spy_kmeans(monkeypatch):
    """Records ``(k, labels, centers)`` of every k-means call of the methods."""
    seen = []
    real = M.kmeans

    def spy(Xs, k, seed=None):
        labels, centers = real(Xs, k, seed=seed)
        seen.append((k, labels, centers))
        return labels, centers

    monkeypatch.setattr(M, "kmeans", spy)
    return seen


def test_small_budget_is_below_the_budget_fraction():
    assert not M.small_budget(400, 60) and M.small_budget(400, 59)
    assert M.small_budget(10_000, 1000) and not M.small_budget(10_000, 2000)
    assert not M.small_budget(400, 0, budget_fraction=0.0)
    assert M.small_budget(400, 399, budget_fraction=1.0)


@pytest.mark.parametrize("n_keep, expected_k", [(80, 9), (60, 8)])
def test_cluster_balanced_auto_large_budget(data, monkeypatch, n_keep, expected_k):
    # 400 rows: the switch is at 60 kept samples (15 %); from there on: sqrt(K) clusters,
    # proportional quotas, the highest scores inside each cluster
    X, _, scores = data
    seen = _spy_kmeans(monkeypatch)
    idx = M.cluster_balanced(scores, X, n_keep, seed=0)
    assert [k for k, _, _ in seen] == [expected_k]
    assert idx.dtype == np.int64 and len(np.unique(idx)) == len(idx) == n_keep
    labels = seen[0][1]
    sizes = np.bincount(labels)
    kept = np.bincount(labels[idx], minlength=len(sizes))
    share = sizes * n_keep / len(X)
    assert np.all(kept >= np.floor(share)) and np.all(kept <= np.ceil(share))
    for c in np.flatnonzero(kept):
        members = np.flatnonzero(labels == c)
        best = members[np.lexsort((members, -scores[members]))[: kept[c]]]
        assert set(best) == set(idx[labels[idx] == c])
    # the same as the explicit options; reproducible by seed
    explicit = M.cluster_balanced(
        scores, X, n_keep, seed=0, n_clusters="sqrt", quota="proportional", keep="high"
    )
    np.testing.assert_array_equal(idx, explicit)
    np.testing.assert_array_equal(idx, M.cluster_balanced(scores, X, n_keep, seed=0))


@pytest.mark.parametrize("n_keep", [59, 40, 1])
def test_cluster_balanced_auto_small_budget(data, monkeypatch, n_keep):
    # below 15 %: K clusters, one sample each, the one closest to its cluster's centroid
    X, _, scores = data
    seen = _spy_kmeans(monkeypatch)
    idx = M.cluster_balanced(scores, X, n_keep, seed=0)
    k, labels, centers = seen[0]
    assert k == n_keep and len(seen) == 1
    if k == 1:  # one cluster: its centroid is the mean of all rows
        np.testing.assert_allclose(centers[0], X.mean(axis=0), rtol=1e-5, atol=1e-5)
    assert idx.dtype == np.int64 and len(np.unique(idx)) == len(idx) == n_keep
    used = np.unique(labels)
    assert len(used) == n_keep  # blobs this tight still give K non-empty clusters
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=k)[used], 1)
    for c in used:
        members = np.flatnonzero(labels == c)
        d = ((X[members] - centers[c]) ** 2).sum(1)
        assert idx[labels[idx] == c][0] == members[np.argmin(d)]
    explicit = M.cluster_balanced(
        scores, X, n_keep, seed=0, n_clusters="budget", quota="equal", keep="closest"
    )
    np.testing.assert_array_equal(idx, explicit)
    # the scores are not used: none needed, the same selection
    np.testing.assert_array_equal(idx, M.cluster_balanced(None, X, n_keep, seed=0))
    np.testing.assert_array_equal(idx, M.cluster_balanced(scores, X, n_keep, seed=0))


def test_cluster_balanced_budget_above_the_cluster_cap(monkeypatch):
    # small budget with K > 1000: 1000 clusters, equal quotas (K / 1000 each), closest first
    X, _ = _blobs([3000] * 5, d=4, spread=1.0)
    monkeypatch.setattr(M, "MAX_BUDGET_CLUSTERS", 50)
    seen = _spy_kmeans(monkeypatch)
    idx = M.cluster_balanced(None, X, 1000, seed=0)  # 1000 of 15,000: 6.7 %
    k, labels, _ = seen[0]
    assert k == 50 and len(np.unique(idx)) == 1000
    counts = np.bincount(labels[idx], minlength=k)
    sizes = np.bincount(labels, minlength=k)
    assert np.all(counts == np.minimum(sizes, counts.max())) and counts.max() - counts.min() <= 1


def test_cluster_balanced_auto_options_override_one_by_one(data, monkeypatch):
    X, _, scores = data
    seen = _spy_kmeans(monkeypatch)
    idx = M.cluster_balanced(scores, X, 40, seed=0, keep="high")  # small budget, but high
    k, labels, _ = seen[-1]
    assert k == 40
    for c in np.unique(labels[idx]):  # one per cluster: its highest score
        members = np.flatnonzero(labels == c)
        assert idx[labels[idx] == c][0] == members[np.argmax(scores[members])]
    M.cluster_balanced(scores, X, 40, seed=0, n_clusters=5)
    assert seen[-1][0] == 5
    # budget_fraction moves the switch; 0 never switches (sqrt, proportional, high)
    M.cluster_balanced(scores, X, 80, seed=0, budget_fraction=0.25)  # 20 % < 25 %
    assert seen[-1][0] == 80
    a = M.cluster_balanced(scores, X, 40, seed=0, budget_fraction=0.0)
    assert seen[-1][0] == 6
    b = M.cluster_balanced(
        scores, X, 40, seed=0, n_clusters="sqrt", quota="proportional", keep="high"
    )
    np.testing.assert_array_equal(a, b)
    # n_clusters=None is "auto"
    M.cluster_balanced(scores, X, 40, seed=0, n_clusters=None)
    assert seen[-1][0] == 40


def test_cluster_balanced_bad_options(data):
    X, _, scores = data
    for bad in (-0.1, 1.5, "x", None):
        with pytest.raises(ValueError, match="budget_fraction"):
            M.cluster_balanced(scores, X, 10, budget_fraction=bad)
    for bad in ("many", 0, 2.5):
        with pytest.raises(ValueError, match="n_clusters"):
            M.cluster_balanced(scores, X, 10, n_clusters=bad)
    with pytest.raises(ValueError, match="quota"):
        M.cluster_balanced(scores, X, 10, quota="more")
    with pytest.raises(ValueError, match="keep"):
        M.cluster_balanced(scores, X, 10, keep="middle")


def test_cluster_balanced_without_scores_needs_random_or_closest(data):
    X, lab, _ = data
    # K >= 15 %: "auto" keeps the highest scores, so scores are needed
    with pytest.raises(ValueError, match="keep='random' or 'closest'"):
        M.cluster_balanced(None, X, 100)
    with pytest.raises(ValueError, match="keep='random' or 'closest'"):
        M.cluster_balanced(None, X, 10, keep="high")
    assert len(M.cluster_balanced(None, X, 100, keep="random", seed=0)) == 100
    assert len(M.cluster_balanced(None, X, 100, keep="closest", seed=0)) == 100
    assert len(M.cluster_balanced(None, X, 10, seed=0)) == 10  # small budget: closest
    with pytest.raises(ValueError, match="needs embeddings"):
        M.cluster_balanced(None, None, 10, labels=lab)


def test_stratified_fills_small_strata_first_and_drops_beta():
    # scores: 100 samples in [0, 0.1), 5 in [0.5, 0.6), 100 in [0.9, 1]
    rng = np.random.default_rng(0)
    s = np.concatenate(
        [rng.uniform(0, 0.1, 100), rng.uniform(0.5, 0.6, 5), rng.uniform(0.9, 1, 100)]
    )
    idx = M.stratified(s, None, 45, n_strata=10, seed=0)
    assert len(idx) == 45
    assert np.count_nonzero((s[idx] > 0.4) & (s[idx] < 0.7)) == 5  # the small stratum, whole
    # 40 left for the two big strata: 20 each (roughly: equal-width strata split a blob)
    assert np.count_nonzero(s[idx] < 0.2) == 20 and np.count_nonzero(s[idx] > 0.8) == 20
    # beta: the lowest 50% are never kept ...
    idx = M.stratified(s, None, 50, beta=100 / 205, drop="low", seed=0)
    assert s[idx].min() >= np.sort(s)[100]
    # ... unless the budget needs them (the cut shrinks)
    assert len(M.stratified(s, None, 200, beta=0.9, seed=0)) == 200
    idx = M.stratified(s, None, 10, beta=100 / 205, drop="high", seed=0)
    assert s[idx].max() <= np.sort(s)[104]


def test_hierarchical_kmeans_balances_over_concepts(data):
    X, lab, scores = data
    idx = M.hierarchical_kmeans(scores, X, 25, levels=(5,), seed=0)
    assert sorted(np.bincount(lab[idx], minlength=5).tolist()) == [5, 5, 5, 5, 5]
    idx = M.hierarchical_kmeans(None, X, 25, levels=(10, 5), seed=0, inside="closest")
    counts = np.bincount(lab[idx], minlength=5)
    assert counts.min() >= 4 and counts.sum() == 25


@pytest.mark.parametrize("fit_max", [None, 100])
def test_hierarchical_kmeans_on_wide_embeddings(monkeypatch, fit_max):
    # more than 128 features: the resampling steps run on the principal components, the centroids
    # come back in the space of the embeddings; fit_max=100: the steps fit on a subsample
    if fit_max is not None:
        monkeypatch.setattr(M, "_KMEANS_FIT_MAX", fit_max)
    X, lab = _blobs([300, 150, 60, 30], d=300, seed=4)
    labels, centers = M._resampled_kmeans(X, 4, 3, 40, np.random.default_rng(0))
    assert centers.shape == (4, 300)
    # one cluster per blob, and each centroid near its blob's mean (blobs are ~140 apart)
    assert len({(a, b) for a, b in zip(lab, labels)}) == 4
    for c in range(4):
        true_mean = X[lab == lab[labels == c][0]].mean(axis=0)
        assert np.linalg.norm(centers[c] - true_mean) < 1.0
    idx = M.hierarchical_kmeans(None, X, 40, levels=(4,), seed=0)
    assert np.bincount(lab[idx], minlength=4).tolist() == [10, 10, 10, 10]


def test_target_picks_near_the_target():
    X, lab = _blobs([100, 100, 100], seed=2)
    T = X[lab == 1][:10] + 0.01
    idx = M.target(None, X, 30, target_embeddings=T, seed=0)
    assert np.all(lab[idx] == 1)
    # the stopping rule: stop once the picks are no longer similar to the target
    idx = M.target(None, X, 300, target_embeddings=T, min_similarity=0.9, seed=0)
    assert 0 < len(idx) < 300 and np.all(lab[idx] == 1)


def test_target_empty_or_mismatched_is_a_clear_error(data):
    X, _, _ = data
    with pytest.raises(ValueError, match="non-empty"):
        M.target(None, X, 5, target_embeddings=np.empty((0, X.shape[1])))
    with pytest.raises(ValueError, match="needs target_embeddings"):
        M.target(None, X, 5)
    with pytest.raises(ValueError, match="features"):
        M.target(None, X, 5, target_embeddings=np.ones((3, 2)))


@pytest.mark.parametrize("name", list(method_names()))
def test_all_identical_embeddings(name):
    # documented result: one cluster, so every method still returns n_keep distinct rows
    X = np.ones((50, 4), dtype=np.float32)
    s = np.random.default_rng(0).random(50)
    kw = {"target_embeddings": X[:3]} if name == "target" else {}
    idx = M.select(name, 12, scores=s, embeddings=X, seed=0, **kw)
    assert len(np.unique(idx)) == 12
    if name == "cluster_balanced":  # one cluster, highest scores: topk
        np.testing.assert_array_equal(idx, np.sort(np.argsort(-s)[:12]))


# --- near-duplicates --------------------------------------------------------------------------


def test_near_duplicates_groups_and_representative():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16)).astype(np.float32)
    X = np.concatenate([base, base[:3] * 2.0, base[:1] + 1e-4])  # scaled copies: same direction
    s = rng.random(len(X))
    s[21] = 5.0  # the copy of row 1 is the best of its group
    d = M.near_duplicates(X, 0.05, scores=s)
    assert d.n_groups == 3 and d.n_removed == 4
    groups = {frozenset(g.tolist()): int(g[0]) for g in d.groups}
    assert groups[frozenset({1, 21})] == 21
    assert frozenset({0, 20, 23}) in groups and frozenset({2, 22}) in groups
    assert len(d.keep) == len(X) - 4 and 21 in d.keep and 1 not in d.keep
    np.testing.assert_array_equal(np.sort(np.concatenate([d.keep, d.removed])), np.arange(23 + 1))
    # no scores: the lowest index represents its group
    assert all(g[0] == g.min() for g in M.near_duplicates(X, 0.05).groups)
    assert M.near_duplicates(X, 0.0).n_groups == 3  # exact same direction within float error


def test_dedup_before_selection():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 8)).astype(np.float32)
    X = np.concatenate([base, base])  # every row twice
    s = rng.random(60)
    idx = M.select("topk", 30, scores=s, embeddings=X, dedup_threshold=0.01)
    assert len(idx) == 30 and len({i % 30 for i in idx}) == 30  # one of each pair
    idx = M.select("cluster_balanced", 40, scores=s, embeddings=X, dedup_threshold=0.01, seed=0)
    assert len(idx) == 30  # only 30 distinct rows are left


def test_bad_options():
    s = np.random.default_rng(0).random(20)
    with pytest.raises(ValueError, match="keep"):
        M.topk(s, None, 3, keep="middle")
    with pytest.raises(ValueError, match="needs scores"):
        M.stratified(None, None, 3)
    with pytest.raises(ValueError, match="beta"):
        M.stratified(s, None, 3, beta=1.5)
    with pytest.raises(ValueError, match="seed"):
        M.stratified(s, None, 3, seed="x")
    with pytest.raises(ValueError, match="n_keep"):
        M.topk(s, None, -1)
