"""Shared pieces of the browser tests: serve a real App, run a playwright script, real images.

Used by test_app_browser.py (the operators) and test_panel_browser.py (the Coreset panel).
"""

import contextlib
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

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PLAYWRIGHT = os.path.join(BROWSER_DIR, "node_modules", "playwright-core")
CLASSES = ("nominal", "local", "global")

#: Marks of every browser test: skipped, with the reason, when a dependency is missing.
BROWSER_MARKS = [
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


def textile_files(n):
    """``(path, label)`` of ``n`` real JPGs, spread evenly over the three classes."""
    import conformal_clip_data

    root = conformal_clip_data.textile_simulated_root()
    per_class = [n // len(CLASSES) + (i < n % len(CLASSES)) for i in range(len(CLASSES))]
    out = []
    for label, k in zip(CLASSES, per_class, strict=True):
        folder = os.path.join(root, label)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg"))[:k]
        assert len(files) == k, f"not enough images in {folder}"
        out += [(os.path.join(folder, f), label) for f in files]
    return out


def textile_dataset(name, n, dim, seed=0):
    """A dataset ``name`` (replacing one of that name) of ``n`` real textile JPGs
    (:func:`textile_files`) with their class as ``ground_truth`` and random ``dim``-d
    ``embeddings`` (seed ``seed``)."""
    import fiftyone as fo
    import numpy as np

    rng = np.random.default_rng(seed)
    ds = fo.Dataset(name, overwrite=True)
    ds.add_samples(
        fo.Sample(
            filepath=path,
            ground_truth=fo.Classification(label=label),
            embeddings=rng.normal(size=dim).astype(np.float32),
        )
        for path, label in textile_files(n)
    )
    return ds


@contextlib.contextmanager
def serve_app(ds, tmp_path):
    """The URL of a real App serving ``ds`` from a subprocess; stopped (and ``ds`` deleted) after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "app_server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, ds.name, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # conftest's plugins dir and its private MongoDB (FIFTYONE_DATABASE_URI)
            env=dict(os.environ),
            cwd=str(tmp_path),
        )
    try:
        _wait_for_app(url, proc, log_path)
        yield url
    finally:
        _stop(proc)
        if not ds.deleted:
            ds.delete()


def run_script(script, shots, timeout, **env):
    """Run a playwright script of tests/browser; returns the JSON of its ``RESULT`` line."""
    env = dict(os.environ, ZCORE_SHOTS_DIR=str(shots), CHROMIUM_PATH=CHROMIUM, **env)
    try:
        out = subprocess.run(
            ["node", os.path.join(BROWSER_DIR, script)],
            cwd=BROWSER_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"browser script timed out:\n{e.stdout}\n{e.stderr}\nartifacts: {shots}")
    print(out.stdout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\nartifacts: {shots}"
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def keep_screenshots(shots, names):
    """Check the screenshots exist; with ZCORE_UPDATE_SCREENSHOTS=1 copy them to assets/."""
    for name in names:
        assert (shots / name).stat().st_size > 10_000, f"screenshot {name} missing or empty"
    if os.environ.get("ZCORE_UPDATE_SCREENSHOTS"):
        os.makedirs(os.path.join(ROOT, "assets"), exist_ok=True)
        for name in names:
            shutil.copyfile(shots / name, os.path.join(ROOT, "assets", name))


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
