"""Bulk input/output of sample-level fields, for collections of millions of samples.

Used by :func:`zcore.compute_zcore` for sample-level embeddings and scores (a dataset, a view of
it, the active slice of a grouped dataset); object patches, video frames and other generated views
keep FiftyOne's ``values()`` / ``set_values()`` (see ``docs/scale.md``).

Reading (:func:`read_embeddings`)
    One aggregation over the collection's own pipeline, projected on ``_id`` and the embedding
    field(s), consumed as raw BSON batches. Each vector is decoded straight into one preallocated
    ``float32`` matrix: FiftyOne stores a ``VectorField`` as a zlib-compressed ``.npy`` blob, whose
    header is parsed once and whose payload is then copied with ``np.frombuffer`` (decompression
    runs in a thread, zlib releases the GIL); vectors stored as plain lists are copied as they are.
    No Python list of a million arrays is built. Ids are kept as a ``(N, 12)`` uint8 array.

Writing (:func:`write_columns`)
    The new values are inserted in batches into a temporary collection (one small document per
    sample: ``_id``, the new field values, ``last_modified_at``), then merged into the sample
    documents by server-side ``$merge`` aggregations (``whenMatched: "merge"``), one per range
    of ``_id``, two at a time. ``last_modified_at`` is set to one ``utcnow()`` for every written
    sample, as ``set_values()`` does; new fields are declared just before the merge. Until the
    first merge starts, the sample documents are untouched: an exception or
    ``KeyboardInterrupt`` leaves every field, ``last_modified_at`` and the schema as they were,
    and the temporary collection is dropped (``finally``). Once merging has started, an
    interruption completes the remaining ranges (every merge is idempotent) before it
    propagates, so the fields end all old or all new, never mixed (barring a database failure
    during the merge itself).

Caching (:func:`load_cached`, :func:`save_cached`)
    The matrix and ids as ``.npy`` files, re-opened with ``mmap_mode="r"``, keyed by the dataset
    id, the field(s) and the view's stages, and valid only while the content fingerprint matches:
    the number of samples and a hash of the ordered ``(_id, last_modified_at)`` pairs of the view
    (FiftyOne sets ``last_modified_at`` whenever a sample is edited through its API).
"""

import concurrent.futures as cf
import hashlib
import io
import json
import os
import shutil
import time
import uuid
import zlib
from datetime import datetime
from itertools import repeat

import numpy as np

#: Documents per raw cursor batch when reading.
READ_BATCH = 4096
#: Documents per ``insert_many`` into the temporary collection.
WRITE_BATCH = 50_000
#: Sample documents per ``$merge`` range during the swap.
SWAP_CHUNK = 50_000
#: ``$merge`` ranges run at the same time (the server uses one thread per aggregation).
SWAP_THREADS = 2
#: Seconds between two progress reports within a phase.
PROGRESS_DT = 0.5

_TMP_PREFIX = "zcore_tmp_"


class Unsupported(Exception):
    """The fast path cannot read these values exactly like ``values()``: use the general path."""


class BadVector(ValueError):
    """A stored value that no path can read as a vector (corrupted bytes, a dict...); the message
    names the field and the sample, and says what to do."""


def undecodable_message(field, error, sample_id=None):
    """What to say of a stored value of ``field`` that cannot be decoded as a vector."""
    # numpy's own texts (e.g. "load it unsafely using allow_pickle=") would mislead here
    what = f"zlib: {error}" if isinstance(error, zlib.error) else "not a .npy array of numbers"
    if sample_id is None:
        value, which = "a stored value", "the bad values to None to leave them"
    else:
        value, which = f"the stored value of sample {sample_id}", "that value to None to leave it"
    return (
        f"embeddings field {field!r}: {value} cannot be decoded as a vector ({what}); the field "
        "holds corrupted or non-array data. Recompute the embeddings (e.g. "
        f"compute_embeddings(..., embeddings_field={field!r})), or set {which} unscored"
    )


