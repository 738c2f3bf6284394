"""The Coreset panel in the real FiftyOne App, driven by headless chromium
(tests/browser/panel_test.mjs).

A dataset of 40 real textile images (``conformal_clip_data``) with pixel embeddings (16x16 grey
levels of each JPG) and two ZCore score fields is served by a real App (as in
test_app_browser.py). The browser opens the "ZCore: coreset" panel, switches to keep-by-count,
moves the slider, reads the count the panel shows, saves the kept set as a view and compares the
two score fields. The count shown must equal ``select_coreset``'s, and the saved view must hold
exactly ``select_coreset``'s samples.

Needs ``make browser-deps``; skipped otherwise. ``ZCORE_UPDATE_SCREENSHOTS=1`` copies the
screenshot to ``assets/app_panel.png``.
"""

import numpy as np
import pytest
from app_browser import BROWSER_MARKS, keep_screenshots, run_script, serve_app, textile_files

import zcore
from zcore import panel as zp

N = 40
VIEW_NAME = "panel_coreset"
TAKEN = "taken"  # a saved view that exists before: the panel must refuse to replace it
TAG = "labelled"  # samples tagged before: the panel grows the kept set from them
BALANCED_VIEW = "panel_balanced"
QUEUED_FIELD = "zc_queued"  # a compute_zcore operation queued (no worker runs it)
FAST = {"n_samples": 400, "redund_nn": 10}

pytestmark = BROWSER_MARKS


@pytest.fixture
def app(tmp_path):
    """(dataset, App URL): 40 real images with pixel embeddings and two ZCore score fields."""
    import fiftyone as fo
    from PIL import Image

    ds = fo.Dataset("zcore-panel-textiles", overwrite=True)
    samples = []
    for path, label in textile_files(N):
        pixels = Image.open(path).convert("L").resize((16, 16), Image.BILINEAR)
        samples.append(
            fo.Sample(
                filepath=path,
                ground_truth=fo.Classification(label=label),
                pixels=np.asarray(pixels, dtype=np.float32).ravel() / 255.0,
            )
        )
    ds.add_samples(samples)
    zcore.compute_zcore(ds, embeddings="pixels", seed=0, component_fields=True, **FAST)
    zcore.compute_zcore(ds, embeddings="pixels", score_field="zcore_seed1", seed=1, **FAST)
    ds.save_view(TAKEN, ds.limit(3))
    ds.take(3, seed=0).tag_samples(TAG)
    zcore.evaluate_coreset(
        ds,
        label_field="ground_truth",
        embeddings="pixels",
        score_field="zcore_score",
        methods=("topk",),
        prune=(0.5,),
        seeds=2,
        seed=0,
    )
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    params = {"embeddings": "pixels", "score_field": QUEUED_FIELD, **FAST}
    foo.execute_operator(
        "@zcore/zcore/compute_zcore", ctx={"dataset": ds, "params": params}, request_delegation=True
    )
    svc = DelegatedOperationService()
    try:
        with serve_app(ds, tmp_path) as url:
            yield ds, url
    finally:
        for op in svc.list_operations(dataset_name="zcore-panel-textiles"):
            svc.delete_operation(op.id)


