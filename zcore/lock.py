"""One writer per (dataset, field): a lock document in FiftyOne's database.

:func:`compute_zcore` takes a lock for its output field (and its run key) before it checks the
field and scores, and releases it on every exit path (``finally``; SIGTERM is turned into an
exception for the duration of the run, see :func:`terminate_as_exception`). The lock is one
document of the ``zcore_locks`` collection whose ``_id`` names the dataset and the field, so
taking it is one atomic ``insert_one``: of two runs, exactly one inserts, the other gets
:class:`ConcurrentRun` naming the holder (pid, host, start time, run key).

A lock whose holder is gone is stale: when the holder ran on this host and its pid no longer
exists (or now belongs to a process started after the lock was taken), the next run removes it
and proceeds. A lock held from another host cannot be checked from here: :func:`break_lock`
removes it by hand.

Temporary collections (``zcore_tmp_<dataset id>_<lock token>``, see :mod:`zcore.store`) carry the
token of the lock under which they were written; a run that takes a lock on a dataset drops the
temporaries of that dataset whose lock is gone (left by a killed run).
"""

import contextlib
import datetime
import os
import signal
import socket
import threading
import uuid

LOCKS_COLLECTION = "zcore_locks"
TMP_PREFIX = "zcore_tmp_"


class ConcurrentRun(RuntimeError):
    """Another run holds the lock of this (dataset, field)."""


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[LOCKS_COLLECTION]


def _process_start(pid):
    """Start time (seconds since the epoch) of process ``pid``, or ``None`` if there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:
        return -1.0  # exists, but cannot be inspected: treat as alive


def _is_stale(doc):
    if doc.get("host") != socket.gethostname():
        return False
    started = _process_start(int(doc.get("pid", -1)))
    if started is None:
        return True
    if started < 0:
        return False
    # the pid was reused by a process started after the lock was taken
    return started > float(doc.get("process_started", started)) + 1.0


def _describe(doc):
    started = doc.get("started")
    when = started.strftime("%Y-%m-%d %H:%M:%S UTC") if started else "an unknown time"
    return f"pid {doc.get('pid')} on host {doc.get('host')!r}, started {when}" + (
        f", run_key {doc['run_key']!r}" if doc.get("run_key") else ""
    )


class Lock:
    """Held locks of one run; :meth:`release` removes them (only if still ours)."""

    def __init__(self, dataset_id, token, ids):
        self.dataset_id, self.token, self.ids = dataset_id, token, ids

    def release(self):
        if self.ids:
            # a SIGINT/SIGTERM arriving now (e.g. a second Ctrl-C while an interrupted run cleans
            # up) is held back until the lock is gone, so it cannot leave the lock behind
            with deferred_interrupts():
                _collection().delete_many({"_id": {"$in": self.ids}, "token": self.token})
                self.ids = []

    @property
    def tmp_prefix(self):
        return f"{TMP_PREFIX}{self.dataset_id}_{self.token}"


def _lock_ids(dataset_id, fields, run_key):
    ids = [f"{dataset_id}:field:{f}" for f in fields]
    if run_key is not None:
        ids.append(f"{dataset_id}:run:{run_key}")
    return sorted(set(ids))


def acquire(dataset, fields, *, run_key=None, dataset_name=None):
    """Take the locks of ``fields`` (paths on the root dataset) and ``run_key`` of ``dataset``.

    Raises :class:`ConcurrentRun` if another live run holds one of them.
    """
    import psutil
    import pymongo.errors

    coll = _collection()
    dataset_id = str(dataset._doc.id)
    token = uuid.uuid4().hex
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    base = {
        "token": token,
        "dataset_id": dataset_id,
        "dataset": dataset_name or dataset.name,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_started": psutil.Process().create_time(),
        "started": now,
        "run_key": run_key,
    }
    held = Lock(dataset_id, token, [])
    try:
        for lock_id in _lock_ids(dataset_id, fields, run_key):
            for _ in range(3):
                try:
                    coll.insert_one({"_id": lock_id, **base, "what": lock_id.split(":", 1)[1]})
                    held.ids.append(lock_id)
                    break
                except pymongo.errors.DuplicateKeyError:
                    doc = coll.find_one({"_id": lock_id})
                    if doc is None:
                        continue  # released meanwhile: try again
                    if doc.get("token") == token:
                        break
                    if _is_stale(doc):
                        coll.delete_one({"_id": lock_id, "token": doc["token"]})
                        continue
                    what = lock_id.split(":", 2)
                    raise ConcurrentRun(
                        f"another zcore run is writing {what[1]} {what[2]!r} of dataset "
                        f"{base['dataset']!r}: {_describe(doc)}. Wait for it to finish; if that "
                        "process is gone (e.g. on another machine), remove its lock with "
                        f"zcore.lock.break_lock(dataset, {what[2]!r})"
                    ) from None
            else:
                raise ConcurrentRun(f"could not take the lock {lock_id!r} (contended)")
    except BaseException:
        held.release()
        raise
    drop_stale_temporaries(dataset)
    return held


def drop_stale_temporaries(dataset):
    """Drop the ``zcore_tmp_`` collections of ``dataset`` whose lock is not held any more."""
    dataset_id = str(dataset._doc.id)
    db = dataset._sample_collection.database
    prefix = f"{TMP_PREFIX}{dataset_id}_"
    live = {d["token"] for d in _collection().find({"dataset_id": dataset_id}, {"token": 1})}
    dropped = []
    for name in db.list_collection_names(filter={"name": {"$regex": f"^{prefix}"}}):
        token = name[len(prefix) :].split("_", 1)[0]
        if token not in live:
            db.drop_collection(name)
            dropped.append(name)
    return dropped


def holders(dataset):
    """The lock documents held on ``dataset`` (for inspection)."""
    return list(_collection().find({"dataset_id": str(dataset._doc.id)}))


def break_lock(dataset, what):
    """Remove the lock of field or run key ``what`` on ``dataset`` by hand (a holder on another
    host that is known to be gone). Returns how many lock documents were removed."""
    dataset_id = str(dataset._doc.id)
    ids = [f"{dataset_id}:field:{what}", f"{dataset_id}:run:{what}"]
    return _collection().delete_many({"_id": {"$in": ids}}).deleted_count


@contextlib.contextmanager
def terminate_as_exception():
    """While inside, SIGTERM raises :class:`SystemExit` (so ``finally`` clauses run: locks,
    worker processes, temporary collections), if SIGTERM had its default action and this is the
    main thread; otherwise nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_interrupts():
    """While inside, SIGINT/SIGTERM are held back and re-raised at the end (main thread only):
    for the roll-forward of a write and the run record that goes with it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []

    def handler(signum, frame):
        got.append(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if got:
            signum = got[0]
            h = previous[signum]
            if callable(h):
                h(signum, None)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
            elif h is signal.SIG_DFL:
                raise SystemExit(128 + signum)