#: What decoding a corrupted ``.npy`` blob raises (zlib, then ``np.load``).
_DECODE_ERRORS = (zlib.error, ValueError, EOFError, OSError)


def supports(samples, fields=None):
    """Whether the fast path applies: sample-level, top-level fields of a non-generated
    collection (no patches, frames, clips or dynamic-groups view)."""
    if any(
        getattr(samples, attr, False)
        for attr in (
            "_is_generated",
            "_is_patches",
            "_is_frames",
            "_is_clips",
            "_is_dynamic_groups",
        )
    ):
        return False
    if samples._dataset is not samples._root_dataset:
        return False
    return all("." not in f and not f.startswith("_") for f in fields or ())


# --- reading ------------------------------------------------------------------------------------


def read_embeddings(samples, fields, *, progress=None):
    """``(X, ids, missing)`` of the sample-level vector field(s) ``fields`` of ``samples``.

    Parameters
    ----------
    samples : SampleCollection
        A collection for which :func:`supports` is true.
    fields : list of str
        Top-level vector fields, concatenated along the features in this order.
    progress : callable, optional
        ``progress(done, total, label)`` (:mod:`zcore.core.progress`), at most every
        :data:`PROGRESS_DT` seconds.

    Returns
    -------
    X : ndarray of shape (n, D), float32, C-contiguous
        One row per sample that has every field (not ``None``), in collection order.
    ids : ndarray of shape (n, 12), uint8
        The ``_id`` bytes of those samples.
    missing : ndarray of shape (m, 12), uint8
        The ``_id`` bytes of the samples without (one of) the fields.

    Raises
    ------
    Unsupported
        When a list is not a flat list of numbers, or the vectors of a field have different
        lengths or dtypes: the caller falls back to ``values()``, whose errors it already
        reports.
    BadVector
        A ``ValueError`` for a value that no path can read as a vector: bytes that are not a
        zlib-compressed ``.npy`` of numbers, or a value that is neither bytes nor a list (a
        string, a number, a dict...). The message names the field and the sample.
    """
    import bson

    total = samples.count()
    coll = samples._dataset._sample_collection
    project = {"_id": 1, **{f: 1 for f in fields}}
    pipeline = samples._pipeline(post_pipeline=[{"$project": project}])
    cursor = coll.aggregate_raw_batches(pipeline, allowDiskUse=True, batchSize=READ_BATCH)

    decoders = [_Decoder(f) for f in fields]
    X = None
    id_parts, missing_parts = [], []
    n = seen = 0
    report = _Throttle(progress, total, "reading embeddings")
    pending = []
    try:
        with cf.ThreadPoolExecutor(max_workers=1) as pool:
            for raw in cursor:
                docs = bson.decode_all(raw)
                present = []
                for doc in docs:
                    if all(doc.get(f) is not None for f in fields):
                        present.append(doc)
                    else:
                        missing_parts.append(doc["_id"].binary)
                seen += len(docs)
                if present and X is None:
                    widths = [
                        dec.setup(present[0][dec.field], present[0]["_id"]) for dec in decoders
                    ]
                    for dec, start in zip(decoders, np.cumsum([0] + widths[:-1])):
                        dec.start = int(start)
                    X = np.empty((total, sum(widths)), dtype=np.float32)
                if present:
                    if n + len(present) > total:  # samples added while reading
                        raise Unsupported("the collection changed while it was read")
                    id_parts.append(b"".join(doc["_id"].binary for doc in present))
                    pending.append(pool.submit(_fill, X, n, present, decoders))
                    n += len(present)
                while len(pending) > 2:
                    pending.pop(0).result()
                report(seen)
            for fut in pending:
                fut.result()
    finally:
        for fut in pending:
            fut.cancel()
    report(seen, force=True)
    if X is None:
        X = np.empty((0, sum(dec.width or 1 for dec in decoders)), dtype=np.float32)
    return X[:n], _id_array(b"".join(id_parts)), _id_array(b"".join(missing_parts))


