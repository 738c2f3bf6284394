"""The Coreset panel's logic (zcore/panel.py) on real FiftyOne datasets, and its rendering.

The panel's numbers come from plain functions; these tests check them against
``select_coreset`` and direct computations, then render the registered panel through the real
operator executor (as the App does) and read the layout it sends.
"""

import fiftyone as fo
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
    lo, hi = np.quantile(scores, zp.HIST_QUANTILES)
    want, _ = np.histogram(np.clip(scores, lo, hi), bins=np.linspace(lo, hi, 11))
    assert data[0]["y"] == want.tolist()
    assert layout["xaxis"]["range"] == pytest.approx([lo, hi])
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


@pytest.fixture
def triggers(monkeypatch):
    """``(operator_uri, params)`` of every instruction that events send to the App."""
    sent = []
    real = ExecutionContext.trigger

    def trigger(self, operator_name, params=None):
        sent.append((operator_name, params or {}))
        return real(self, operator_name, params=params)

    monkeypatch.setattr(ExecutionContext, "trigger", trigger)
    return sent


def _sent(triggers, name):
    return [p for uri, p in triggers if uri.endswith(name)]


def _call(ds, method, state):
    """Runs a panel event (a button) through the operator executor, as the App does."""
    params = {"__method__": method, "panel_id": "test-panel", "panel_state": state}
    r = foo.execute_operator(PANEL, ctx={"dataset": ds, "params": params})
    assert r.error is None, r.error
    return r


def test_panel_buttons_save_and_tag_select_coresets_samples(scored, triggers):
    state = {"mode": "size", "size": 9, "save_row": {"view_name": "panel9"}}
    state["tag_row"] = {"tag": "keep9"}
    _call(scored, "save_view", state)
    want = zcore.select_coreset(scored, size=9, method="topk").values("id")
    assert scored.load_saved_view("panel9").values("id") == want
    _call(scored, "tag_kept", state)
    assert sorted(scored.match_tags("keep9").values("id")) == sorted(want)
    # saving again under that name is refused, and says why; the view is unchanged
    r = _call(scored, "save_view", {**state, "size": 5})
    assert scored.load_saved_view("panel9").values("id") == want
    assert r.error is None
    msgs = [str(p) for p in _sent(triggers, "notify") if "Not saved" in str(p)]
    assert len(msgs) == 1 and "a saved view named 'panel9' exists" in msgs[0]
    assert "Overwrite" in msgs[0]
    # unless "Overwrite" is ticked
    over = {**state, "size": 5, "save_row": {"view_name": "panel9", "overwrite": True}}
    _call(scored, "save_view", over)
    assert scored.load_saved_view("panel9").count() == 5
    # the other buttons only send instructions to the App (set the view, open a form)
    for method in ("show_kept", "show_all", "run_select"):
        _call(scored, method, state)


# --- reading once: each array is read once per event and kept across events -------------------


@pytest.fixture(autouse=True)
def _empty_panel_cache():
    zp.CACHE.clear()
    yield
    zp.CACHE.clear()


@pytest.fixture
def reads(monkeypatch):
    """The fields of every aggregation run on samples (``values``, ``count``, ``count_values``,
    ...: every read of sample data through FiftyOne), one list per call."""
    import fiftyone.core.collections as foc

    calls = []
    real = foc.SampleCollection.aggregate

    def aggregate(self, aggregations, *args, **kwargs):
        aggs = aggregations if isinstance(aggregations, (list, tuple)) else [aggregations]
        calls.append([getattr(a, "field_name", None) for a in aggs])
        return real(self, aggregations, *args, **kwargs)

    monkeypatch.setattr(foc.SampleCollection, "aggregate", aggregate)
    return calls


@pytest.fixture
def kmeans_fits(monkeypatch):
    from sklearn.cluster import KMeans

    fits = []
    real = KMeans.fit_predict

    def fit_predict(self, X, *args, **kwargs):
        fits.append(X.shape)
        return real(self, X, *args, **kwargs)

    monkeypatch.setattr(KMeans, "fit_predict", fit_predict)
    return fits


def _read_fields(calls):
    return sorted(f for call in calls for f in call if f != "id")


