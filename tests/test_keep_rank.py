"""select_coreset(include=..., ranked=..., rank_field=...): grow a coreset from samples already in
it, and the order samples enter it as the budget grows (issue 15, items 2 and 4). Core on arrays
against the method run at several sizes (the oracle), glue on real FiftyOne."""

import fiftyone as fo
import numpy as np
import pytest

import zcore
from zcore.core import methods as M
from zcore.core.registry import INCLUDE_MODES, RANKING_MODES, get_spec, method_names

FAST = {"n_samples": 500, "redund_nn": 10, "seed": 0}
METHODS = [m for m in method_names() if m != "target"]


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 8)).astype(np.float32)
    s = rng.random(240)
    s[:10] = np.nan
    return X, s


def test_every_method_declares_include_and_ranking():
    for name in method_names():
        spec = get_spec(name)
        assert spec.include in INCLUDE_MODES and spec.ranking in RANKING_MODES, name
        assert spec.include_help and spec.ranking_help
        assert "{" not in spec.include_help  # the quota words are filled in with its region
        if spec.include == "quota":
            assert f"their {spec.region}'s share" in spec.include_help
    assert get_spec("stratified").region == "score stratum"
    assert get_spec("topk").ranking == "exact"


@pytest.mark.parametrize("method", METHODS)
def test_include_is_kept_and_counts_against_the_budget(arrays, method):
    X, s = arrays
    inc = np.array([50, 12, 200, 3])  # row 3 has no score: included all the same
    got = M.select(method, 30, scores=s, embeddings=X, seed=4, include=inc)
    assert got[:4].tolist() == inc.tolist() and len(got) == len(set(got.tolist())) == 30
    assert not np.isnan(s[got[4:]]).any()


@pytest.mark.parametrize("method", [m for m in METHODS if get_spec(m).include == "fill"])
def test_fill_methods_select_the_rest_among_the_others(arrays, method):
    X, s = arrays
    inc = np.array([50, 12, 200])
    got = M.select(method, 30, scores=s, embeddings=X, seed=4, include=inc)
    # oracle: the method run on the pool without the included rows, for the remaining budget
    rest = np.setdiff1d(np.arange(240), inc)
    want = rest[M.select(method, 27, scores=s[rest], embeddings=X[rest], seed=4)]
    assert sorted(got[3:].tolist()) == sorted(want.tolist())


def test_topk_ranked_every_prefix_is_the_topk_of_its_size(arrays):
    X, s = arrays
    order = M.select("topk", 60, scores=s, ranked=True)
    for m in (1, 7, 30, 60):
        assert set(order[:m].tolist()) == set(M.select("topk", m, scores=s).tolist())
    order = M.select("topk", 20, scores=s, ranked=True, include=[3, 40])
    assert order[:2].tolist() == [3, 40]
    assert set(order[:9].tolist()) == {3, 40} | set(
        M.select("topk", 9, scores=s, include=[3, 40]).tolist()
    )


@pytest.mark.parametrize("method", ["cluster_balanced", "stratified", "typiclust", "semdedup"])
def test_nested_ranking_prefixes_are_the_method_at_each_size(arrays, method):
    X, s = arrays
    order = M.select(method, 40, scores=s, embeddings=X, seed=2, ranked=True)
    assert len(order) == len(set(order.tolist())) == 40
    sizes = M.rank_sizes(40)
    assert sizes == [1, 2, 3, 5, 10, 20, 40]
    # the first prefix is the method's own coreset of that size; each next one, the method of
    # that size grown from the prefix before (include=), run with the same seed
    prev = np.empty(0, dtype=np.int64)
    for m in sizes:
        want = M.select(method, m, scores=s, embeddings=X, seed=2, include=prev)
        assert set(order[:m].tolist()) == set(want.tolist()), (method, m)
        prev = order[:m]
    first = M.select(method, 5, scores=s, embeddings=X, seed=2, ranked=True)
    assert set(first[:1].tolist()) == set(M.select(method, 1, scores=s, embeddings=X, seed=2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"include": [1, 1]}, "repeats rows"),
        ({"include": [999]}, "outside 0..239"),
        ({"include": list(range(20, 60))}, "raise the budget to at least 40"),
        ({"include": list(range(20, 60)), "ranked": True}, "raise the budget to at least 40"),
        ({"include": np.array([0.5])}, "row indices"),
    ],
)
def test_bad_core_requests(arrays, kwargs, match):
    X, s = arrays
    with pytest.raises(ValueError, match=match):
        M.select("cluster_balanced", 30, scores=s, embeddings=X, seed=0, **kwargs)