def test_coreset_panel_in_the_app(app, tmp_path):
    ds, url = app
    shots = tmp_path / "screenshots"
    result = run_script(
        "panel_test.mjs",
        shots,
        timeout=240,
        ZCORE_APP_URL=url,
        ZCORE_DATASET=ds.name,
        ZCORE_VIEW_NAME=VIEW_NAME,
        ZCORE_TAKEN_VIEW=TAKEN,
        ZCORE_QUEUED_OP=f"compute_zcore → {QUEUED_FIELD}",
        ZCORE_TAG=TAG,
        ZCORE_BALANCED_VIEW=BALANCED_VIEW,
    )
    assert result["page_errors"] == []

    # Layout: nothing wider than the panel (no horizontal scroll), no clipped button label, a
    # legend on both charts, an icon in the "+" menu.
    assert result["overflow"] == [] and result["overflow_end"] == []
    assert result["clipped_buttons"] == []
    assert all(abs(d) <= 8 for d in result["button_offsets"])  # level with the input boxes
    # (the histogram, the class shares, the evaluation's methods against random)
    hist, classes, evaluation = result["legends"]
    assert len(hist) == 2 and len(classes) == 2 and evaluation == ["topk", "random"]
    assert result["menu_icon"] is not None
    for width, box in result["plot_widths"]:
        assert width <= box + 1
    # The histogram spans the scores' range (not 0-1 of min-max normalised scores).
    scores = np.array(ds.values("zcore_score"))
    lo, hi = result["hist_range"]
    assert scores.min() <= lo < hi <= scores.max()
    assert (lo, hi) == pytest.approx(zp.score_range(scores), abs=1e-9)
    # The slider's value label shows two decimals, not six.
    assert result["fraction_label"] == "0.10"
    # The queued delegated operation is listed, and its run in the runs table.
    assert "queued" in result["ops_line"]
    assert any(QUEUED_FIELD in line for line in result["runs_line"])
    # Save as view: the default name is free; an existing name is refused and left unchanged.
    assert result["default_view_name"] == "zcore_coreset"
    assert f"a saved view named '{TAKEN}' exists" in result["refused"]
    assert ds.load_saved_view(TAKEN).values("id") == ds.limit(3).values("id")
    # "Run select_coreset…" from the kept set opens on the panel's view (all 40 samples).
    assert result["prompt_preview"].endswith(f"of {N} scored samples will be kept")
    assert result["prompt_execute_disabled"] is False  # the panel's params make a valid form
    # the recorded evaluation: the stored table's rows and the plot
    evaluation = zcore.load_evaluation(ds)
    ev = result["evaluations"]
    assert ev.startswith("Coreset evaluations") and "Evaluate coreset…" in ev
    for row in evaluation.summary:
        assert f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}" in ev
    assert evaluation.rule in ev
    assert result["evaluation_plot"] == 1

    # The counts the panel showed are select_coreset's.
    assert result["initial"] == {
        "kept": zcore.select_coreset(ds, fraction=0.1, method="topk").count(),
        "of": N,
    }
    size = result["slider_value"]
    assert size > 4
    assert result["moved"] == {
        "kept": zcore.select_coreset(ds, size=size, method="topk").count(),
        "of": N,
    }

    # The saved view holds exactly select_coreset's samples at that size.
    ds.reload()
    assert VIEW_NAME in ds.list_saved_views()
    saved = ds.load_saved_view(VIEW_NAME)
    assert saved.values("id") == zcore.select_coreset(ds, size=size, method="topk").values("id")
    assert f"({size} samples)" in result["saved"]
    # Showing the kept set in the grid left the panel on the full set.
    assert result["grid_kept"] == f"{size} samples"
    assert result["after_show"] == {"kept": size, "of": N}
    # The overlap of the two score fields' kept sets at that size.
    a = set(zcore.select_coreset(ds, size=size, method="topk").values("id"))
    b = set(
        zcore.select_coreset(ds, score_field="zcore_seed1", size=size, method="topk").values("id")
    )
    assert result["overlap"].startswith(f"Overlap: {len(a & b)} ")

    # Grow from the tagged samples: the count line says how many are new, and "Write ranks"
    # wrote select_coreset's ranks (the tagged samples first, then by score).
    assert result["grow_line"] == f"3 of them already tagged '{TAG}', {size - 3} new"
    assert result["grown"] == {"kept": size, "of": N}
    assert result["default_rank_field"] == zp.DEFAULT_RANK_FIELD
    assert abs(result["rank_offset"]) <= 8  # "Write ranks" level with its input
    assert result["ranks_msg"].startswith(f"Wrote ranks 1-{size} to '{zp.DEFAULT_RANK_FIELD}'")
    ds.reload()
    ranked = ds.exists(zp.DEFAULT_RANK_FIELD).sort_by(zp.DEFAULT_RANK_FIELD)
    grown = zcore.select_coreset(ds, size=size, method="topk", include=TAG, run_key="check")
    assert ranked.values("id") == grown.values("id")
    assert ranked.values(zp.DEFAULT_RANK_FIELD) == list(range(1, size + 1))
    assert set(ranked.values("id")[:3]) == set(ds.match_tags(TAG).values("id"))
    # Balance by the labels, equal quotas: the saved view is select_coreset's balanced set.
    balanced = zcore.select_coreset(
        ds,
        size=size,
        method="topk",
        balance_by="ground_truth",
        balance="equal",
        seed=zp.PANEL_SEED,
        run_key="check_balanced",
    ).values("id")
    assert ds.load_saved_view(BALANCED_VIEW).values("id") == balanced
    labels = ds.select(balanced).count_values("ground_truth.label")
    for value, count in labels.items():
        assert f"{value}: {count}" in result["balance_line"]
    assert max(labels.values()) - min(labels.values()) <= 1
    assert result["balanced"] == {"kept": size, "of": N} and result["rank_row_shown"] == 0
    assert result["balanced_overflow"] == []
    run = ds.get_run_info(zp.PANEL_RUN_KEY).config
    assert (run.balance_by, run.balance, run.seed) == ("ground_truth", "equal", zp.PANEL_SEED)

    keep_screenshots(shots, ["app_panel.png", "app_panel_grow.png", "app_panel_balance.png"])
    print(f"screenshots in {shots}")