class _Decoder:
    """Decodes the values of one field into columns ``[start, start + width)`` of the matrix."""

    def __init__(self, field):
        self.field = field
        self.width = None
        self.start = 0
        self.header = None
        self.dtype = None

    def setup(self, value, sample_id):
        """Learn the width (and the ``.npy`` header, when serialized) from a first value."""
        if isinstance(value, bytes):
            try:
                raw = zlib.decompress(value)
                arr = _load_npy(raw)
            except _DECODE_ERRORS as e:
                raise BadVector(undecodable_message(self.field, e, sample_id)) from e
            if arr.dtype.kind in "fiub" and arr.flags.c_contiguous and arr.nbytes < len(raw):
                self.header = raw[: len(raw) - arr.nbytes]
                self.dtype = arr.dtype
            self.width = arr.size
        elif isinstance(value, (list, tuple)):
            self.width = len(value)
        else:
            _not_a_vector(self.field, value, sample_id)
        return self.width

    def decode(self, value, sample_id):
        """The flat float32-castable vector of ``value`` (checked to have ``width`` items)."""
        if isinstance(value, bytes):
            try:
                raw = zlib.decompress(value)
                h = self.header
                if h is not None and raw.startswith(h):
                    vec = np.frombuffer(raw, dtype=self.dtype, offset=len(h))
                else:
                    vec = _load_npy(raw).ravel()
            except _DECODE_ERRORS as e:
                raise BadVector(undecodable_message(self.field, e, sample_id)) from e
        elif isinstance(value, (list, tuple)):
            vec = value
            if len(vec) != self.width or (vec and isinstance(vec[0], (list, tuple))):
                raise Unsupported(f"{self.field}: vectors of different lengths or nested lists")
            return vec
        else:
            _not_a_vector(self.field, value, sample_id)
        if vec.size != self.width or vec.dtype.kind not in "fiub":
            raise Unsupported(f"{self.field}: vectors of different lengths or dtypes")
        return vec


def _not_a_vector(field, value, sample_id):
    """Neither a serialized array nor a list: no path can read it as a vector."""
    raise BadVector(
        f"embeddings field {field!r} holds {type(value).__name__} values (e.g. sample "
        f"{sample_id}), not vectors of numbers; pass a vector field (see compute_embeddings)"
    )


def _load_npy(raw):
    with io.BytesIO(raw) as f:
        return np.load(f, allow_pickle=False)


def _fill(X, row, docs, decoders):
    for dec in decoders:
        out = X[row : row + len(docs), dec.start : dec.start + dec.width]
        field, decode = dec.field, dec.decode
        try:
            for i, doc in enumerate(docs):
                out[i] = decode(doc[field], doc["_id"])
        except BadVector:
            raise
        except (TypeError, ValueError) as e:  # e.g. strings in a list
            raise Unsupported(f"{field}: {e}") from None


def _id_array(buf):
    return np.frombuffer(buf, dtype=np.uint8).reshape(-1, 12).copy()


def id_strings(ids):
    """Hex strings (FiftyOne's ``id`` values) of a ``(n, 12)`` uint8 id array."""
    h = ids.tobytes().hex()
    return [h[i : i + 24] for i in range(0, len(h), 24)]


def object_ids(ids):
    """``bson.ObjectId`` objects of a ``(n, 12)`` uint8 id array."""
    from bson import ObjectId

    b = ids.tobytes()
    return [ObjectId(b[i : i + 12]) for i in range(0, len(b), 12)]


# --- writing ------------------------------------------------------------------------------------