# --- FiftyOne --------------------------------------------------------------------------------


@pytest.fixture
def ds():
    rng = np.random.default_rng(0)
    d = fo.Dataset()
    d.add_samples(
        fo.Sample(
            filepath=f"/tmp/zcore-test/k_{i}.jpg",
            emb=rng.normal(size=8).astype(np.float32),
            label=f"v{i % 3}",
            tags=["labelled"] if i % 10 == 0 else [],
        )
        for i in range(80)
    )
    zcore.compute_zcore(d, embeddings="emb", **FAST)
    yield d
    d.delete()


def test_include_a_tag_is_kept_and_recorded(ds):
    tagged = set(ds.match_tags("labelled").values("id"))
    view = zcore.select_coreset(ds, size=20, embeddings="emb", include="labelled", seed=1)
    assert len(view) == 20 and tagged <= set(view.values("id"))
    cfg = ds.get_run_info("coreset_auto").config
    assert cfg.include == "tag:labelled" and cfg.include_count == 8 and cfg.ranked is False


def test_include_a_view_or_ids_with_topk(ds):
    some = ds.skip(5).limit(4)
    view = zcore.select_coreset(ds, size=10, method="topk", include=some)
    assert set(some.values("id")) <= set(view.values("id")) and len(view) == 10
    by_ids = zcore.select_coreset(
        ds, size=10, method="topk", include=some.values("id"), overwrite=True
    )
    assert by_ids.values("id") == view.values("id")


def test_rank_field_holds_the_order_and_unselected_get_none(ds):
    view = zcore.select_coreset(ds, size=12, method="topk", rank_field="zrank", include="labelled")
    ids = view.values("id")
    assert view.values("zrank") == list(range(1, 13))  # the view comes in rank order
    assert set(ids[:8]) == set(ds.match_tags("labelled").values("id"))
    scores = dict(zip(ds.values("id"), ds.values("zcore_score")))
    rest = [scores[i] for i in ids[8:]]
    assert rest == sorted(rest, reverse=True)  # topk: then the best scores, best first
    assert ds.count("zrank") == 12 and len(ds.exists("zrank", False)) == 68
    assert ds.get_run_info("coreset_topk").config.rank_field == "zrank"


def test_ranked_prefix_is_the_coreset_grown_by_the_method(ds):
    view = zcore.select_coreset(ds, size=8, embeddings="emb", ranked=True, seed=3)
    ids = view.values("id")
    alone = zcore.select_coreset(ds, size=1, embeddings="emb", seed=3, run_key="alone")
    assert ids[:1] == alone.values("id")  # sizes 1, 2, 4, 8: the first is the plain coreset
    grown = zcore.select_coreset(
        ds, size=4, embeddings="emb", seed=3, include=ids[:2], run_key="grown"
    )
    assert set(ids[:4]) == set(grown.values("id"))  # the next, grown from the prefix before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"include": "nope"}, "has the tag 'nope'"),
        ({"include": ["000000000000000000000000"]}, "not in the collection"),
        ({"include": "dup"}, None),
        ({"include": "labelled", "size": 5}, "raise the budget to at least 8"),
        ({"include": "labelled", "size": None, "threshold": 0.1}, "pass size or fraction"),
        ({"include": "labelled", "balance_by": "label"}, "do not combine with balance_by"),
        ({"rank_field": "label"}, "exists as a StringField"),
        ({"rank_field": "a.b"}, "top-level field name"),
        ({"include": 3}, "a view, a sample tag or a list of sample ids"),
    ],
)
def test_bad_requests_write_nothing(ds, kwargs, match):
    if kwargs.get("include") == "dup":
        i = ds.first().id
        kwargs, match = {"include": [i, i]}, "repeats 1 sample ids"
    before = (ds.list_runs(), ds.list_saved_views(), sorted(ds.get_field_schema()))
    with pytest.raises(ValueError, match=match):
        zcore.select_coreset(ds, **{"size": 10, "embeddings": "emb", "rank_field": "r", **kwargs})
    after = (ds.list_runs(), ds.list_saved_views(), sorted(ds.get_field_schema()))
    assert after == before


