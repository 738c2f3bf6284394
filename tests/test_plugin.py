"""The FiftyOne layer and the operators, on real FiftyOne with its real MongoDB.

Operators are loaded through the real plugin registry (FIFTYONE_PLUGINS_DIR, see conftest.py) and
run immediately and delegated (queued, then executed through the delegated-operation service).
"""

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from conftest import PLUGIN_NAME, run_queued
from fiftyone.operators.executor import ExecutionError
from oracle import oracle_scores

import zcore
from zcore.collection import list_zcore_runs

COMPUTE = f"{PLUGIN_NAME}/compute_zcore"
SELECT = f"{PLUGIN_NAME}/select_coreset"
FAST = {"n_samples": 300, "redund_nn": 10, "seed": 0}


def _scores(ds, field="zcore_score"):
    return np.array([np.nan if v is None else v for v in ds.values(field)])


def _snapshot(ds):
    ds.reload()
    return (
        sorted(ds.get_field_schema().keys()),
        ds.list_runs(),
        ds.list_saved_views(),
        ds.count_sample_tags(),
    )


# --- Python API ----------------------------------------------------------------------------------


def test_compute_zcore_writes_scores_equal_to_oracle(make_dataset):
    ds, X = make_dataset(60, 8)
    res = zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    assert res.num_scored == 60 and res.num_missing == 0
    np.testing.assert_allclose(_scores(ds), oracle_scores(X, **FAST), atol=1e-9)
    assert isinstance(ds.get_field("zcore_score"), fo.FloatField)


def test_run_is_recorded_loadable_and_deletable(make_dataset):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", score_field="zc", run_key="zc_run", **FAST)
    assert "zc_run" in ds.list_runs()
    assert list_zcore_runs(ds) == ["zc_run"]
    info = ds.get_run_info("zc_run")
    assert info.config.method == "zcore"
    assert info.config.seed == 0 and info.config.redund_nn == 10 and info.config.n_samples == 300
    assert info.config.embeddings == ["embeddings"]
    results = ds.load_run_results("zc_run")
    assert results.num_scored == 40 and results.score_field == "zc"
    ds.delete_run("zc_run")
    assert "zc_run" not in ds.list_runs()


def test_seed_none_is_recorded_and_reproduces(make_dataset):
    ds, X = make_dataset(40, 6)
    res = zcore.compute_zcore(ds, embeddings="embeddings", n_samples=200, redund_nn=5)
    seed = ds.get_run_info("zcore_score").config.seed
    assert isinstance(seed, int) and seed == res.seed
    np.testing.assert_array_equal(
        _scores(ds), zcore.zcore_scores(X, n_samples=200, redund_nn=5, seed=seed)
    )


def test_rerun_same_key_needs_overwrite_and_keeps_old_values(make_dataset):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    before = _scores(ds)
    with pytest.raises(ValueError, match="already exists"):
        zcore.compute_zcore(ds, embeddings="embeddings", **{**FAST, "seed": 1})
    np.testing.assert_array_equal(_scores(ds), before)
    zcore.compute_zcore(ds, embeddings="embeddings", overwrite=True, **{**FAST, "seed": 1})
    assert not np.array_equal(_scores(ds), before)
    assert ds.get_run_info("zcore_score").config.seed == 1


def test_missing_embeddings_get_none_and_are_never_selected(make_dataset):
    ds, X = make_dataset(50, 6, missing=(3, 17))
    res = zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    assert res.num_missing == 2
    s = _scores(ds)
    assert np.isnan(s[[3, 17]]).all() and np.isfinite(np.delete(s, [3, 17])).all()
    kept = set(np.delete(X, [3, 17], axis=0).shape[:1])
    assert kept == {48}
    ids = ds.values("id")
    view = zcore.select_coreset(ds, fraction=1.0)
    assert len(view) == 48 and ids[3] not in view.values("id")


def test_multiple_embedding_fields_are_concatenated(make_dataset):
    ds, X = make_dataset(40, 6)
    ds.set_values("other", [x[:3] * 2 for x in X])
    zcore.compute_zcore(ds, embeddings=["embeddings", "other"], **FAST)
    want = zcore.zcore_scores(np.concatenate([X, X[:, :3] * 2], axis=1), **FAST)
    np.testing.assert_allclose(_scores(ds), want, atol=1e-12)


def test_array_embeddings_on_a_view(make_dataset):
    ds, X = make_dataset(50, 6)
    view = ds.skip(10).limit(30)
    zcore.compute_zcore(view, embeddings=X[10:40], **FAST)
    s = _scores(ds)
    assert np.isnan(s[:10]).all() and np.isnan(s[40:]).all()
    np.testing.assert_allclose(s[10:40], oracle_scores(X[10:40], **FAST), atol=1e-9)


