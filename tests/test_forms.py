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
        (
            {"size_mode": "threshold", "threshold": 1.5, "method": "topk"},
            "No score reaches 1.5 (the highest is 1.000): lower the threshold",
        ),
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


COMPUTE = f"{PLUGIN_NAME}/compute_zcore"


def test_compute_form_is_short_and_its_law_inputs_come_from_the_option_table(make_dataset):
    from zcore.core.config import LAW_OPTIONS

    ds, _ = make_dataset(40, 6)
    props = _form(ds, COMPUTE)
    assert "advanced" in props and not any(s.name in props for s in LAW_OPTIONS)
    props = _form(ds, COMPUTE, advanced=True)
    for spec in LAW_OPTIONS:
        assert props[spec.name].view.label == spec.label
        if spec.default is not None:
            assert props[spec.name].default == spec.default


def test_compute_form_defaults_to_a_free_score_field(make_dataset):
    ds, _ = make_dataset(40, 6)
    assert _form(ds, COMPUTE)["score_field"].default == "zcore_score"
    zcore.compute_zcore(ds, embeddings="embeddings", **FAST)
    props = _form(ds, COMPUTE)
    assert props["score_field"].default == "zcore_score_2" and not _invalid(props)
    props = _form(ds, COMPUTE, score_field="zcore_score")  # typed: overwrite must be ticked
    assert "tick overwrite" in _invalid(props)["score_field"]


def test_absurd_sampling_points_are_refused_before_execute(make_dataset):
    ds, _ = make_dataset(40, 6)
    with pytest.raises(ExecutionError, match="n_samples"):
        foo.get_operator(COMPUTE)(ds, embeddings="embeddings", n_samples=10**12)
    assert not ds.has_field("zcore_score") and ds.list_runs() == []


def test_schedule_is_the_default_choice_for_a_large_target(make_dataset, monkeypatch):
    import sys

    ds, _ = make_dataset(40, 6)
    op = foo.get_operator(COMPUTE)
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {}})
    assert op.resolve_execution_options(ctx).default_choice_to_delegated is False
    monkeypatch.setattr(sys.modules[type(op).__module__], "SCHEDULE_ABOVE", 40)
    options = op.resolve_execution_options(ctx)
    assert options.default_choice_to_delegated is True
    assert options.allow_immediate_execution and options.allow_delegated_execution
    props = op.resolve_input(ctx).type.properties  # this instance's module holds the patch
    assert "Schedule" in props["schedule_hint"].view.label