def write_columns(
    samples, ids, missing, columns, *, progress=None, tmp_prefix=None, on_written=None
):
    """Write one value per sample of ``samples`` into sample fields, interrupt-safely.

    Parameters
    ----------
    samples : SampleCollection
        A collection for which :func:`supports` is true.
    ids, missing : ndarray of shape (n, 12) and (m, 12), uint8
        Samples that receive the values of ``columns`` (row ``i`` for ``ids[i]``), and samples
        that receive ``None`` in every field. Other samples of the dataset are not touched.
    columns : list of (name, values, ftype, description)
        ``values`` of shape (n,); ``ftype`` a FiftyOne field class, declared when the field does
        not exist yet (the caller has checked an existing field's type).
    progress : callable, optional
        ``progress(done, total, label)`` (:mod:`zcore.core.progress`).
    tmp_prefix : str, optional
        Name prefix of the temporary collection (default ``zcore_tmp_<dataset id>``; the lock's
        :attr:`zcore.lock.Lock.tmp_prefix`, so a later run can tell a stale one).
    on_written : callable, optional
        Called once the values are in place, inside the same section as the move: SIGINT and
        SIGTERM received from the start of the move are held back until both are done (main
        thread), so the run record written by ``on_written`` always goes with the values.

    Raises
    ------
    BaseException
        Whatever interrupted the write. Before the move into the sample documents started, the
        dataset is unchanged; after, the move was completed first (and ``on_written`` called):
        the fields hold the new values and the run record describes them.
    """
    import fiftyone.core.sample as fos

    from .lock import deferred_interrupts

    dataset = samples._dataset
    coll = dataset._sample_collection
    prefix = tmp_prefix or f"{_TMP_PREFIX}{dataset._doc.id}"
    tmp = coll.database[f"{prefix}_{uuid.uuid4().hex[:12]}"]
    # each temporary document holds the final field values and last_modified_at (set_values()
    # sets it to one utcnow() for every document it writes); $merge's "merge" mode copies them
    keys = ("_id", *(c[0] for c in columns), "last_modified_at")
    now = datetime.utcnow()
    n, m = len(ids), len(missing)
    total = n + m
    report = _Throttle(progress, total, "writing " + ", ".join(c[0] for c in columns))
    try:
        lists = [_to_python(c[1]) for c in columns]
        done = 0
        for start in range(0, n, WRITE_BATCH):
            oids = object_ids(ids[start : start + WRITE_BATCH])
            cols = [lst[start : start + WRITE_BATCH] for lst in lists]
            _insert_batch(tmp, [dict(zip(keys, row)) for row in zip(oids, *cols, repeat(now))])
            done += len(oids)
            report(done / 2)
        for start in range(0, m, WRITE_BATCH):
            oids = object_ids(missing[start : start + WRITE_BATCH])
            nones = dict.fromkeys(keys[1:-1])
            _insert_batch(tmp, [{"_id": o, **nones, "last_modified_at": now} for o in oids])
            done += len(oids)
            report(done / 2)

        chunk = max(1000, min(SWAP_CHUNK, -(-total // SWAP_THREADS)))
        bounds = _range_bounds(np.concatenate([ids, missing]), chunk)
        swap = _Swap(dataset, tmp, columns, bounds)
        with deferred_interrupts():
            try:
                swap.run(lambda k: report(total / 2 + total / 2 * k / len(bounds)))
            except BaseException:
                swap.finish()  # roll forward: all new values, then re-raise
                fos.Sample._reload_docs(dataset._sample_collection_name)
                if on_written is not None:
                    on_written()
                raise
            fos.Sample._reload_docs(dataset._sample_collection_name)
            if on_written is not None:
                on_written()
    finally:
        with deferred_interrupts():  # a late signal must not leave the temporary behind
            tmp.drop()
    report(total, force=True)


def _to_python(values):
    values = np.asarray(values)
    return values.tolist()


def _insert_batch(tmp, docs):
    tmp.insert_many(docs, ordered=False)


def _range_bounds(ids, chunk):
    """``[(lo, hi), ...]`` ObjectId ranges (``hi`` None for the last) of about ``chunk`` ids."""
    from bson import ObjectId

    if len(ids) == 0:
        return []
    hi = ids[:, :8].copy().view(">u8").ravel()
    lo = ids[:, 8:].copy().view(">u4").ravel()
    order = np.lexsort((lo, hi))
    cuts = [ObjectId(ids[order[i]].tobytes()) for i in range(0, len(ids), chunk)]
    return list(zip(cuts, cuts[1:] + [None]))


def _merge_chunk(tmp, into, bounds):
    lo, hi = bounds
    match = {"_id": {"$gte": lo}} if hi is None else {"_id": {"$gte": lo, "$lt": hi}}
    merge = {
        "into": into,
        "on": "_id",
        "whenMatched": "merge",
        "whenNotMatched": "discard",
    }
    list(tmp.aggregate([{"$match": match}, {"$merge": merge}]))


class _Swap:
    """The server-side moves of the new values into the sample documents, range by range."""

    def __init__(self, dataset, tmp, columns, bounds):
        self.dataset, self.columns = dataset, columns
        self.tmp, self.into, self.bounds = tmp, dataset._sample_collection_name, bounds
        self.done = set()

    def _one(self, i):
        _merge_chunk(self.tmp, self.into, self.bounds[i])
        self.done.add(i)

    def declare(self):
        """Declare the fields that do not exist yet (FloatField / IntField...)."""
        for name, _, ftype, description in self.columns:
            if self.dataset.get_field(name) is None:
                self.dataset.add_sample_field(name, ftype, description=description)

    def run(self, report):
        self.declare()
        with cf.ThreadPoolExecutor(max_workers=SWAP_THREADS) as pool:
            futures = [pool.submit(self._one, i) for i in range(len(self.bounds))]
            try:
                for fut in cf.as_completed(futures):
                    fut.result()
                    report(len(self.done))
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def finish(self):
        """Complete the ranges not merged yet (after the running ones ended)."""
        self.declare()
        for i in range(len(self.bounds)):
            if i not in self.done:
                self._one(i)


# --- caching ------------------------------------------------------------------------------------


def cache_key(samples, fields):
    """Directory name of the cache entry of ``fields`` of ``samples`` (dataset, fields, view)."""
    view = samples._serialize(include_uuids=False) if hasattr(samples, "_all_stages") else []
    ident = {
        "dataset": str(samples._dataset._doc.id),
        "fields": list(fields),
        "view": view,
        "group_slice": samples.group_slice,
    }
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def fingerprint(samples, *, progress=None):
    """Cheap content fingerprint of ``samples``: its size and a hash of its ordered
    ``(_id, last_modified_at)`` pairs, from one projected raw-BSON pass."""
    coll = samples._dataset._sample_collection
    pipeline = samples._pipeline(post_pipeline=[{"$project": {"_id": 1, "last_modified_at": 1}}])
    total = samples.count()
    report = _Throttle(progress, total, "checking the embeddings cache")
    h = hashlib.sha256()
    count = 0
    for raw in coll.aggregate_raw_batches(pipeline, allowDiskUse=True, batchSize=65536):
        h.update(raw)
        count += _count_docs(raw)
        report(count)
    return {"count": count, "hash": h.hexdigest()}


def stamp(samples):
    """``(count, max last_modified_at)`` of ``samples``, computed server-side: any addition,
    deletion or FiftyOne edit after a stamp changes the next one."""
    coll = samples._dataset._sample_collection
    group = {"$group": {"_id": None, "n": {"$sum": 1}, "t": {"$max": "$last_modified_at"}}}
    out = list(coll.aggregate(samples._pipeline(post_pipeline=[group]), allowDiskUse=True))
    return (out[0]["n"], out[0]["t"]) if out else (0, None)


def refresh_cached(cache_dir, key, fp):
    """Give the cache entry ``key`` a new fingerprint (after this process wrote other fields of
    the same samples, which bumped their ``last_modified_at``)."""
    path = os.path.join(cache_dir, key, "meta.json")
    with open(path) as f:
        meta = json.load(f)
    meta["fingerprint"] = fp
    tmp = f"{path}.{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1, default=str)
    os.replace(tmp, path)


def drop_cached(cache_dir, key):
    """Remove the cache entry ``key``, if any."""
    shutil.rmtree(os.path.join(cache_dir, key), ignore_errors=True)


def _count_docs(raw):
    count, pos = 0, 0
    while pos < len(raw):
        pos += int.from_bytes(raw[pos : pos + 4], "little")
        count += 1
    return count


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


_CACHE_FILES = ("X.npy", "ids.npy", "missing.npy")


def load_cached(cache_dir, key, fp):
    """``(X, ids, missing)`` from the cache entry ``key`` if it is intact and its fingerprint is
    ``fp``, else None (a miss).

    Intact: ``meta.json`` records the shape and dtype of the matrix and a SHA-256 of each file;
    the matrix must be 2-d float32 with that shape, the id arrays ``(n, 12)`` and ``(m, 12)``
    uint8 with ``n`` rows of the matrix, ``n + m`` the collection's size and no id twice, and
    every file must match its checksum (one sequential read of the entry). ``X`` is a read-only
    memory map."""
    path = os.path.join(cache_dir, key)
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("fingerprint") != fp:
            return None
        sums = meta.get("sha256") or {}
        for name in _CACHE_FILES:
            if sums.get(name) != _file_digest(os.path.join(path, name)):
                return None
        X = np.load(os.path.join(path, "X.npy"), mmap_mode="r", allow_pickle=False)
        ids = np.load(os.path.join(path, "ids.npy"), allow_pickle=False)
        missing = np.load(os.path.join(path, "missing.npy"), allow_pickle=False)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if (
        X.ndim != 2
        or X.dtype != np.float32
        or list(X.shape) != list(meta.get("shape", []))
        or meta.get("dtype") != "float32"
        or ids.dtype != np.uint8
        or missing.dtype != np.uint8
        or ids.ndim != 2
        or missing.ndim != 2
        or ids.shape[1:] != (12,)
        or missing.shape[1:] != (12,)
        or X.shape[0] != len(ids)
        or len(ids) + len(missing) != fp["count"]
    ):
        return None
    every = np.concatenate([ids, missing]).view("V12").ravel()
    if len(np.unique(every)) != len(every):
        return None
    return X, ids, missing


def save_cached(cache_dir, key, fp, X, ids, missing, info=None):
    """Write the cache entry ``key`` (replacing an older one): files in a new directory that
    is then renamed into place."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, key)
    tmp = os.path.join(cache_dir, f".{key}.{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        arrays = {"X.npy": X, "ids.npy": ids, "missing.npy": missing}
        for name, arr in arrays.items():
            np.save(os.path.join(tmp, name), arr)
        meta = {
            "fingerprint": fp,
            "shape": list(X.shape),
            "dtype": str(X.dtype),
            "sha256": {name: _file_digest(os.path.join(tmp, name)) for name in arrays},
            "created": time.time(),
            **(info or {}),
        }
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1, default=str)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


# --- progress -----------------------------------------------------------------------------------


class RateLimit:
    """``due(force=False)``: true at most every ``dt`` seconds (always when ``force``); the one
    pacing rule of every progress report (the read, the write, the scoring and its set-up)."""

    def __init__(self, dt=None):
        self.dt = PROGRESS_DT if dt is None else dt
        self.last = -np.inf

    def due(self, force=False):
        now = time.monotonic()
        if force or now - self.last >= self.dt:
            self.last = now
            return True
        return False


class _Throttle:
    """``report(done)``: calls ``progress(done, total, label)`` at most every PROGRESS_DT s."""

    def __init__(self, progress, total, label):
        self.progress = progress if callable(progress) else None
        self.total = max(int(total), 1)
        self.label = label
        self.rate = RateLimit()

    def __call__(self, done, force=False):
        if self.progress is not None and self.rate.due(force):
            self.progress(min(int(done), self.total), self.total, self.label)
