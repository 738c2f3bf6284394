"""select_coreset with selection methods, on real FiftyOne (see conftest.py)."""

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from conftest import PLUGIN_NAME

import zcore
from zcore.core import methods as M

SELECT = f"{PLUGIN_NAME}/select_coreset"


def _with_scores(ds, seed=0):
    scores = np.random.default_rng(seed).random(len(ds))
    ds.set_values("zcore_score", scores.tolist())
    return scores


def test_topk_is_the_original_selection(make_dataset):
    ds, _ = make_dataset(30, 4)
    scores = _with_scores(ds)
    view = zcore.select_coreset(ds, size=5, method="topk")
    assert view.values("zcore_score") == sorted(scores, reverse=True)[:5]
    assert ds.list_runs() == []  # the plain top-k records nothing
    with pytest.raises(ValueError, match="apply to methods other than 'topk'"):
        zcore.select_coreset(ds, size=5, n_clusters=3)


def test_cluster_balanced_matches_core_and_records_run(make_dataset):
    ds, X = make_dataset(80, 6)
    scores = _with_scores(ds)
    view = zcore.select_coreset(
        ds, size=20, method="cluster_balanced", embeddings="embeddings", seed=3, n_clusters=4
    )
    ids = ds.values("id")
    expected = M.cluster_balanced(scores, X, 20, seed=3, n_clusters=4)
    assert sorted(view.values("id")) == sorted(ids[i] for i in expected)
    assert view.count() == 20
    info = ds.get_run_info("coreset_cluster_balanced")
    assert info.config.method == "zcore_selection"
    assert info.config.selection_method == "cluster_balanced"
    assert info.config.seed == 3 and info.config.options == {"n_clusters": 4}
    assert info.config.embeddings == ["embeddings"] and info.config.scores == "zcore_score"
    res = ds.load_run_results("coreset_cluster_balanced")
    assert res.num_selected == 20 and res.seed == 3
    # not listed as a scoring run
    assert zcore.collection.list_zcore_runs(ds) == []
    # same key again needs overwrite; a fresh seed is drawn and recorded when none is given
    with pytest.raises(ValueError, match="overwrite=True"):
        zcore.select_coreset(ds, size=20, method="cluster_balanced", embeddings="embeddings")
    zcore.select_coreset(
        ds, size=20, method="cluster_balanced", embeddings="embeddings", overwrite=True
    )
    assert isinstance(ds.get_run_info("coreset_cluster_balanced").config.seed, int)


def test_stratified_needs_scores_not_embeddings(make_dataset):
    ds, _ = make_dataset(50, 4)
    with pytest.raises(ValueError, match="not found"):
        zcore.select_coreset(ds, fraction=0.2, method="stratified")
    scores = _with_scores(ds)
    view = zcore.select_coreset(ds, fraction=0.2, method="stratified", seed=0, run_key="ccs")
    expected = M.stratified(scores, None, 10, seed=0)
    ids = ds.values("id")
    assert sorted(view.values("id")) == sorted(ids[i] for i in expected)
    with pytest.raises(ValueError, match="threshold applies to method 'topk' only"):
        zcore.select_coreset(ds, threshold=0.5, method="stratified", run_key="x")


def test_missing_embeddings_and_scores_are_never_selected(make_dataset):
    ds, _ = make_dataset(40, 4, missing=(0, 1, 2))
    scores = _with_scores(ds).tolist()
    scores[3] = None  # no score either
    ds.set_values("zcore_score", scores)
    ids = ds.values("id")
    view = zcore.select_coreset(
        ds, size=1000, method="hierarchical_kmeans", embeddings="embeddings", seed=0
    )
    assert view.count() == 36 and set(ids[:4]).isdisjoint(view.values("id"))


def test_target_simcore(make_dataset):
    ds, X = make_dataset(60, 4)
    target = ds.limit(5)
    view = zcore.select_coreset(
        ds, size=5, method="target", embeddings="embeddings", target=target, seed=0
    )
    assert view.count() == 5
    assert ds.get_run_info("coreset_target").config.target_count == 5
    empty = ds.match(fo.ViewField("filepath") == "nope")
    with pytest.raises(ValueError, match="non-empty target"):
        zcore.select_coreset(
            ds, size=5, method="target", embeddings="embeddings", target=empty, run_key="t2"
        )
    with pytest.raises(ValueError, match="needs target"):
        zcore.select_coreset(ds, size=5, method="target", embeddings="embeddings", run_key="t3")
    assert "t2" not in ds.list_runs() and "t3" not in ds.list_runs()