def test_an_event_reads_each_field_once_and_the_next_event_reads_nothing(scored, reads):
    state = {"mode": "size", "size": 13, "compare_field": "zc_seed1"}
    props = _render(scored, state)
    assert "Kept: 13 of 60" in _md(props, "summary")
    # one pass per field: the score, the compared score, the labels (each with the ids), and
    # the counts of the sample tags (for "Grow from samples tagged")
    assert _read_fields(reads) == ["ground_truth.label", "tags", "zc_seed1", "zcore_score"]
    assert all(call[0] == "id" and len(call) == 2 for call in reads if call != ["tags"])
    # other events (slider, mode, threshold, compare field) read no sample again
    for state in (
        {"mode": "size", "size": 21, "compare_field": "zc_seed1"},
        {"mode": "fraction", "fraction": 0.25},
        {"mode": "threshold", "threshold": 0.6, "compare_field": "zc_seed1"},
    ):
        reads.clear()
        props = _render(scored, state)
        assert reads == []
        kwargs = {k: v for k, v in state.items() if k in ("size", "fraction", "threshold")}
        want = zcore.select_coreset(scored, **kwargs, method="topk")
        assert f"Kept: {want.count()} of 60" in _md(props, "summary")
    o = zp.overlap(scored, "zcore_score", "zc_seed1", "threshold", 0.6)
    assert f"Overlap: {o['n_both']}" in _md(props, "overlap_md")


def test_kmeans_is_fitted_once_for_all_events(make_dataset, reads, kmeans_fits):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    for state in ({}, {"fraction": 0.3}, {"mode": "size", "size": 7}, {"mode": "threshold"}):
        props = _render(ds, state)
        assert set(props["plots"].type.properties) == {"histogram", "classes"}
    assert len(kmeans_fits) == 1 and kmeans_fits[0] == (40, 6)
    assert _read_fields(reads) == ["embeddings", "tags", "zcore_score"]


def test_the_clusters_shown_are_a_fresh_kmeans_fit(make_dataset):
    """What the cached clusters give is what fitting k-means on the embeddings now gives."""
    from sklearn.cluster import KMeans

    ds, X = make_dataset(50, 6, missing=(3, 4))
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    props = _render(ds, {"mode": "size", "size": 12})
    shown = props["plots"].type.properties["classes"].view.data
    have = [i for i in range(50) if i not in (3, 4)]
    labels = KMeans(n_clusters=8, n_init=3, random_state=0).fit_predict(X[have].astype(float))
    by_id = dict(zip(np.array(ds.values("id"))[have], labels))
    kept = [by_id[i] for i in zcore.select_coreset(ds, size=12, method="topk").values("id")]
    full, sub = np.bincount(labels, minlength=8), np.bincount(kept, minlength=8)
    order = np.argsort(-full, kind="stable")
    assert shown[0]["x"] == [f"cluster {c}" for c in order]
    assert shown[0]["y"] == pytest.approx([100 * full[c] / len(have) for c in order])
    assert shown[1]["y"] == pytest.approx([100 * sub[c] / 12 for c in order])


def _tied(make_dataset):
    """60 samples whose ``zcore_score`` takes five values (ties everywhere), six unscored, and a
    view whose order is not the id order."""
    ds, _ = make_dataset(60, 4, labels=["cat", "dog", "dog", "bird"])
    rng = np.random.default_rng(3)
    values = [None if i % 10 == 0 else float(v) / 4 for i, v in enumerate(rng.integers(0, 5, 60))]
    ds.set_values("zcore_score", values)
    ds.set_values("zc_seed1", [float(v) for v in rng.integers(0, 3, 60)])
    return ds, ds.sort_by("filepath", reverse=True).skip(3)


