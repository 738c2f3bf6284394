"""select_coreset(balance_by=...): quotas per value of a field, the method inside each value
(issue 15, item 3). Core on arrays, glue and operator on real FiftyOne."""

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from conftest import PLUGIN_NAME
from fiftyone.operators.executor import ExecutionContext, ExecutionError

import zcore
from zcore.core import methods as M

FAST = {"n_samples": 500, "redund_nn": 10, "seed": 0}
SELECT = f"{PLUGIN_NAME}/select_coreset"


def _groups(sizes):
    return np.concatenate([np.full(n, g) for g, n in enumerate(sizes)]).astype(np.int64)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    g = _groups([200, 30, 10])
    return rng.normal(size=(len(g), 8)).astype(np.float32), rng.random(len(g)), g


@pytest.mark.parametrize(
    "quota, n_keep, want",
    [
        ("proportional", 24, [20, 3, 1]),  # 200:30:10 of 24 (largest remainders)
        ("equal", 30, [10, 10, 10]),
        ("equal", 60, [25, 25, 10]),  # the small group's unused quota goes to the others
    ],
)
def test_quotas_per_group(arrays, quota, n_keep, want):
    X, s, g = arrays
    for method in ("topk", "cluster_balanced", "typiclust"):
        idx = M.select_balanced(method, n_keep, g, quota=quota, scores=s, embeddings=X, seed=0)
        assert len(set(idx.tolist())) == len(idx) == n_keep
        assert np.bincount(g[idx], minlength=3).tolist() == want, method


def test_inside_each_group_the_method_chooses(arrays):
    X, s, g = arrays
    idx = M.select_balanced("topk", 30, g, quota="equal", scores=s, seed=0)
    for grp in range(3):
        members = np.flatnonzero(g == grp)
        best = members[np.argsort(-s[members], kind="stable")[:10]]
        assert sorted(idx[g[idx] == grp].tolist()) == sorted(best.tolist())
    assert np.all(np.diff(s[idx]) <= 0)  # an ordered method comes back best first


def test_rows_without_a_group_or_score_are_never_kept(arrays):
    X, s, g = arrays
    g = g.copy()
    g[:50] = -1
    s = s.copy()
    s[50:60] = np.nan
    idx = M.select_balanced("cluster_balanced", 40, g, scores=s, embeddings=X, seed=1)
    assert not np.any(g[idx] == -1) and not np.any(np.isnan(s[idx]))


def test_same_seed_same_selection(arrays):
    X, s, g = arrays
    a = M.select_balanced("cluster_balanced", 30, g, scores=s, embeddings=X, seed=3)
    b = M.select_balanced("cluster_balanced", 30, g, scores=s, embeddings=X, seed=3)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_keep": 2}, "at least one sample per group"),
        ({"quota": "half"}, "quota must be one of"),
        ({"groups": np.zeros(240)}, "1-d int array"),
        ({"bogus": 1}, "has no option"),
    ],
)
def test_bad_requests(arrays, kwargs, match):
    X, s, g = arrays
    call = {"n_keep": 30, "groups": g, "scores": s, "embeddings": X, **kwargs}
    with pytest.raises(ValueError, match=match):
        M.select_balanced("cluster_balanced", **call)


# --- FiftyOne --------------------------------------------------------------------------------


@pytest.fixture
def labelled():
    rng = np.random.default_rng(0)
    labels = ["cat"] * 60 + ["dog"] * 15 + ["owl"] * 5 + [None] * 5
    ds = fo.Dataset()
    ds.add_samples(
        fo.Sample(
            filepath=f"/tmp/zcore-test/b_{i}.jpg",
            emb=rng.normal(size=8).astype(np.float32),
            ground_truth=None if lab is None else fo.Classification(label=lab),
            shift=i % 4,
        )
        for i, lab in enumerate(labels)
    )
    zcore.compute_zcore(ds, embeddings="emb", **FAST)
    yield ds
    ds.delete()


def test_balance_by_a_label_field_is_recorded(labelled):
    view = zcore.select_coreset(labelled, size=15, balance_by="ground_truth", balance="equal")
    assert view.count_values("ground_truth.label") == {"cat": 5, "dog": 5, "owl": 5}
    info = labelled.get_run_info("coreset_auto").config
    assert info.balance_by == "ground_truth" and info.balance == "equal"
    results = labelled.load_run_results("coreset_auto")
    assert results.kept_per_value == {"cat": 5, "dog": 5, "owl": 5}


def test_balance_by_an_int_field_with_topk(labelled):
    view = zcore.select_coreset(
        labelled, size=8, method="topk", balance_by="shift", balance="equal"
    )
    assert view.count_values("shift") == {0: 2, 1: 2, 2: 2, 3: 2}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"balance_by": "nope"}, "not found; fields to balance by"),
        ({"balance_by": "emb"}, "is a VectorField"),
        ({"balance_by": "filepath"}, "is a StringField"),
        ({"balance_by": "ground_truth", "size": 2}, "at least one sample per group"),
        ({"balance_by": "ground_truth", "balance": "half"}, "balance must be one of"),
        ({"balance_by": "shift", "threshold": 0.5, "size": None}, "threshold applies"),
    ],
)
def test_bad_balance_requests_write_nothing(labelled, kwargs, match):
    runs = labelled.list_runs()
    with pytest.raises(ValueError, match=match):
        zcore.select_coreset(labelled, **{"size": 10, **kwargs})
    assert labelled.list_runs() == runs and labelled.list_saved_views() == []


def test_operator_form_offers_balance_and_refuses_too_many_values(labelled):
    op = foo.get_operator(SELECT)

    def form(**params):
        ctx = ExecutionContext(request_params={"dataset_name": labelled.name, "params": params})
        return op.resolve_input(ctx).type.properties

    props = form(size_mode="size", size=10)
    assert (
        "ground_truth" in props["balance_by"].type.values
        and "emb" not in props["balance_by"].type.values
    )
    props = form(size_mode="size", size=2, balance_by="ground_truth")
    assert "has 3 values" in props["balance_by"].error_message and props["balance_by"].invalid
    result = op(labelled, size=9, balance_by="ground_truth", balance="equal", view_name="bal")
    assert result.result["count"] == 9
    assert labelled.load_saved_view("bal").count_values("ground_truth.label") == {
        "cat": 3,
        "dog": 3,
        "owl": 3,
    }
    with pytest.raises(ExecutionError, match="balance_by"):
        op(labelled, size=2, balance_by="ground_truth")