def test_dedup_saves_duplicates_view(make_dataset):
    ds, X = make_dataset(20, 8)
    # five more samples: copies of samples 0..4
    ds.add_samples(
        [
            fo.Sample(filepath=f"/tmp/zcore-test/dup_{i}.jpg", embeddings=X[i] * 1.5)
            for i in range(5)
        ]
    )
    scores = _with_scores(ds)
    view = zcore.select_coreset(
        ds, size=100, dedup_threshold=0.01, embeddings="embeddings", method="topk"
    )
    assert view.count() == 20  # topk after removing one of each pair
    res = ds.load_run_results("coreset_topk")
    assert res.num_duplicate_groups == 5 and res.num_duplicates_removed == 5
    dup = ds.load_saved_view("coreset_topk_duplicates")
    assert dup.count() == 10
    ids = ds.values("id")
    for g in res.duplicate_groups:  # the representative (first) has the higher score
        assert scores[ids.index(g[0])] >= scores[ids.index(g[1])]
    assert set(res.duplicate_groups[0]).isdisjoint(set(res.duplicate_groups[1]))


def test_errors_write_nothing(make_dataset):
    ds, _ = make_dataset(30, 4)
    _with_scores(ds)
    with pytest.raises(ValueError, match="unknown selection method.*cluster_balanced"):
        zcore.select_coreset(ds, size=3, method="kcenter")
    with pytest.raises(ValueError, match="needs embeddings"):
        zcore.select_coreset(ds, size=3, method="cluster_balanced")
    with pytest.raises(ValueError, match="not found"):
        zcore.select_coreset(ds, size=3, method="cluster_balanced", embeddings="nope")
    assert ds.list_runs() == [] and ds.list_saved_views() == []


def test_operator_with_method(make_dataset):
    ds, _ = make_dataset(60, 4)
    _with_scores(ds)
    op = foo.get_operator(SELECT)
    out = op(
        ds,
        fraction=0.25,
        method="cluster_balanced",
        embeddings="embeddings",
        seed=1,
        view_name="cb",
        tag="keep",
    )
    assert out.result["count"] == 15
    assert ds.load_saved_view("cb").count() == 15
    assert ds.count_sample_tags() == {"keep": 15}
    assert ds.get_run_info("coreset_cluster_balanced").config.seed == 1
    # the default operator call, with no embeddings recorded for the hand-made scores: the
    # top scores (with a warning), recording nothing new
    with pytest.warns(UserWarning, match="no embeddings are recorded"):
        out = op(ds, size=4, view_name="top")
    assert out.result["count"] == 4 and ds.list_runs() == ["coreset_cluster_balanced"]


@pytest.mark.parametrize("size", [30, 5])  # keeping 50% (best scores) and 8% (typical samples)
def test_operator_cluster_balanced_uses_the_benchmarked_default(make_dataset, size):
    ds, X = make_dataset(60, 4)
    _with_scores(ds)
    scores = np.array(ds.values("zcore_score"))
    out = foo.get_operator(SELECT)(
        ds, size=size, method="cluster_balanced", embeddings="embeddings", seed=2, view_name="cb"
    )
    assert out.result["count"] == size
    want = M.cluster_balanced(scores, X, size, seed=2)
    ids = np.array(ds.values("id"))
    assert set(ds.load_saved_view("cb").values("id")) == set(ids[want])


def test_operator_form_shows_method_options_without_running(make_dataset):
    from fiftyone.operators.executor import ExecutionContext

    ds, _ = make_dataset(40, 4)
    _with_scores(ds)
    op = foo.get_operator(SELECT)

    def form(**params):
        ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": params})
        return op.resolve_input(ctx).type.properties

    props = form(size_mode="size", size=5)  # the default method: no options but a seed
    assert "method" in props and "n_clusters" not in props and "seed" in props
    assert "5 of 40 scored samples will be kept (by the default method)" in (
        props["preview"].view.label
    )
    props = form(size_mode="size", size=5, method="topk")
    assert "seed" not in props and "highest" in props["preview"].view.label
    props = form(size_mode="size", size=5, method="cluster_balanced")
    for name in ("n_clusters", "quota", "keep", "embeddings", "seed", "run_key"):
        assert name in props, name
    # every method previews its count (it keeps exactly its budget), named by its label
    assert (
        props["preview"].view.label == "5 of 40 scored samples will be kept (by Cluster-balanced)"
    )
    props = form(size_mode="fraction", method="stratified")
    assert "beta" in props and "drop" in props and "embeddings" not in props
    assert ds.list_runs() == []  # the form never selects with a method
