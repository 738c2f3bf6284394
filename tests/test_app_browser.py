"""The operators in the real FiftyOne App, driven by headless chromium (tests/browser/app_test.mjs).

A dataset of 40 real images (the textile images of ``conformal_clip_data``) is served by
``fo.launch_app(..., remote=True)`` in a subprocess that shares this session's database and plugins
dir (see conftest.py). The browser opens the operator browser, runs "ZCore: compute coreset
scores" with a small configuration, checks the score field appears and sorts the grid by it, then
runs "ZCore: select coreset". The database is then checked from Python.

Needs ``make browser-deps`` (Debian chromium + playwright-core from npm); skipped otherwise.
Screenshots go to a temporary directory; set ``ZCORE_UPDATE_SCREENSHOTS=1`` to also copy them to
``assets/`` (the README's App screenshots).
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
SCRIPT = os.path.join(BROWSER_DIR, "app_test.mjs")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PLAYWRIGHT = os.path.join(BROWSER_DIR, "node_modules", "playwright-core")
SCREENSHOTS = ("app_compute_zcore.png", "app_scores.png", "app_select_coreset.png")
CLASSES = ("nominal", "local", "global")
N = 40
DIM = 32

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} not found: run `make browser-deps` (Debian chromium)",
    ),
    pytest.mark.skipif(
        not os.path.isdir(PLAYWRIGHT),
        reason="tests/browser/node_modules/playwright-core missing: run `make browser-deps`",
    ),
    pytest.mark.skipif(shutil.which("node") is None, reason="node not found"),
    pytest.mark.skipif(
        importlib.util.find_spec("conformal_clip_data") is None,
        reason="conformal-clip-data (the demo images) is not installed: see requirements-dev.txt",
    ),
]

# Serves the App for an existing dataset until killed.
_SERVE = """
import sys
import fiftyone as fo
session = fo.launch_app(
    fo.load_dataset(sys.argv[1]), remote=True, address="127.0.0.1", port=int(sys.argv[2])
)
print("APP READY", flush=True)
session.wait(-1)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_app(url, proc, log_path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path) as f:
                pytest.fail(f"App server exited with {proc.returncode}:\n{f.read()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    with open(log_path) as f:
        pytest.fail(f"App did not answer on {url} in {timeout}s:\n{f.read()[-4000:]}")


def _stop(proc):
    """Stops the serving process and everything it started (the App server)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _textile_dataset(name):
    import conformal_clip_data
    import fiftyone as fo

    root = conformal_clip_data.textile_simulated_root()
    per_class = [N // len(CLASSES) + (i < N % len(CLASSES)) for i in range(len(CLASSES))]
    rng = np.random.default_rng(0)
    samples = []
    for label, k in zip(CLASSES, per_class, strict=True):
        folder = os.path.join(root, label)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg"))[:k]
        assert len(files) == k, f"not enough images in {folder}"
        for f in files:
            samples.append(
                fo.Sample(
                    filepath=os.path.join(folder, f),
                    ground_truth=fo.Classification(label=label),
                    embeddings=rng.normal(size=DIM).astype(np.float32),
                )
            )
    ds = fo.Dataset(name, overwrite=True)
    ds.add_samples(samples)
    return ds


@pytest.fixture
def app(tmp_path):
    """(dataset, App URL) for a 40-image dataset served by a real App in a subprocess."""
    ds = _textile_dataset("zcore-textiles")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app_server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, ds.name, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # conftest's plugins dir, and this process's MongoDB: creating the dataset connected
            # it and set FIFTYONE_PRIVATE_DATABASE_PORT, which the App server reuses.
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


def test_operators_in_the_app(app, tmp_path):
    ds, url = app
    shots = tmp_path / "screenshots"
    env = dict(os.environ, ZCORE_APP_URL=url, ZCORE_DATASET=ds.name, ZCORE_SHOTS_DIR=str(shots))
    env["CHROMIUM_PATH"] = CHROMIUM
    try:
        out = subprocess.run(
            ["node", SCRIPT],
            cwd=BROWSER_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"browser script timed out; output:\n{e.stdout}\n{e.stderr}\nartifacts: {shots}"
        )
    print(out.stdout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\nartifacts: {shots}"
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])

    # What the App showed.
    assert result["page_errors"] == []
    assert result["form_embeddings"] == "embeddings"
    assert result["num_scored"] == str(N)
    assert result["seed"] == "0"
    assert result["top_scores"][0] == pytest.approx(1.0)
    assert result["kept"] == "4"
    assert result["preview"].startswith("4 of 40 scored samples will be kept")

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
    top4 = sorted(scores, reverse=True)[:4]
    assert sorted(coreset.values("zcore_score"), reverse=True) == top4

    for name in SCREENSHOTS:
        assert (shots / name).stat().st_size > 10_000, f"screenshot {name} missing or empty"
    if os.environ.get("ZCORE_UPDATE_SCREENSHOTS"):
        os.makedirs(os.path.join(ROOT, "assets"), exist_ok=True)
        for name in SCREENSHOTS:
            shutil.copyfile(shots / name, os.path.join(ROOT, "assets", name))