@pytest.mark.parametrize(
    "mode, value",
    [("size", 1), ("size", 17), ("size", 1000), ("fraction", 0.33), ("threshold", 0.5)],
)
def test_kept_set_equals_select_coreset_with_ties(make_dataset, mode, value):
    ds, view = _tied(make_dataset)
    want = zcore.select_coreset(view, **{mode: value}, method="topk")
    sel = zp._Data(view).selection("zcore_score", mode, value)
    assert [i.decode() for i in sel.ids] == want.values("id")  # same samples, same order
    assert sel.scores.tolist() == want.values("zcore_score")
    assert sel.n_scored == view.exists("zcore_score").count()
    # what the panel shows, against the database's own counts of select_coreset's view
    props = _render(ds, {"mode": mode, mode: value, "compare_field": "zc_seed1"}, view=view)
    assert f"Kept: {want.count()} of {sel.n_scored}" in _md(props, "summary")
    counts = want.count_values("ground_truth.label")
    dist = props["plots"].type.properties["classes"].view.data[1]
    assert dist["y"] == pytest.approx([100 * counts.get(c, 0) / want.count() for c in dist["x"]])
    # the compared field is cut at the control's value (a count is at most the scored count)
    value = min(value, sel.n_scored) if mode == "size" else value
    other = zcore.select_coreset(view, score_field="zc_seed1", **{mode: value}, method="topk")
    both = len(set(want.values("id")) & set(other.values("id")))
    assert f"**Overlap: {both}** samples" in _md(props, "overlap_md")


def _summary(ds, view=None, state=None):
    return _md(_render(ds, state or {"mode": "size", "size": 10}, view=view), "summary")


def test_rescoring_is_seen(scored, reads):
    assert "cut at zcore_score >= " in _summary(scored)
    scored.set_values("zcore_score", [float(i) for i in range(60)])  # new scores: 59 .. 50 kept
    reads.clear()
    assert "Kept: 10 of 60** scored samples &nbsp; cut at zcore_score >= 50.0000" in _summary(
        scored
    )
    assert "zcore_score" in _read_fields(reads)
    # compute_zcore writes through its own writer (zcore.store): seen as well
    zcore.compute_zcore(scored, embeddings="embeddings", overwrite=True, **{**FAST, "seed": 5})
    want = zcore.select_coreset(scored, size=10, method="topk").values("zcore_score")
    assert f"cut at zcore_score >= {min(want):.4f}" in _summary(scored)


def test_tagging_is_seen(scored):
    view = scored.match_tags("keep")
    scored.take(20, seed=0).tag_samples("keep")
    assert "Kept: 10 of 20" in _summary(scored, view)
    scored.match_tags("keep", bool=False).take(15, seed=0).tag_samples("keep")
    assert "Kept: 10 of 35" in _summary(scored, view)
    scored.untag_samples("keep")
    assert "Kept: 0 of 0" in _summary(scored, view)


def test_added_and_deleted_samples_are_seen(scored):
    assert "Kept: 10 of 60" in _summary(scored)
    scored.add_samples(
        [fo.Sample(filepath=f"/tmp/zcore-test/new_{i}.jpg", zcore_score=2.0 + i) for i in range(5)]
    )
    assert "Kept: 10 of 65" in _summary(scored)
    assert "cut at zcore_score >= 2.0000" in _summary(scored, state={"mode": "size", "size": 5})
    scored.delete_samples(scored.limit(8))
    assert "Kept: 10 of 57" in _summary(scored)


def test_deleted_and_recreated_fields_are_seen(scored):
    props = _render(scored, {"compare_field": "zc_seed1"})
    assert "overlap_md" in props
    scored.delete_sample_field("zc_seed1")
    props = _render(scored, {"compare_field": "zc_seed1"})
    assert "compare_field" not in props and "overlap_md" not in props
    # the same field again, empty: nothing scored (not the cached scores)
    scored.delete_sample_field("zcore_score")
    scored.add_sample_field("zcore_score", fo.FloatField)
    assert "Kept: 0 of 0" in _summary(scored)
    scored.delete_sample_field("zcore_score")
    props = _render(scored, {})
    assert "No score field" in _md(props, "empty")


def test_new_runs_are_seen(scored):
    assert "zc_new" not in _md(_render(scored, {}), "runs_md")
    zcore.compute_zcore(scored, embeddings="embeddings", score_field="zc_new", **FAST)
    props = _render(scored, {"score_field": "zc_new"})
    assert "zc_new" in _md(props, "runs_md") and props["score_field"].type.values == [
        "zc_new",
        "zc_seed1",
        "zcore_score",
    ]
    scored.delete_run("zc_new")
    assert "zc_new" not in _md(_render(scored, {}), "runs_md")


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: ds.set_values("zcore_score", [0.5] * 60),
        lambda ds: ds.limit(3).tag_samples("x"),
        lambda ds: ds.add_sample(fo.Sample(filepath="/tmp/zcore-test/x.jpg")),
        lambda ds: ds.delete_samples(ds.limit(1)),
        lambda ds: ds.delete_sample_field("zc_seed1"),
        lambda ds: ds.delete_run("zc_seed1"),
    ],
    ids=["rescore", "tag", "add", "delete", "delete_field", "delete_run"],
)
def test_every_change_changes_the_stamp(scored, change):
    view = scored.skip(2)
    before = zp._stamp(view)
    assert zp._stamp(view) == before and zp._stamp(scored.skip(2)) == before
    change(scored)
    assert zp._stamp(view) != before
    # the view's identity does not depend on the stage objects (their uuids)
    assert zp._identity(scored.skip(2)) == zp._identity(view) != zp._identity(scored.skip(3))


