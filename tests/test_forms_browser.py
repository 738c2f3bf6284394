"""The operator forms' checks as a user meets them in the real App (tests/browser/forms_test.mjs).

The dataset is what ``make demo`` leaves behind: 40 real images with embeddings, a ``zcore_score``
field, a saved ``zcore_coreset`` view, and an empty ``ground_truth.logits`` vector field; plus an
empty saved view. The browser opens both operators and reads what the form shows before Execute:
the default names (free ones), the messages, whether Execute is disabled, the dropdown choices.
Nothing is executed, and the test checks from Python that nothing was written.

The same checks run without a browser in tests/test_forms.py (``resolve_input``); this test shows
that the App renders them: an ``invalid`` property disables Execute, and the message is on screen.
"""

import pytest
from app_browser import BROWSER_MARKS, keep_screenshots, run_script, serve_app, textile_dataset

import zcore

SCREENSHOTS = (
    "forms_compute.png",
    "forms_model.png",
    "forms_points.png",
    "forms_taken_view.png",
    "forms_cluster_balanced.png",
    "forms_threshold.png",
    "forms_include_ranked.png",
    "forms_empty_view.png",
)
N = 40

pytestmark = BROWSER_MARKS


@pytest.fixture
def app(tmp_path):
    import fiftyone as fo
    from fiftyone import ViewField as F

    ds = textile_dataset("zcore-forms", N, 32)
    ds.add_sample_field("ground_truth.logits", fo.VectorField)  # declared, no values
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, n_samples=400, redund_nn=10)
    ds.save_view("zcore_coreset", zcore.select_coreset(ds, fraction=0.1, method="topk"))
    ds.save_view("empty", ds.match(F("ground_truth.label") == "no such label"))
    ds.limit(2).tag_samples("labelled")  # samples a user labelled already
    with serve_app(ds, tmp_path) as url:
        yield ds, url


def test_the_forms_catch_what_would_fail_before_execute(app, tmp_path):
    from zcore.core.kernels import compiled_cache_ready

    ds, url = app
    expect_hint = not compiled_cache_ready()  # the App server shares this checkout's cache
    before = (sorted(ds.list_saved_views()), sorted(ds.list_runs()), ds.count("zcore_score"))
    shots = tmp_path / "screenshots"
    r = run_script(
        "forms_test.mjs",
        shots,
        timeout=240,
        ZCORE_APP_URL=url,
        ZCORE_DATASET=ds.name,
        ZCORE_EMPTY_VIEW="empty",
    )
    assert r["page_errors"] == []

    # compute_zcore: a free score field (the form does not open in an error state) ...
    assert r["compute_score_field"] == "zcore_score_2"
    assert r["compute_execute_disabled"] is False
    # ... a short form: the essentials, the law and the machinery behind "Advanced options"
    labels = r["compute_labels"]
    assert "Advanced options" in labels
    for hidden in ("Sampling points", "Worker processes", "GPU device (optional)"):
        assert hidden not in labels
    assert len([x for x in labels if x in ("Embeddings field", "Embeddings")]) == 2  # no repeats
    # ... the compile notice exactly when the engine is not compiled yet
    assert r["compile_hint"] is expect_hint
    # ... only vector fields that have values (ground_truth.logits has none)
    assert r["embedding_choices"] == ["embeddings"]
    # the model dropdown and its list stay inside the dialog
    assert r["model_overflow"] == [0, 0] and r["model_choices"]
    # every law input explains itself; absurd sampling points disable Execute
    assert "How many embedding dimensions each random point is drawn in" in r["advanced_text"]
    assert r["points_error"] == "Value must be less than 100000000"
    assert r["points_execute_disabled"] is True

    # select_coreset: a free view name; a taken one is refused in the form; a fresh one is fine
    assert r["select_view_name"] == "zcore_coreset_2"
    assert r["select_execute_disabled"] is False
    assert r["fraction_label"] == "0.10"  # two digits, not 0.100000
    assert (
        "a saved view named 'zcore_coreset' exists; type another name, or tick 'Overwrite an "
        "existing saved view'" in r["taken_name_text"]
    )
    assert r["taken_name_execute_disabled"] is True
    assert r["fresh_name_execute_disabled"] is False
    # cluster_balanced previews its count, in words a user can act on (no docs path, no formula)
    cluster = r["cluster_text"]
    assert "of 40 scored samples will be kept (by Cluster-balanced)" in cluster
    assert "docs/" not in cluster and "sqrt" not in cluster
    # a threshold above every score: Execute disabled, the form says why
    assert "No score reaches 1.5 (the highest is 1.000): lower the threshold" in r["threshold_text"]
    assert r["threshold_execute_disabled"] is True

    # grow from the 2 tagged samples: the count says how many are new; ranked with a rank field
    assert "2 of them already tagged 'labelled', 2 new" in r["include_text"]
    assert r["include_execute_disabled"] is False
    assert "Write the rank to field" in r["ranked_text"] and r["ranked_execute_disabled"] is False
    # growing does not combine with balance_by: refused in the form
    assert "does not combine with Balance by" in r["include_balance_text"]
    assert r["include_balance_execute_disabled"] is True

    # an empty view: both forms disabled, the reason on screen without scrolling
    assert "The target has 0 sample(s); ZCore needs at least 3" in r["empty_text"]
    assert "for the 0 target samples" not in r["empty_text"]
    assert "Score field" not in r["empty_text"]  # nothing else to fill in
    assert r["empty_execute_disabled"] is True and r["empty_reason_visible"] is True
    assert "No sample of the target has a 'zcore_score' score" in r["empty_select_text"]
    assert r["empty_select_execute_disabled"] is True

    # nothing was executed, so nothing was written
    ds.reload()
    after = (sorted(ds.list_saved_views()), sorted(ds.list_runs()), ds.count("zcore_score"))
    assert after == before
    assert "zcore_score_2" not in ds.get_field_schema()

    keep_screenshots(shots, SCREENSHOTS)
