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

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_app_browser import (
    _SERVE,
    BROWSER_DIR,
    CHROMIUM,
    CLASSES,
    N,
    _free_port,
    _stop,
    _wait_for_app,
)
from test_app_browser import pytestmark as _browser_marks

import zcore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(BROWSER_DIR, "panel_test.mjs")
VIEW_NAME = "panel_coreset"
FAST = {"n_samples": 400, "redund_nn": 10}

pytestmark = _browser_marks


def _scored_textiles(name):
    import conformal_clip_data
    import fiftyone as fo
    from PIL import Image

    root = conformal_clip_data.textile_simulated_root()
    per_class = [N // len(CLASSES) + (i < N % len(CLASSES)) for i in range(len(CLASSES))]
    samples = []
    for label, k in zip(CLASSES, per_class, strict=True):
        folder = os.path.join(root, label)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg"))[:k]
        for f in files:
            path = os.path.join(folder, f)
            pixels = Image.open(path).convert("L").resize((16, 16), Image.BILINEAR)
            samples.append(
                fo.Sample(
                    filepath=path,
                    ground_truth=fo.Classification(label=label),
                    pixels=np.asarray(pixels, dtype=np.float32).ravel() / 255.0,
                )
            )
    ds = fo.Dataset(name, overwrite=True)
    ds.add_samples(samples)
    zcore.compute_zcore(ds, embeddings="pixels", seed=0, component_fields=True, **FAST)
    zcore.compute_zcore(ds, embeddings="pixels", score_field="zcore_seed1", seed=1, **FAST)
    return ds


@pytest.fixture
def app(tmp_path):
    ds = _scored_textiles("zcore-panel-textiles")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app_server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, ds.name, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            cwd=str(tmp_path),
        )
    try:
        _wait_for_app(url, proc, log_path)
        yield ds, url
    finally:
        _stop(proc)
        if not ds.deleted:
            ds.delete()


def test_coreset_panel_in_the_app(app, tmp_path):
    ds, url = app
    shots = tmp_path / "screenshots"
    env = dict(
        os.environ,
        ZCORE_APP_URL=url,
        ZCORE_DATASET=ds.name,
        ZCORE_SHOTS_DIR=str(shots),
        ZCORE_VIEW_NAME=VIEW_NAME,
        CHROMIUM_PATH=CHROMIUM,
    )
    try:
        out = subprocess.run(
            ["node", SCRIPT], cwd=BROWSER_DIR, env=env, capture_output=True, text=True, timeout=150
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"browser script timed out:\n{e.stdout}\n{e.stderr}\nartifacts: {shots}")
    print(out.stdout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\nartifacts: {shots}"
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["page_errors"] == []

    # The counts the panel showed are select_coreset's.
    assert result["initial"] == {"kept": zcore.select_coreset(ds, fraction=0.1).count(), "of": N}
    size = result["slider_value"]
    assert size > 4
    assert result["moved"] == {"kept": zcore.select_coreset(ds, size=size).count(), "of": N}

    # The saved view holds exactly select_coreset's samples at that size.
    ds.reload()
    assert VIEW_NAME in ds.list_saved_views()
    saved = ds.load_saved_view(VIEW_NAME)
    assert saved.values("id") == zcore.select_coreset(ds, size=size).values("id")
    assert f"({size} samples)" in result["saved"]
    # Showing the kept set in the grid left the panel on the full set.
    assert result["grid_kept"] == f"{size} samples"
    assert result["after_show"] == {"kept": size, "of": N}
    # The overlap of the two score fields' kept sets at that size.
    a = set(zcore.select_coreset(ds, size=size).values("id"))
    b = set(zcore.select_coreset(ds, score_field="zcore_seed1", size=size).values("id"))
    assert result["overlap"].startswith(f"Overlap: {len(a & b)} ")

    shot = shots / "app_panel.png"
    assert shot.stat().st_size > 10_000
    if os.environ.get("ZCORE_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, os.path.join(ROOT, "assets", "app_panel.png"))
