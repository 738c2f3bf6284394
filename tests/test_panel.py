"""The Coreset panel's logic (zcore/panel.py) on real FiftyOne datasets, and its rendering.

The panel's numbers come from plain functions; these tests check them against
``select_coreset`` and direct computations, then render the registered panel through the real
operator executor (as the App does) and read the layout it sends.
"""

import fiftyone.operators as foo
import numpy as np
import pytest
from conftest import PLUGIN_NAME
from fiftyone import ViewField as F
from fiftyone.operators.executor import ExecutionContext

import zcore
from zcore import panel as zp

FAST = {"n_samples": 300, "redund_nn": 10, "seed": 0}
PANEL = f"{PLUGIN_NAME}/coreset_panel"


@pytest.fixture
def scored(make_dataset):
    ds, X = make_dataset(60, 8, labels=["cat", "dog", "dog", "bird"])
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    zcore.compute_zcore(ds, embeddings="embeddings", score_field="zc_seed1", **{**FAST, "seed": 1})
    return ds


@pytest.mark.parametrize(
    "mode, value", [("fraction", 0.1), ("fraction", 0.37), ("size", 13), ("threshold", 0.6)]
)
def test_count_shown_equals_select_coreset(scored, mode, value):
    s = zp.coreset_summary(scored, "zcore_score", mode, value)
    want = zcore.select_coreset(scored, **{mode: value}, method="topk")
    assert s["n_keep"] == want.count() == s["kept"].count()
    assert s["kept"].values("id") == want.values("id")
    assert s["n_scored"] == 60
    assert s["cut"] == pytest.approx(min(want.values("zcore_score")))


def test_count_on_a_view_with_missing_scores(make_dataset):
    ds, _ = make_dataset(50, 6, missing=(0, 1, 2))
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    view = ds.skip(5)
    s = zp.coreset_summary(view, "zcore_score", "fraction", 0.2)
    assert s["n_scored"] == 45
    assert s["n_keep"] == zcore.select_coreset(view, fraction=0.2, method="topk").count() == 9


def test_histogram_data(scored):
    scores = np.array(scored.values("zcore_score"))
    kept = zcore.select_coreset(scored, size=12, method="topk")
    cut = min(kept.values("zcore_score"))
    data, layout = zp.histogram(scored, "zcore_score", kept=kept, cut=cut, bins=10)
    assert [t["name"] for t in data] == ["all", "kept"]
    assert sum(data[0]["y"]) == 60 and sum(data[1]["y"]) == 12
    want, _ = np.histogram(scores, bins=np.linspace(scores.min(), scores.max(), 11))
    assert data[0]["y"] == want.tolist()
    line = layout["shapes"][0]
    assert line["x0"] == line["x1"] == cut
    # every kept sample is at or above the cut line
    assert all(v >= cut for v in kept.values("zcore_score"))


def test_class_distributions(scored):
    kept = zcore.select_coreset(scored, size=20, method="topk")
    dist = zp.class_distribution(scored, kept, "ground_truth")
    assert dist["classes"][0] == "dog"  # sorted by full count
    assert dict(zip(dist["classes"], dist["all"])) == {"dog": 30, "cat": 15, "bird": 15}
    labels = kept.values("ground_truth.label")
    assert dict(zip(dist["classes"], dist["kept"])) == {
        c: labels.count(c) for c in ("dog", "cat", "bird")
    }
    data, _ = zp.distribution_plot(dist, "t")
    assert sum(data[0]["y"]) == pytest.approx(100) and sum(data[1]["y"]) == pytest.approx(100)
    assert zp.label_fields(scored) == ["ground_truth"]


def test_clusters_when_there_are_no_labels(make_dataset):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    assert zp.label_fields(ds) == []
    assert zp.run_embeddings_field(ds, "zcore_score") == "embeddings"
    kept = zcore.select_coreset(ds, size=10, method="topk")
    dist = zp.cluster_distribution(ds, kept, "embeddings", k=4)
    assert len(dist["classes"]) == 4 and sum(dist["all"]) == 40 and sum(dist["kept"]) == 10


def test_overlap_of_two_score_fields(scored):
    o = zp.overlap(scored, "zcore_score", "zc_seed1", "size", 15)
    a = set(zcore.select_coreset(scored, size=15, method="topk").values("id"))
    b = set(
        zcore.select_coreset(scored, score_field="zc_seed1", size=15, method="topk").values("id")
    )
    assert o["n_a"] == o["n_b"] == 15
    assert o["n_both"] == len(a & b)
    assert o["jaccard"] == pytest.approx(len(a & b) / len(a | b))
    assert zp.overlap(scored, "zcore_score", "zcore_score", "fraction", 0.2)["jaccard"] == 1.0