def test_cache_is_bounded():
    cache = zp._Cache(entries=3, max_bytes=1000)
    for i in range(5):
        assert cache.get(("view", i), "stamp", lambda i=i: i) == i
    assert len(cache) == 3  # the least recently used went
    assert cache.get(("view", 4), "stamp", lambda: "again") == 4  # a hit
    assert cache.get(("view", 4), "new stamp", lambda: "again") == "again"  # a new stamp
    assert len(cache) == 3
    big = lambda: np.zeros(100)  # noqa: E731  (800 bytes)
    cache.get(("view", "a"), "s", big)
    cache.get(("view", "b"), "s", big)
    assert len(cache) == 1  # the bytes bound: only the newest is kept
    cache.get(("view", "c"), "s", lambda: np.zeros(1000))
    assert len(cache) == 1  # even alone over the bound, the newest is kept


# --- issue 14: save refusal, delegated operations, base view of the prompt, ranges, sliders ------


def test_default_view_name_is_free(scored):
    assert zp.free_view_name(scored) == "zcore_coreset"
    scored.save_view("zcore_coreset", scored.limit(3))
    scored.save_view("zcore_coreset_2", scored.limit(3))
    assert zp.free_view_name(scored) == "zcore_coreset_3"
    props = _render(scored, {})
    assert props["save_row"].type.properties["view_name"].default == "zcore_coreset_3"
    assert "overwrite" in props["save_row"].type.properties


def test_a_refused_save_is_shown_in_the_panel(scored):
    msg = "Not saved: a saved view named 'x' exists."
    props = _render(scored, {"save_error": msg})
    assert props["save_error"].view.label == msg


def test_score_range_and_default_threshold_follow_the_data():
    rng = np.random.default_rng(0)
    s = np.concatenate([[0.0, 1.0], rng.uniform(0.29, 0.37, 998)])  # min-max normalised
    lo, hi = zp.score_range(s)
    assert 0.28 < lo < 0.30 and 0.36 < hi < 0.38
    assert lo < zp.default_threshold(s) < hi
    assert zp.default_threshold(s) == pytest.approx(np.quantile(s, 0.9))
    data, layout = zp.histogram_plot(s, "f", cut=0.0)
    assert sum(data[0]["y"]) == 1000  # the outliers are counted in the end bins
    assert data[0]["y"][0] >= 1 and data[0]["y"][-1] >= 1
    assert layout["xaxis"]["range"] == pytest.approx([lo, hi])
    assert layout["shapes"][0]["x0"] == pytest.approx(lo)  # a cut below is drawn at the edge
    assert zp.score_range(np.array([0.5, 0.5])) == (0.0, 1.0)
    assert zp.score_range(np.zeros(0)) == (0.0, 1.0)


def test_sliders_show_few_digits_and_the_threshold_spans_the_scores(scored):
    for state, key, digits in (
        ({"mode": "fraction"}, "fraction", 2),
        ({"mode": "size"}, "size", 0),
        ({"mode": "threshold"}, "threshold", None),
    ):
        prop = _render(scored, state)[key]
        if digits is None:
            lo, hi = zp.score_range(np.array(scored.values("zcore_score")))
            digits = zp._digits((hi - lo) / 200)
        assert prop.view.to_json()["value_precision"] == digits
    s = np.array(scored.values("zcore_score"))
    prop = _render(scored, {"mode": "threshold"})["threshold"]
    slider = prop.view.to_json()["componentsProps"]["slider"]
    assert (slider["min"], slider["max"]) == pytest.approx(zp.score_range(s))
    assert slider["min"] <= prop.default <= slider["max"]
    assert zp._digits(0.01) == 2 and zp._digits(0.0004) == 4 and zp._digits(1) == 0


