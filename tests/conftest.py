"""Test set-up: a private, throw-away MongoDB and a plugins dir that holds this plugin.

Before FiftyOne is imported anywhere, this starts its own ``mongod`` (the one FiftyOne ships) on a
free loopback port with a temporary dbpath and points ``FIFTYONE_DATABASE_URI`` at it (see
:mod:`zcore.testing_db`); at session start the suite refuses to run (``pytest.exit``) unless
FiftyOne is connected to exactly that server, so no test can create or delete datasets in a
user's database. The operators are loaded through the real plugin registry from
``FIFTYONE_PLUGINS_DIR``.
"""

import atexit
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TMP = tempfile.mkdtemp(prefix="zcore-tests-")
# the database goes with the session; registered first, so it runs last
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
_PLUGINS = os.path.join(_TMP, "plugins")
os.makedirs(_PLUGINS, exist_ok=True)
os.symlink(ROOT, os.path.join(_PLUGINS, "zcore"))

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from zcore import testing_db  # noqa: E402  (imports no FiftyOne)

# registered after the rmtree above, so it runs before it (and after FiftyOne's exit handlers,
# which are registered when FiftyOne connects)
MONGOD = testing_db.use_private_mongod(os.path.join(_TMP, "db"))
os.environ["FIFTYONE_PLUGINS_DIR"] = _PLUGINS
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", "true")

import time  # noqa: E402

import pytest  # noqa: E402

PLUGIN_NAME = "@zcore/zcore"


def process_gone(pid):
    """Whether process ``pid`` has exited (gone, or a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_gone(pids, guard_s=120):
    """Waits until every pid is gone; returns those still running after ``guard_s`` (a guard
    against hanging, not a timing check)."""
    deadline = time.monotonic() + guard_s
    while any(not process_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if not process_gone(p)]


def run_queued(ds):
    """Runs the one queued delegated operation of ``ds`` in this process (as a worker would) and
    returns it, finished."""
    from fiftyone.operators.delegated import DelegatedOperationService

    svc = DelegatedOperationService()
    (op,) = [o for o in svc.list_operations(dataset_name=ds.name) if o.run_state == "queued"]
    svc.execute_operation(op)
    return svc.get(op.id)


def pytest_sessionstart(session):
    """Refuse to run unless FiftyOne is connected to this session's own mongod."""
    try:
        MONGOD.verify()
    except testing_db.ForeignDatabase as e:
        pytest.exit(str(e), returncode=3)


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