def test_include_a_view_of_another_dataset_is_refused(ds):
    other = fo.Dataset()
    other.add_sample(fo.Sample(filepath="/tmp/zcore-test/o.jpg"))
    try:
        with pytest.raises(ValueError, match="another dataset"):
            zcore.select_coreset(ds, size=10, method="topk", include=other.view())
        assert "coreset_topk" not in ds.list_runs()
    finally:
        other.delete()


# --- operator form ---------------------------------------------------------------------------


def _form(ds, view=None, **params):
    import fiftyone.operators as foo
    from conftest import PLUGIN_NAME
    from fiftyone.operators.executor import ExecutionContext

    op = foo.get_operator(f"{PLUGIN_NAME}/select_coreset")
    request = {"dataset_name": ds.name, "params": params}
    if view is not None:
        request.update(view=view._serialize(), params=dict(params, view_target="CURRENT_VIEW"))
    ctx = ExecutionContext(request_params=request)
    return op.resolve_input(ctx).type.properties


def test_form_offers_the_tags_and_counts_the_included(ds):
    props = _form(ds, size_mode="size", size=20, embeddings="emb")
    assert props["include_tag"].type.values == ["labelled"] and "rank_field" not in props
    # the help is the method's spec's (the default method grows by cluster quota)
    help_ = props["include_tag"].view.description
    assert help_ == f"Samples with this tag: {get_spec('auto').include_help}"
    assert "share of the budget" in help_
    props = _form(ds, size_mode="size", size=20, embeddings="emb", include_tag="labelled")
    assert not props["include_tag"].invalid
    assert props["include_preview"].view.label == "8 of them already tagged 'labelled', 12 new"
    assert "20 of 80" in props["preview"].view.label
    props = _form(ds, size_mode="threshold", threshold=0.1)
    assert "include_tag" not in props and "ranked" not in props


@pytest.mark.parametrize(
    "params, prop, match",
    [
        ({"size": 5, "include_tag": "labelled"}, "include_tag", "keep at least 8"),
        (
            {"size": 20, "include_tag": "labelled", "balance_by": "label"},
            "include_tag",
            "does not combine with Balance by",
        ),
        ({"size": 20, "ranked": True, "rank_field": "label"}, "rank_field", "StringField"),
    ],
)
def test_form_marks_bad_include_and_rank_field(ds, params, prop, match):
    props = _form(ds, size_mode="size", embeddings="emb", **params)
    assert props[prop].invalid and match in props[prop].error_message


def test_operator_grows_from_a_tag_and_writes_the_rank(ds):
    import fiftyone.operators as foo
    from conftest import PLUGIN_NAME
    from fiftyone.operators.executor import ExecutionError

    op = foo.get_operator(f"{PLUGIN_NAME}/select_coreset")
    result = op(
        ds,
        size=15,
        method="topk",
        include_tag="labelled",
        ranked=True,
        rank_field="zrank",
        view_name="grown",
    )
    assert result.result["count"] == 15
    saved = ds.load_saved_view("grown")
    assert set(ds.match_tags("labelled").values("id")) <= set(saved.values("id"))
    assert sorted(saved.values("zrank")) == list(range(1, 16)) and ds.count("zrank") == 15
    runs = ds.list_runs()
    with pytest.raises(ExecutionError, match="keep at least 8"):
        op(ds, size=4, method="topk", include_tag="labelled", view_name="small")
    assert ds.list_runs() == runs and "small" not in ds.list_saved_views()