def test_panel_icon_is_a_material_icon_name():
    # the App drops a path icon of a Python panel in the "+" menu (no plugin name there)
    panel = zp.CoresetPanel()
    assert "/" not in panel.config.icon and "." not in panel.config.icon


def test_the_prompt_targets_the_panels_view(scored, triggers):
    kept = zcore.select_coreset(scored, size=7, method="topk")
    full = scored.view()
    assert zp.prompt_target(full, zp.selection_base(full)) == {}
    base = zp.selection_base(kept)
    assert zp.prompt_target(kept, base) == {"view_target": "DATASET"}
    sub = scored.match(F("ground_truth.label") != "bird")
    sub_kept = zcore.select_coreset(sub, size=7, method="topk")
    assert zp.prompt_target(sub_kept, zp.selection_base(sub_kept)) == {"set_view": True}
    # the button: the form opens on the dataset, with the panel's size
    params = {"__method__": "run_select", "panel_id": "test-panel"}
    params["panel_state"] = {"mode": "size", "size": 7}
    r = foo.execute_operator(PANEL, ctx={"dataset": scored, "view": kept, "params": params})
    assert r.error is None
    [prompt] = _sent(triggers, "prompt_user_for_operation")
    assert prompt["params"]["view_target"] == "DATASET" and prompt["params"]["size"] == 7
    # the form's target is then the panel's 60 samples, not the grid's 7
    ctx = ExecutionContext(
        request_params={
            "dataset_name": scored.name,
            "view": kept._serialize(),
            "params": prompt["params"],
        }
    )
    assert ctx.target_view().count() == 60


def test_delegated_operations_are_listed_with_progress(scored):
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    svc = DelegatedOperationService()
    params = {"embeddings": "embeddings", "score_field": "zc_later", "n_samples": 300}
    foo.execute_operator(
        zp.COMPUTE_URI, ctx={"dataset": scored, "params": params}, request_delegation=True
    )
    try:
        ops = zp.delegated_operations(scored.name)
        assert [r["name"] for r in ops] == ["compute_zcore → zc_later"]
        assert all(r["state"] == "queued" and r["queued_at"] for r in ops)
        comp = ops[0]
        svc.set_running(ObjectId(comp["id"]))
        svc.set_progress(ObjectId(comp["id"]), foo.executor.ExecutionProgress(0.4, "scoring"))
        ops = zp.delegated_operations(scored.name)
        comp = next(r for r in ops if r["operator"] == "compute_zcore")
        assert comp["state"] == "running" and comp["progress"] == pytest.approx(0.4)
        assert comp["label"] == "scoring"
        # the panel lists them, and the run in progress in the runs table
        props = _render(scored, {})
        assert "compute_zcore → zc_later" in _md(props, "ops_md")
        assert "running 40% (scoring)" in _md(props, "ops_md")
        assert "| zc_later | running 40% (scoring) |" in _md(props, "runs_md")
        assert "refresh" in props["ops_row"].type.properties
    finally:
        for r in zp.delegated_operations(scored.name, limit=100):
            svc.delete_operation(ObjectId(r["id"]))
    assert "None on this dataset" in _md(_render(scored, {}), "ops_md")


def test_a_selection_operation_is_named_by_its_field_and_size():
    from types import SimpleNamespace as NS

    from fiftyone.operators.executor import ExecutionContext as Ctx

    params = {"score_field": "zcore_score", "size_mode": "fraction", "fraction": 0.2}
    op = NS(
        id="x",
        operator=zp.SELECT_URI,
        context=Ctx(request_params={"params": params}),
        status=None,
        queued_at=None,
        scheduled_at=None,
        result=None,
        run_state="failed",
    )
    row = zp._op_row(op)
    assert row["name"] == "select_coreset on zcore_score, fraction 0.2"
    assert row["progress"] is None and row["state"] == "failed"
    assert zp.pending_runs([row]) == []


def test_refresh_reloads_the_dataset(scored, triggers):
    _call(scored, "refresh", {})
    assert _sent(triggers, "reload_dataset")


