"""Typed run records (zcore/runs.py): found by type, own their fields and views, clean up on
``delete_run``; real FiftyOne on the session's own MongoDB."""

import fiftyone as fo
import numpy as np

import zcore
from zcore import runs

FAST = {"n_samples": 300, "redund_nn": 10, "seed": 0}


def test_score_run_is_typed_and_delete_run_removes_its_fields(make_dataset):
    ds, _ = make_dataset()
    zcore.compute_zcore(ds, embeddings="embeddings", component_fields=True, **FAST)
    config = ds.get_run_info("zcore_score").config
    assert type(config) is runs.ScoreRunConfig and config.method == "zcore"
    assert ds.list_runs(type=runs.ScoreRun) == ["zcore_score"]
    assert ds.list_runs(type=runs.SelectionRun) == []
    owned = ["zcore_score", "zcore_score_coverage", "zcore_score_redundancy"]
    assert sorted(runs.owned_fields(config)) == owned
    ds.delete_run("zcore_score")
    assert not any(ds.has_field(f) for f in owned)
    assert ds.has_field("embeddings")


def test_a_field_rewritten_by_a_later_run_stays_with_that_run(make_dataset):
    ds, _ = make_dataset()
    zcore.compute_zcore(ds, embeddings="embeddings", run_key="first", **FAST)
    zcore.compute_zcore(ds, embeddings="embeddings", run_key="second", overwrite=True, **FAST)
    ds.delete_run("first")
    assert ds.has_field("zcore_score")  # "second" wrote it last
    ds.delete_run("second")
    assert not ds.has_field("zcore_score")


def test_record_survives_a_reload_from_the_database(make_dataset):
    ds, _ = make_dataset()
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    again = fo.load_dataset(ds.name)
    again.reload()
    assert type(again.get_run_info("zcore_score").config) is runs.ScoreRunConfig


def test_selection_run_owns_its_duplicates_view(make_dataset):
    ds, X = make_dataset(n=40)
    for s, x in zip(ds.iter_samples(autosave=True), X):  # every sample twice, nearly
        s["embeddings"] = x
    copies = [
        fo.Sample(filepath=f"/tmp/zcore-test/copy_{i}.jpg", embeddings=x) for i, x in enumerate(X)
    ]
    ds.add_samples(copies)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    zcore.select_coreset(
        ds, size=10, method="cluster_balanced", embeddings="embeddings", dedup_threshold=0.01
    )
    config = ds.get_run_info("coreset_cluster_balanced").config
    assert type(config) is runs.SelectionRunConfig
    assert ds.has_saved_view(config.duplicates_view)
    assert ds.list_runs(type=runs.SelectionRun) == ["coreset_cluster_balanced"]
    ds.delete_run("coreset_cluster_balanced")
    assert not ds.has_saved_view(config.duplicates_view)
    assert ds.has_field("zcore_score")  # the score run is untouched


def test_an_untyped_record_of_an_earlier_version_is_listed_and_replaced(make_dataset):
    ds, _ = make_dataset()
    legacy = ds.init_run(method="zcore", score_field="zcore_score", embeddings="embeddings")
    ds.register_run("zcore_score", legacy)
    assert zcore.collection.list_zcore_runs(ds) == ["zcore_score"]
    assert runs.ScoreRun.is_legacy(ds, "zcore_score")
    zcore.compute_zcore(ds, embeddings="embeddings", overwrite=True, **FAST)
    assert type(ds.get_run_info("zcore_score").config) is runs.ScoreRunConfig
    assert not runs.ScoreRun.is_legacy(ds, "zcore_score")


def test_a_run_of_another_kind_under_the_key_fails_before_any_work(make_dataset):
    ds, _ = make_dataset()
    zcore.compute_zcore(ds, embeddings="embeddings", run_key="taken", **FAST)
    before = ds.values("zcore_score")
    try:
        zcore.select_coreset(
            ds,
            size=5,
            method="cluster_balanced",
            embeddings="embeddings",
            run_key="taken",
            overwrite=True,
        )
    except ValueError as e:
        assert "Cannot overwrite" in str(e)
    else:
        raise AssertionError("a selection replaced a score run's record")
    assert type(ds.get_run_info("taken").config) is runs.ScoreRunConfig
    assert np.array_equal(ds.values("zcore_score"), before)


def test_the_score_field_is_indexed_for_the_apps_sort(make_dataset):
    ds, _ = make_dataset()
    zcore.compute_zcore(ds, embeddings="embeddings", component_fields=True, **FAST)
    assert "zcore_score" in ds.list_indexes()
    ds.delete_run("zcore_score")  # the field and its index go with the run
    assert "zcore_score" not in ds.list_indexes()