def test_cluster_balanced_included_rows_fill_their_clusters_quota():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 50)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    s = rng.random(200)
    kw = dict(scores=s, embeddings=X, seed=0, labels=labels, quota="equal", keep="high")
    plain = M.select("cluster_balanced", 20, **kw)
    assert np.bincount(labels[plain]).tolist() == [5, 5, 5, 5]
    three = np.array([0, 1, 2])  # cluster 0: 3 of its 5 are in already
    got = M.select("cluster_balanced", 20, include=three, **kw)
    assert got[:3].tolist() == [0, 1, 2] and np.bincount(labels[got]).tolist() == [5, 5, 5, 5]
    others = np.arange(3, 50)
    best = others[np.argsort(-s[others], kind="stable")[:2]]
    assert sorted(got[3:][labels[got[3:]] == 0].tolist()) == sorted(best.tolist())
    eight = np.arange(8)  # cluster 0 over its quota: the other 12 go to the clusters lacking
    got = M.select("cluster_balanced", 20, include=eight, **kw)
    assert np.bincount(labels[got]).tolist() == [8, 4, 4, 4]
    # the default method (an alias of cluster_balanced) grows the same way
    got = M.select("auto", 20, scores=s, embeddings=X, seed=0, include=eight)
    assert got[:8].tolist() == list(range(8)) and len(set(got.tolist())) == 20


def test_stratified_included_rows_fill_their_stratums_quota():
    # 4 score strata of 50 rows each (scores 0-0.2, 0.25-0.45, 0.5-0.7, 0.75-0.95)
    s = np.repeat([0.0, 0.25, 0.5, 0.75], 50) + np.tile(np.linspace(0, 0.2, 50), 4)
    kw = dict(scores=s, seed=0, n_strata=4)
    stratum = np.minimum((s / s.max() * 4).astype(int), 3)
    assert np.bincount(stratum).tolist() == [50, 50, 50, 50]
    plain = M.select("stratified", 20, **kw)
    assert np.bincount(stratum[plain]).tolist() == [5, 5, 5, 5]
    three = np.array([60, 61, 62])  # stratum 1: 3 of its 5 are in already
    got = M.select("stratified", 20, include=three, **kw)
    assert got[:3].tolist() == [60, 61, 62] and np.bincount(stratum[got]).tolist() == [5, 5, 5, 5]
    eight = np.arange(8)  # stratum 0 over its quota: the other 12 go to the strata lacking
    got = M.select("stratified", 20, include=eight, **kw)
    assert np.bincount(stratum[got]).tolist() == [8, 4, 4, 4]
    # an included row is never dropped by beta (here: the lowest 30% of the scores)
    low = np.array([0, 1])
    got = M.select("stratified", 20, include=low, beta=0.3, **kw)
    assert got[:2].tolist() == [0, 1] and (s[got[2:]] >= np.sort(s)[60]).all()
    # the same include, the same seed: the same rows; a row without a score counts only
    s2 = s.copy()
    s2[5] = np.nan
    got = M.select("stratified", 20, scores=s2, seed=0, n_strata=4, include=np.array([5]))
    assert got[0] == 5 and len(set(got.tolist())) == 20 and not np.isnan(s2[got[1:]]).any()


def test_hierarchical_kmeans_included_rows_fill_their_leafs_quota():
    rng = np.random.default_rng(3)
    centres = 40.0 * np.eye(4, 6)
    X = np.repeat(centres, 50, axis=0) + rng.normal(size=(200, 6))  # 4 far-apart blobs
    blob = np.repeat(np.arange(4), 50)
    kw = dict(embeddings=X.astype(np.float32), seed=0, levels=(4,))
    plain = M.select("hierarchical_kmeans", 20, **kw)
    assert np.bincount(blob[plain]).tolist() == [5, 5, 5, 5]
    three = np.array([0, 1, 2])  # blob 0: 3 of its 5 are in already
    got = M.select("hierarchical_kmeans", 20, include=three, **kw)
    assert got[:3].tolist() == [0, 1, 2] and np.bincount(blob[got]).tolist() == [5, 5, 5, 5]
    eight = np.arange(8)  # blob 0 over its quota: the other 12 go to the blobs lacking
    got = M.select("hierarchical_kmeans", 20, include=eight, **kw)
    assert np.bincount(blob[got]).tolist() == [8, 4, 4, 4] and len(set(got.tolist())) == 20
    # the whole budget included: nothing else
    got = M.select("hierarchical_kmeans", 8, include=eight, **kw)
    assert got.tolist() == eight.tolist()


