"""The operators in the real FiftyOne App, driven by headless chromium (tests/browser/app_test.mjs).

A dataset of 40 real images (the textile images of ``conformal_clip_data``) is served by
``fo.launch_app(..., remote=True)`` in a subprocess that shares this session's database and plugins
dir (see conftest.py). The browser opens the operator browser, runs "ZCore: compute coreset
scores" with a small configuration, checks the score field appears and sorts the grid by it, then
runs "ZCore: select coreset", and finally lists the compute form's Dask cluster dropdown (only
``local`` and the App server's ``ZCORE_DASK_SCHEDULERS``). The database is then checked from
Python.

Needs ``make browser-deps`` (Debian chromium + playwright-core from npm); skipped otherwise.
Screenshots go to a temporary directory; set ``ZCORE_UPDATE_SCREENSHOTS=1`` to also copy them to
``assets/`` (the README's App screenshots).
"""

import pytest
from app_browser import BROWSER_MARKS, keep_screenshots, run_script, serve_app, textile_dataset

import zcore

SCREENSHOTS = ("app_compute_zcore.png", "app_scores.png", "app_select_coreset.png")
N = 40
DIM = 32

pytestmark = BROWSER_MARKS


#: The Dask schedulers the App's server allows (the compute form's dropdown offers only these).
DASK_SCHEDULERS = "tcp://10.0.0.1:8786,tls://dask.example:8786"


@pytest.fixture
def app(tmp_path, monkeypatch):
    """(dataset, App URL) for a 40-image dataset served by a real App in a subprocess."""

    monkeypatch.setenv("ZCORE_DASK_SCHEDULERS", DASK_SCHEDULERS)

    ds = textile_dataset("zcore-textiles", N, DIM)
    with serve_app(ds, tmp_path) as url:
        yield ds, url


def test_operators_in_the_app(app, tmp_path):
    ds, url = app
    shots = tmp_path / "screenshots"
    result = run_script(
        "app_test.mjs", shots, timeout=180, ZCORE_APP_URL=url, ZCORE_DATASET=ds.name
    )

    # What the App showed.
    assert result["page_errors"] == []
    assert result["form_embeddings"] == "embeddings"
    assert result["advanced_hidden"] is True  # a short form: the law's options are advanced
    assert result["num_scored"] == str(N)
    assert result["seed"] == "0"
    assert result["top_scores"][0] == pytest.approx(1.0)
    assert result["kept"] == "4"
    assert result["preview"].startswith("4 of 40 scored samples will be kept")
    # no free-text address: local and the server's allowed schedulers
    assert result["dask_choices"] == [
        "local: a LocalCluster of the worker processes",
        "tcp://10.0.0.1:8786",
        "tls://dask.example:8786",
    ]

    # What the operators wrote, read back from the database.
    ds.reload()
    assert "zcore_score" in ds.get_field_schema()
    scores = ds.values("zcore_score")
    assert len(scores) == N and all(s is not None for s in scores)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert "zcore_score" in ds.list_runs()
    config = ds.get_run_info("zcore_score").config
    # The form's values reached the operator with their types.
    assert config.n_samples == 400 and config.redund_nn == 10 and config.seed == 0
    assert "zcore_coreset" in ds.list_saved_views()
    coreset = ds.load_saved_view("zcore_coreset")
    # the form's default method, on the embeddings the scores came from, with the recorded seed
    run = ds.get_run_info("coreset_auto").config
    assert run.selection_method == "auto" and run.embeddings == ["embeddings"]
    # (the App selected from its current view: the grid sorted by score, highest first)
    view = ds.sort_by("zcore_score", reverse=True)
    want = zcore.select_coreset(view, fraction=0.1, seed=run.seed)
    assert sorted(coreset.values("id")) == sorted(want.values("id"))

    keep_screenshots(shots, SCREENSHOTS)
