"""The operator forms catch what they can before Execute (issue 14): real FiftyOne, the real
plugin registry; ``resolve_input`` is what the App calls on every change of the form, and an
invalid property disables Execute and Schedule and refuses programmatic calls."""

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from conftest import PLUGIN_NAME
from fiftyone.operators.executor import ExecutionContext, ExecutionError

import zcore

SELECT = f"{PLUGIN_NAME}/select_coreset"
FAST = {"n_samples": 300, "redund_nn": 10, "seed": 0}


def _form(ds, op_uri=SELECT, view=None, **params):
    request = {"dataset_name": ds.name, "params": params}
    if view is not None:
        request["view"] = view._serialize()
        request["params"] = {"view_target": "CURRENT_VIEW", **params}
    ctx = ExecutionContext(request_params=request)
    return foo.get_operator(op_uri).resolve_input(ctx).type.properties


def _invalid(props):
    return {name: p.error_message for name, p in props.items() if p.invalid}


@pytest.fixture
def scored(make_dataset):
    ds, _ = make_dataset(40, 6)
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    return ds


def test_default_view_name_is_free_and_a_taken_name_disables_execute(scored):
    props = _form(scored, size_mode="size", size=5)
    assert props["view_name"].default == "zcore_coreset" and not _invalid(props)
    scored.save_view("zcore_coreset", scored.limit(2))
    props = _form(scored, size_mode="size", size=5)
    assert props["view_name"].default == "zcore_coreset_2" and not _invalid(props)
    props = _form(scored, size_mode="size", size=5, view_name="zcore_coreset")
    assert "exists" in _invalid(props)["view_name"]
    assert not _invalid(
        _form(scored, size_mode="size", size=5, view_name="zcore_coreset", overwrite=True)
    )
    with pytest.raises(ExecutionError, match="'zcore_coreset' exists"):
        foo.get_operator(SELECT)(scored, size=5, method="topk", view_name="zcore_coreset")
    assert len(scored.load_saved_view("zcore_coreset")) == 2


def test_an_unscored_target_disables_execute(scored):
    empty = scored.match(fo.ViewField("zcore_score") < -1)
    props = _form(scored, view=empty, size_mode="size", size=5)
    assert "compute the scores first" in _invalid(props)["no_scored"]
    assert "method" not in props  # nothing else to fill in
    with pytest.raises(ExecutionError, match="no_scored"):
        foo.get_operator(SELECT)(empty, size=5)


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"size_mode": "threshold", "threshold": 1.5, "method": "topk"}, "keeps no sample"),
        ({"size_mode": "size", "size": 0, "method": "topk"}, "keeps no sample"),
        ({"size_mode": "threshold", "threshold": 0.5, "method": "cluster_balanced"}, "Top scores"),
    ],
)
def test_a_request_that_cannot_run_disables_execute(scored, params, reason):
    props = _form(scored, **params)
    assert reason in _invalid(props)["preview"]
    assert scored.list_saved_views() == []


def test_every_method_previews_its_count(scored):
    for method in ("stratified", "typiclust", "prototypicality"):
        label = _form(scored, size_mode="fraction", fraction=0.25, method=method)[
            "preview"
        ].view.label
        assert label.startswith("10 of 40 scored samples will be kept (by "), label
    assert _form(scored, size_mode="size", size=4, method="target")[
        "preview"
    ].view.label.startswith("Up to 4 of 40")


def test_an_empty_vector_field_is_not_offered_as_embeddings(scored):
    scored.add_sample_field("logits", fo.VectorField)  # declared, no values
    props = _form(scored, size_mode="size", size=5, method="cluster_balanced")
    assert props["embeddings"].type.values == ["embeddings"]