def test_the_panel_shows_the_recorded_evaluations(scored):
    props = _render(scored, {})
    assert "None yet" in _md(props, "eval_md") and "evaluation_key" not in props

    kw = {"label_field": "ground_truth", "embeddings": "embeddings", "prune": (0.5,), "seeds": 2}
    first = zcore.evaluate_coreset(scored, methods=("topk",), seed=0, run_key="eval_a", **kw)
    second = zcore.evaluate_coreset(scored, methods=("stratified",), seed=1, run_key="eval_b", **kw)
    props = _render(scored, {})
    # the newest by default: its table (the stored result's) and its plot (one line per method)
    md = _md(props, "eval_md")
    assert md.startswith("`eval_b`: labels `ground_truth`, embeddings `embeddings`")
    assert second.to_markdown() in md and first.to_markdown() not in md
    plot = props["eval_plot"].view
    assert [t["name"] for t in plot.data] == [t["name"] for t in second.plot_traces()]
    assert props["evaluation_key"].type.values == ["eval_a", "eval_b"]
    # choosing the other one shows it
    md = _md(_render(scored, {"evaluation_key": "eval_a"}), "eval_md")
    assert first.to_markdown() in md and md.startswith("`eval_a`")


# --- balance by a field, grow from tagged samples, write ranks (issue 15) ----------------------


def _balanced(ds, **kw):
    """select_coreset's balanced top-score selection with the panel's seed (recorded)."""
    view = zcore.select_coreset(
        ds, method="topk", balance_by="ground_truth", seed=zp.PANEL_SEED, run_key="ref", **kw
    )
    ds.delete_run("ref")
    return view.values("id")


@pytest.mark.parametrize("balance", ["proportional", "equal"])
@pytest.mark.parametrize("mode, value", [("fraction", 0.2), ("size", 7)])
def test_balanced_kept_set_equals_select_coreset(scored, mode, value, balance):
    s = zp.coreset_summary(
        scored, "zcore_score", mode, value, balance_by="ground_truth", balance=balance
    )
    want = _balanced(scored, balance=balance, **{mode: value})
    assert s["ids"] == want and s["kept"].values("id") == want
    labels = dict(zip(scored.values("id"), scored.values("ground_truth.label")))
    counts = {v: sum(labels[i] == v for i in want) for v in ("bird", "cat", "dog")}
    assert s["per_value"] == counts and s["cut"] is None
    if balance == "equal":  # 15 bird, 15 cat, 30 dog: equal quotas differ by at most one
        assert max(counts.values()) - min(counts.values()) <= 1
    assert "ref" not in scored.list_runs() and "coreset_panel" not in scored.list_runs()


def test_grown_kept_set_equals_select_coreset(scored):
    low = scored.sort_by("zcore_score").limit(3)  # the lowest scores: never kept by score
    low.tag_samples("labelled")
    s = zp.coreset_summary(scored, "zcore_score", "size", 10, tag="labelled")
    want = zcore.select_coreset(scored, size=10, method="topk", include="labelled", run_key="r")
    assert s["ids"] == want.values("id") and s["n_included"] == 3
    assert set(low.values("id")) <= set(s["ids"][:3]) and len(s["ids"]) == 10
    top7 = zcore.select_coreset(scored, size=7, method="topk").values("zcore_score")
    assert s["cut"] == pytest.approx(min(top7))  # the cut of the samples chosen by score
    with pytest.raises(ValueError, match="3 samples to include but the budget is 2"):
        zp.coreset_summary(scored, "zcore_score", "size", 2, tag="labelled")


def test_panel_renders_balance_and_grow_controls(scored):
    scored.take(2, seed=0).tag_samples("labelled")
    props = _render(scored, {"mode": "size", "size": 12, "balance_by": "ground_truth"})
    row = props["options_row"].type.properties
    assert set(row) == {"balance_by", "include_tag"} and "balance" in props
    assert [c.value for c in row["balance_by"].view.choices][:1] == [""]
    assert "ground_truth" in [c.value for c in row["balance_by"].view.choices]
    assert [c.value for c in row["include_tag"].view.choices] == ["", "labelled"]
    text = _md(props, "summary")
    assert "Kept: 12 of 60" in text and "Balanced over `ground_truth` (proportional)" in text
    assert "dog: 6" in text and "rank_row" not in props  # ranks do not combine with balance
    props = _render(scored, {"mode": "size", "size": 12, "include_tag": "labelled"})
    assert "2 of them already tagged 'labelled', 10 new" in _md(props, "summary")
    assert "rank_row" in props
    both = {"mode": "size", "size": 12, "include_tag": "labelled", "balance_by": "ground_truth"}
    props = _render(scored, both)
    assert "does not combine with Balance by" in props["error"].view.label
    # a threshold has no budget: the options are not offered, and the state's are not applied
    props = _render(scored, {**both, "mode": "threshold", "threshold": 0.5})
    assert "options_row" not in props and "take a budget" in _md(props, "options_md")
    n = zcore.select_coreset(scored, threshold=0.5, method="topk").count()
    assert f"Kept: {n} of 60" in _md(props, "summary")


