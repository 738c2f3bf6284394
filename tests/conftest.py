"""Test set-up: a throw-away FiftyOne database and a plugins dir that holds this plugin.

The environment is set before FiftyOne is imported anywhere, so every test talks to a real MongoDB
started by FiftyOne in a temporary directory, and the operators are loaded through the real plugin
registry from ``FIFTYONE_PLUGINS_DIR``.
"""

import atexit
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TMP = tempfile.mkdtemp(prefix="zcore-tests-")
# the database (about 300 MB) goes with the session; registered first, so it runs last, after
# FiftyOne's own exit handlers stopped its MongoDB
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
_PLUGINS = os.path.join(_TMP, "plugins")
os.makedirs(_PLUGINS, exist_ok=True)
os.symlink(ROOT, os.path.join(_PLUGINS, "zcore"))

os.environ.setdefault("FIFTYONE_DATABASE_DIR", os.path.join(_TMP, "db"))
os.environ["FIFTYONE_PLUGINS_DIR"] = _PLUGINS
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", "true")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

PLUGIN_NAME = "@zcore/zcore"


@pytest.fixture
def make_dataset():
    """Factory for small throw-away datasets with random vector embeddings."""
    import fiftyone as fo
    import numpy as np

    made = []

    def make(n=60, d=16, *, seed=0, field="embeddings", missing=(), labels=None):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, d)).astype(np.float32)
        ds = fo.Dataset()
        samples = []
        for i in range(n):
            s = fo.Sample(filepath=f"/tmp/zcore-test/img_{i:05d}.jpg")
            if i not in missing:
                s[field] = X[i]
            if labels is not None:
                s["ground_truth"] = fo.Classification(label=labels[i % len(labels)])
            samples.append(s)
        ds.add_samples(samples)
        made.append(ds)
        return ds, X

    yield make
    for ds in made:
        if not ds.deleted:
            ds.delete()