def test_default_selection_uses_the_recorded_embeddings(make_dataset):
    from zcore.core import methods as M

    ds, X = make_dataset(60, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    assert zcore.collection.recorded_embeddings(ds) == "embeddings"
    view = zcore.select_coreset(ds, size=12, seed=4)
    ids = ds.values("id")
    want = M.select(M.DEFAULT_METHOD, 12, embeddings=X, scores=_scores(ds), seed=4)
    assert sorted(view.values("id")) == sorted(ids[i] for i in want)
    info = ds.get_run_info("coreset_auto").config
    assert info.selection_method == "auto" and info.embeddings == ["embeddings"]
    zcore.select_coreset(ds, size=5, seed=1)  # the default run record is replaced, not refused
    assert ds.load_run_results("coreset_auto").num_selected == 5
    # no embeddings known (scores written by hand): the top scores, with a warning
    ds.add_sample_field("manual", fo.FloatField)
    ds.set_values("manual", list(np.linspace(0, 1, 60)))
    with pytest.warns(UserWarning, match="no embeddings are recorded"):
        top = zcore.select_coreset(ds, score_field="manual", size=3)
    assert top.values("manual") == pytest.approx([1.0, 58 / 59, 57 / 59])


def test_select_coreset_by_size_fraction_threshold(make_dataset):
    ds, _ = make_dataset(50, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    s = _scores(ds)
    top = zcore.select_coreset(ds, size=10, method="topk")
    got = np.array(top.values("zcore_score"))
    assert len(top) == 10 and np.all(np.diff(got) <= 0)
    np.testing.assert_array_equal(np.sort(got), np.sort(s)[-10:])
    assert len(zcore.select_coreset(ds, fraction=0.3)) == 15
    assert len(zcore.select_coreset(ds, threshold=0.5)) == int((s >= 0.5).sum())
    assert len(zcore.select_coreset(ds, size=1000)) == 50
    by_array = zcore.select_coreset(ds, scores=s, size=10)  # no embeddings: the top scores
    assert by_array.values("id") == top.values("id")
    with pytest.raises(ValueError, match="exactly one"):
        zcore.select_coreset(ds, size=3, fraction=0.2)
    with pytest.raises(ValueError, match="not found"):
        zcore.select_coreset(ds, score_field="nope", size=3)


@pytest.mark.parametrize(
    "mutate, kwargs, match",
    [
        (
            lambda ds, X: ds.set_values("embeddings", [np.full(6, np.nan)] + list(X[1:])),
            {},
            "NaN or infinite",
        ),
        (
            lambda ds, X: ds.set_values("embeddings", [X[0][:3]] + list(X[1:])),
            {},
            "different lengths",
        ),
        (None, {"embeddings": "nope"}, "not found"),
        (None, {"embeddings": np.zeros((5, 3))}, "rows but the collection has"),
        (None, {"embeddings": None}, "pass embeddings"),
        (None, {"score_field": "a.b"}, "top-level field name"),
        (None, {"run_key": "not an identifier"}, "identifier"),
        (None, {"redund_nn": 0}, "redund_nn must be >= 1"),
        (None, {"seed": -1}, "non-negative"),
        (None, {"score_field": "filepath"}, "exists with type StringField"),
    ],
)
def test_bad_input_raises_and_writes_nothing(make_dataset, mutate, kwargs, match):
    ds, X = make_dataset(30, 6)
    if mutate is not None:
        mutate(ds, X)
    before = _snapshot(ds)
    args = {"embeddings": "embeddings", **FAST, **kwargs}
    with pytest.raises(ValueError, match=match):
        zcore.compute_zcore(ds, **args)
    assert _snapshot(ds) == before


def test_too_few_embeddings(make_dataset):
    ds, _ = make_dataset(5, 4, missing=(0, 1, 2))
    before = _snapshot(ds)
    with pytest.raises(ValueError, match="only 2 sample"):
        zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    assert _snapshot(ds) == before


# --- operators -----------------------------------------------------------------------------------


def test_plugin_is_registered():
    import fiftyone.plugins as fop

    assert PLUGIN_NAME in fop.list_plugins(enabled=True, builtin=False) or PLUGIN_NAME in [
        p.name for p in fop.list_plugins()
    ]
    uris = [op.uri for op in foo.list_operators()]
    assert COMPUTE in uris and SELECT in uris


def test_compute_operator_immediate_on_dataset(make_dataset):
    ds, X = make_dataset(50, 6)
    result = foo.execute_operator(
        COMPUTE, ctx={"dataset": ds, "params": {"embeddings": "embeddings", **FAST}}
    )
    assert result.error is None, result.error
    assert result.result["num_scored"] == 50
    np.testing.assert_allclose(_scores(ds), oracle_scores(X, **FAST), atol=1e-9)


def test_compute_operator_on_current_view_and_selected_samples(make_dataset):
    ds, X = make_dataset(50, 6)
    view = ds.limit(20)
    r = foo.execute_operator(
        COMPUTE,
        ctx={
            "view": view,
            "params": {
                "embeddings": "embeddings",
                "view_target": "CURRENT_VIEW",
                "score_field": "zc_view",
                **FAST,
            },
        },
    )
    assert r.error is None, r.error
    s = _scores(ds, "zc_view")
    assert np.isfinite(s[:20]).all() and np.isnan(s[20:]).all()

    ids = ds.values("id")
    picked = [ids[i] for i in (1, 5, 9, 30, 44)]
    r = foo.execute_operator(
        COMPUTE,
        ctx={
            "dataset": ds,
            "selected": picked,
            "params": {
                "embeddings": "embeddings",
                "view_target": "SELECTED_SAMPLES",
                "score_field": "zc_sel",
                **FAST,
            },
        },
    )
    assert r.error is None, r.error
    s = _scores(ds, "zc_sel")
    assert np.isfinite(s[[1, 5, 9, 30, 44]]).all() and np.isnan(s).sum() == 45
    np.testing.assert_allclose(
        s[[1, 5, 9, 30, 44]], oracle_scores(X[[1, 5, 9, 30, 44]], **FAST), atol=1e-9
    )


def test_compute_operator_delegated_with_workers(make_dataset):
    ds, X = make_dataset(60, 6)
    params = {
        "embeddings": "embeddings",
        "num_workers": 2,
        "save_coreset": True,
        "size_mode": "size",
        "size": 12,
        "view_name": "core12",
        **FAST,
    }
    r = foo.execute_operator(
        COMPUTE, ctx={"dataset": ds, "params": params}, request_delegation=True
    )
    assert r.error is None, r.error
    assert "zcore_score" not in ds.get_field_schema()  # only queued so far
    op = run_queued(ds)  # the only operation queued
    assert op.run_state == "completed", op.result and op.result.error
    ds.reload()
    np.testing.assert_array_equal(_scores(ds), zcore.zcore_scores(X, **FAST))
    assert len(ds.load_saved_view("core12")) == 12
    assert op.result.result["num_scored"] == 60


def test_compute_operator_sdk_call(make_dataset):
    ds, X = make_dataset(40, 6)
    op = foo.get_operator(COMPUTE)
    r = op(ds, embeddings="embeddings", score_field="zc_sdk", **FAST)
    assert r.error is None, r.error
    np.testing.assert_allclose(_scores(ds, "zc_sdk"), oracle_scores(X, **FAST), atol=1e-9)
    # timings: seconds as numbers for programs (scripts/demo.py sums them), text for the App
    assert isinstance(r.result["score_s"], float) and isinstance(r.result["total_s"], float)
    assert r.result["score_time"].endswith(" s") and len(r.result["score_time"].split(".")[1]) == 4


def test_compute_operator_error_leaves_dataset_unchanged(make_dataset):
    ds, _ = make_dataset(30, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    before, scores = _snapshot(ds), _scores(ds)
    with pytest.raises(ExecutionError, match="exists"):
        foo.execute_operator(
            COMPUTE, ctx={"dataset": ds, "params": {"embeddings": "embeddings", **FAST, "seed": 5}}
        )
    assert _snapshot(ds) == before
    np.testing.assert_array_equal(_scores(ds), scores)


def test_select_operator_size_fraction_threshold_view_and_tag(make_dataset):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    s = _scores(ds)
    op = foo.get_operator(SELECT)

    r = op(ds, size=7, view_name="top7", tag="keep", seed=3)
    assert r.error is None, r.error
    assert r.result["count"] == 7
    assert len(ds.load_saved_view("top7")) == 7
    assert ds.count_sample_tags() == {"keep": 7}
    assert set(ds.match_tags("keep").values("id")) == set(
        zcore.select_coreset(ds, size=7, seed=3).values("id")
    )  # the operator's default is select_coreset's default

    r = op(ds, fraction=0.25, view_name="q")
    assert r.result["count"] == 10
    r = op(ds, threshold=0.4, view_name="t")
    assert r.result["count"] == int((s >= 0.4).sum())

    with pytest.raises(ExecutionError, match="exists"):
        op(ds, size=3, view_name="top7")  # exists, no overwrite
    assert len(ds.load_saved_view("top7")) == 7


def test_select_operator_resolve_input_previews_the_size(make_dataset):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    from fiftyone.operators.executor import ExecutionContext

    op = foo.get_operator(SELECT)
    ctx = ExecutionContext(
        request_params={"dataset_name": ds.name, "params": {"size_mode": "size", "size": 9}}
    )
    prop = op.resolve_input(ctx)
    preview = prop.type.properties["preview"].view
    assert "9 of 40" in preview.label