def test_panel_saves_tags_and_ranks_balanced_and_grown_sets(scored, triggers):
    state = {"mode": "size", "size": 9, "balance_by": "ground_truth", "balance": "equal"}
    _call(scored, "save_view", {**state, "save_row": {"view_name": "bal9"}})
    want = _balanced(scored, size=9, balance="equal")
    assert scored.load_saved_view("bal9").values("id") == want
    info = scored.get_run_info(zp.PANEL_RUN_KEY).config
    assert info.balance_by == "ground_truth" and info.balance == "equal"
    assert info.seed == zp.PANEL_SEED
    # a second save replaces the panel's run record
    _call(scored, "save_view", {**state, "size": 12, "save_row": {"view_name": "bal12"}})
    assert scored.load_saved_view("bal12").count() == 12
    assert scored.list_runs().count(zp.PANEL_RUN_KEY) == 1
    # grow from a tag, tag the kept set, and write ranks
    first = scored.take(2, seed=1)
    first.tag_samples("labelled")
    grow = {"mode": "size", "size": 6, "include_tag": "labelled", "tag_row": {"tag": "next"}}
    _call(scored, "tag_kept", grow)
    ref = zcore.select_coreset(scored, size=6, method="topk", include="labelled", run_key="r")
    assert sorted(scored.match_tags("next").values("id")) == sorted(ref.values("id"))
    _call(scored, "write_ranks", {**grow, "rank_row": {"rank_field": "rank"}})
    ranked = scored.exists("rank").sort_by("rank")
    assert ranked.values("rank") == [1, 2, 3, 4, 5, 6]
    assert ranked.values("id") == ref.values("id")
    assert set(ranked.values("id")[:2]) == set(first.values("id"))
    # a budget below the tagged samples: refused, said, nothing written
    r = _call(scored, "tag_kept", {**grow, "size": 1, "tag_row": {"tag": "none"}})
    assert r.error is None and "none" not in scored.count_sample_tags()
    msgs = [str(p) for p in _sent(triggers, "notify") if "Not tagged" in str(p)]
    assert len(msgs) == 1 and "raise the budget" in msgs[0]


def test_a_shown_balanced_set_keeps_the_panel_on_its_view(scored, triggers):
    base = scored.match(F("ground_truth.label") != "bird")
    state = {"mode": "size", "size": 8, "balance_by": "ground_truth"}
    params = {"__method__": "show_kept", "panel_id": "test-panel", "panel_state": state}
    r = foo.execute_operator(PANEL, ctx={"dataset": scored, "view": base, "params": params})
    assert r.error is None
    [shown] = [p for uri, p in triggers if uri.endswith("set_view")]
    kept = fo.DatasetView._build(scored, shown["view"])
    assert kept.count() == 8
    # the panel remembers where the kept set came from (the App patches its state with it)
    [patch] = [p for uri, p in triggers if uri.endswith("patch_panel_state")]
    shown = patch["state"]["shown"]
    assert shown["kept"] == zp._identity(kept)[3]
    # while the grid shows the kept set, the panel still counts on the view it came from
    ctx_state = dict(state, shown=shown)
    props = _render(scored, ctx_state, view=kept)
    assert f"Kept: 8 of {base.count()}" in _md(props, "summary")
    # the form opened from the panel carries its balance
    state = {"mode": "size", "size": 8, "balance_by": "ground_truth", "balance": "equal"}
    _call(scored, "run_select", state)
    prompt = _sent(triggers, "prompt_user_for_operation")[-1]["params"]
    assert prompt["balance_by"] == "ground_truth" and prompt["balance"] == "equal"