def test_score_fields_and_runs_table(scored):
    scored.set_values("uniqueness", list(np.linspace(0, 1, 60)))
    assert zp.score_fields(scored) == ["uniqueness", "zc_seed1", "zcore_score"]
    rows = {r["key"]: r for r in zp.runs_table(scored)}
    assert set(rows) == {"zcore_score", "zc_seed1"}
    assert rows["zc_seed1"]["seed"] == "1" and rows["zcore_score"]["n_samples"] == "300"
    assert rows["zcore_score"]["embeddings"] == "embeddings"
    with pytest.raises(ValueError, match="mode"):
        zp.size_kwargs("top", 3)


def _render(ds, state, view=None):
    """Renders the registered panel as the App would (the panel's ``render`` on a context)."""
    ctx = ExecutionContext(
        request_params={
            "dataset_name": ds.name,
            "view": view._serialize() if view is not None else [],
            "panel_id": "test-panel",
            "params": {"panel_id": "test-panel", "panel_state": state},
        }
    )
    op = foo.get_operator(PANEL)
    return op.render(ctx).type.properties


def _md(props, name):
    return props[name].default


def test_panel_is_registered_and_renders_the_select_coreset_count(scored):
    assert PANEL in [o.uri for o in foo.list_operators(type="panel")]
    props = _render(scored, {"mode": "size", "size": 13, "compare_field": "zc_seed1"})
    assert "Kept: 13 of 60" in _md(props, "summary")
    assert props["score_field"].default == "zcore_score"
    plots = props["plots"].type.properties
    assert set(plots) == {"histogram", "classes"}
    hist = plots["histogram"].view
    assert sum(hist.data[1]["y"]) == 13
    o = zp.overlap(scored, "zcore_score", "zc_seed1", "size", 13)
    assert f"Overlap: {o['n_both']}" in _md(props, "overlap_md")
    assert "zc_seed1" in _md(props, "runs_md")

    props = _render(scored, {"mode": "fraction", "fraction": 0.25})
    n = zcore.select_coreset(scored, fraction=0.25, method="topk").count()
    assert f"Kept: {n} of 60" in _md(props, "summary")


def test_panel_without_scores_offers_to_compute(make_dataset):
    ds, _ = make_dataset(10, 4)
    props = _render(ds, {})
    assert "No score field" in _md(props, "empty") and "compute" in props


@pytest.mark.parametrize("kwargs", [{"size": 7}, {"fraction": 0.2}, {"threshold": 0.5}])
def test_panel_steers_on_the_view_a_kept_set_came_from(scored, kwargs):
    base = scored.match(F("ground_truth.label") != "bird")
    kept = zcore.select_coreset(base, **kwargs, method="topk")
    back = zp.selection_base(kept)
    assert back.values("id") == base.values("id")
    assert zp.selection_base(scored.view()).values("id") == scored.values("id")
    other = scored.sort_by("zcore_score", reverse=True).limit(5)
    assert zp.selection_base(other) is other
    # while the App shows the kept set, the panel keeps counting on the view it came from
    props = _render(scored, {"mode": "size", "size": 13}, view=kept)
    n = base.count()
    assert f"Kept: 13 of {n}" in _md(props, "summary") and kept.count() != n


def _call(ds, method, state):
    """Runs a panel event (a button) through the operator executor, as the App does."""
    params = {"__method__": method, "panel_id": "test-panel", "panel_state": state}
    r = foo.execute_operator(PANEL, ctx={"dataset": ds, "params": params})
    assert r.error is None, r.error
    return r


def test_panel_buttons_save_and_tag_select_coresets_samples(scored):
    state = {"mode": "size", "size": 9, "save_row": {"view_name": "panel9", "tag": "keep9"}}
    _call(scored, "save_view", state)
    want = zcore.select_coreset(scored, size=9, method="topk").values("id")
    assert scored.load_saved_view("panel9").values("id") == want
    _call(scored, "tag_kept", state)
    assert sorted(scored.match_tags("keep9").values("id")) == sorted(want)
    # saving again replaces the view (the panel's button overwrites)
    _call(scored, "save_view", {**state, "size": 5})
    assert scored.load_saved_view("panel9").count() == 5
    # the other buttons only send instructions to the App (set the view, open a form)
    for method in ("show_kept", "show_all", "run_select"):
        _call(scored, method, state)