def test_semdedup_does_not_add_duplicates_of_included_rows():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X[150:] = X[:150] + 1e-3 * rng.normal(size=(150, 16)).astype(np.float32)  # 150 twin pairs
    twins = np.arange(150, 300)
    inc = np.arange(40)  # one of each of 40 pairs is in already: their twins are duplicates
    for seed in range(3):
        got = M.select("semdedup", 100, embeddings=X, seed=seed, include=inc)
        assert got[:40].tolist() == inc.tolist() and len(set(got.tolist())) == 100
        new = got[40:]
        assert not np.isin(new, twins[:40]).any()  # no twin of an included row
        pair = np.where(new >= 150, new - 150, new)
        assert len(set(pair.tolist())) == len(new)  # and no pair twice among the new ones
    # filling the rest from a pool without the included rows (the "fill" rule) adds their twins
    rest = np.setdiff1d(np.arange(300), inc)
    fill = rest[M.select("semdedup", 60, embeddings=X[rest], seed=0)]
    assert np.isin(fill, twins[:40]).any()
    # the budget is small: the relaxed rule still never repeats the included rows
    got = M.select("semdedup", 250, embeddings=X, seed=0, include=inc)
    assert got[:40].tolist() == inc.tolist() and len(set(got.tolist())) == 250


def test_form_and_operator_grow_from_a_saved_view(ds):
    import fiftyone.operators as foo
    from conftest import PLUGIN_NAME

    ds.save_view("seen", ds.limit(6))
    props = _form(ds, size_mode="size", size=20, embeddings="emb", include_view="seen")
    assert props["include_preview"].view.label == "6 of them already in the view 'seen', 14 new"
    props = _form(ds, size_mode="size", size=4, embeddings="emb", include_view="seen")
    assert (
        props["include_view"].invalid and "keep at least 6" in props["include_view"].error_message
    )
    props = _form(ds, size_mode="size", size=20, include_view="seen", include_tag="labelled")
    assert props["include_view"].invalid and "not both" in props["include_view"].error_message
    # a target without some of the view's samples: select_coreset's own message, in the form
    props = _form(ds, ds.skip(3), size_mode="size", size=20, embeddings="emb", include_view="seen")
    msg = props["include_view"].error_message
    assert props["include_view"].invalid and msg.startswith("3 samples to include are not in")
    assert msg.endswith("or grow from another view")
    with pytest.raises(ValueError, match="3 samples to include are not in the collection"):
        zcore.select_coreset(ds.skip(3), size=20, method="topk", include=ds.load_saved_view("seen"))
    op = foo.get_operator(f"{PLUGIN_NAME}/select_coreset")
    result = op(ds, size=10, method="topk", include_view="seen", view_name="from_seen")
    assert result.result["count"] == 10
    assert set(ds.limit(6).values("id")) <= set(ds.load_saved_view("from_seen").values("id"))
    assert ds.get_run_info("coreset_topk").config.include == "<view>"


def test_typiclust_included_rows_count_as_chosen_in_their_cluster():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 50)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    plain = M.select("typiclust", 8, embeddings=X, seed=0, labels=labels)
    assert np.bincount(labels[plain]).tolist() == [2, 2, 2, 2]
    # 3 of cluster 0 are in: the least covered clusters (1, 2, 3, then 1, 2) give the rest
    got = M.select("typiclust", 8, embeddings=X, seed=0, labels=labels, include=[0, 1, 2])
    assert got[:3].tolist() == [0, 1, 2] and np.bincount(labels[got]).tolist() == [3, 2, 2, 1]
    # the new ones are each cluster's most typical, as without include
    assert set(got[3:].tolist()) <= set(
        M.select("typiclust", 12, embeddings=X, seed=0, labels=labels).tolist()
    )


@pytest.mark.parametrize("method", ["topk", "cluster_balanced", "typiclust", "stratified"])
def test_near_duplicates_of_an_included_row_are_not_kept(arrays, method):
    X, s = arrays
    X = X.copy()
    s = np.where(np.isnan(s), 0.5, s)
    X[21] = X[20]  # a twin of the included row 20 ...
    s[21] = 10.0  # ... with the best score: topk would keep it
    X[31] = X[30]  # a pair among the others: one of them at most
    got, dups = M.select(
        method,
        40,
        scores=s,
        embeddings=X,
        seed=0,
        include=[20],
        dedup_threshold=0.01,
        return_duplicates=True,
    )
    assert got[0] == 20 and 21 not in got.tolist() and not {30, 31} <= set(got.tolist())
    assert dups.n_groups == 2 and len(got) == 40
