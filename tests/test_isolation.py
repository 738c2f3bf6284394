"""The suite runs only against its own mongod (tests/conftest.py, zcore.testing_db).

A decoy MongoDB, started here, plays the user's database: FiftyOne is pointed at it every way a
user's setup can (``FIFTYONE_DATABASE_URI``, a config file's ``database_uri``,
``FIFTYONE_PRIVATE_DATABASE_PORT`` inherited from a FiftyOne process). A real pytest run of real
FiftyOne tests must leave it untouched, and a run where FiftyOne was already imported (configured
for the decoy) must refuse to start.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import process_gone, wait_gone

from zcore import testing_db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SYSTEM_DBS = {"admin", "config", "local"}
# a real FiftyOne test module: creates and deletes datasets
_INNER = "tests/test_methods_fiftyone.py"


@pytest.fixture
def decoy():
    db = testing_db.start_mongod()
    yield db
    db.stop()


def _poisoned_env(decoy, tmp_path):
    config = tmp_path / "user_config.json"
    config.write_text(json.dumps({"database_uri": decoy.uri}))
    env = dict(os.environ)
    env.update(
        FIFTYONE_DATABASE_URI=decoy.uri,
        FIFTYONE_CONFIG_PATH=str(config),
        FIFTYONE_PRIVATE_DATABASE_PORT=str(decoy.port),
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def _user_dbs(db):
    client = db.client()
    try:
        return set(client.list_database_names()) - _SYSTEM_DBS
    finally:
        client.close()


def test_suite_never_touches_a_reachable_user_database(decoy, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", _INNER],
        cwd=ROOT,
        env=_poisoned_env(decoy, tmp_path),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout
    assert _user_dbs(decoy) == set()


def test_suite_refuses_when_fiftyone_was_configured_first(decoy, tmp_path):
    # e.g. a pytest plugin imported FiftyOne before conftest could point it at the private mongod
    code = (
        "import sys, fiftyone, pytest\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {_INNER!r}]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_poisoned_env(decoy, tmp_path),
        capture_output=True,
        text=True,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 3, text[-3000:]
    assert "refusing to run" in text and decoy.uri in text
    assert " passed" not in out.stdout
    assert _user_dbs(decoy) == set()


def test_verify_names_the_server_fiftyone_is_connected_to(decoy, tmp_path):
    # FiftyOne connected (to the decoy) before its config named the private mongod
    code = (
        "from zcore import testing_db\n"
        "db = testing_db.start_mongod()\n"
        "try:\n"
        "    import fiftyone\n"
        "    import fiftyone.core.odm.database as fod\n"
        "    fod.get_db_client()\n"
        "    fiftyone.config.database_uri = db.uri\n"
        "    try:\n"
        "        db.verify()\n"
        "    except testing_db.ForeignDatabase as e:\n"
        "        print('REFUSED', e)\n"
        "finally:\n"
        "    db.stop()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_poisoned_env(decoy, tmp_path),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REFUSED" in out.stdout, out.stdout
    assert str(decoy.port) in out.stdout and f"pid {decoy.proc.pid}" in out.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_private_mongod_dies_with_a_killed_parent(tmp_path):
    code = (
        "import time\n"
        "from zcore import testing_db\n"
        f"db = testing_db.start_mongod({str(tmp_path / 'db')!r})\n"
        "print(db.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    pid = int(parent.stdout.readline())
    assert not process_gone(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert wait_gone([pid]) == [], f"mongod {pid} outlived its SIGKILLed parent"
