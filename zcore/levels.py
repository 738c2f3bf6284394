"""Levels: where a collection's units live, and how their embeddings are read and scores written.

A collection is scored where its embeddings live; each level is a small class that owns its
reads and writes (:func:`level_of` picks it):

- :class:`SampleLevel`: images, a view, the active slice of a grouped dataset, a ``to_frames()``
  view (there the score lands on the source video's frames too). Top-level vector fields are read
  by the fast path (:mod:`zcore.store`: batched raw reads, an optional verified cache, writes
  through a temporary collection moved server-side);
- :class:`PatchLevel`: object patches of a ``to_patches(field)`` view; embeddings are an attribute
  of the labels (``"<field>.<attr>"``, or just ``"<attr>"``) and the score is written on each
  label (``detections.detections.zcore_score`` on the dataset);
- :class:`FrameLevel`: video frames, for frame-level embeddings ``"frames.<attr>"``; the score is
  written to ``frames.<score_field>``.

What was read comes back as a batch: :class:`StoredBatch` (the fast path; rows named by raw
``_id`` bytes) or :class:`LoadedBatch` (FiftyOne's ``values()``; rows named by id strings). Both
write their columns back with the same contract.
"""

import os
import warnings
import zlib

import fiftyone as fo
import numpy as np

from . import lock, store
from .core.validation import check_embeddings


def field_names(embeddings):
    """``embeddings`` as a list of field names, or ``[]`` when it is not a name or names (an
    array)."""
    if isinstance(embeddings, str):
        return [embeddings]
    if (
        isinstance(embeddings, (list, tuple))
        and embeddings
        and all(isinstance(e, str) for e in embeddings)
    ):
        return list(embeddings)
    return []


def is_frame_path(samples, field):
    """Whether ``field`` names a frame field (``"frames.<name>"``) of a video collection."""
    return isinstance(field, str) and field.startswith("frames.") and samples._has_frame_fields()


def level_of(samples, embeddings=None):
    """The level of ``samples`` for ``embeddings`` (field name(s), an array or ``None``)."""
    names = field_names(embeddings)
    frame_names = [n for n in names if n.startswith("frames.")]
    if frame_names and samples._has_frame_fields():
        if len(frame_names) != len(names):
            raise ValueError(
                f"embeddings {names} mix frame-level ('frames.') and sample-level fields; "
                "score frames or samples, not both"
            )
        return FrameLevel(samples)
    if getattr(samples, "_is_patches", False):
        return PatchLevel(samples)
    return SampleLevel(samples)


class SampleLevel:
    """One value per sample (see the module docstring)."""

    kind = "samples"

    def __init__(self, samples):
        self.samples = samples

    # --- names

    def path(self, name):
        """Path of an output field ``name`` in this collection."""
        return name

    def root_path(self, name):
        """Path of an output field ``name`` on the dataset."""
        return self.path(name)

    def resolve(self, field):
        """A field given by the user, as a path of this collection."""
        return field

    def get_field(self, name):
        """The existing output field ``name`` (on the dataset), or ``None``."""
        return self.samples._dataset.get_field(self.path(name))

    def read_only_parent(self, name):
        """The path of the read-only field among ``name``'s path on the dataset and its
        parents, or ``None``."""
        root = self.samples._root_dataset
        parts = self.root_path(name).split(".")
        for i in range(len(parts), 0, -1):
            sub = ".".join(parts[:i])
            field = root.get_field(sub)
            if field is not None and getattr(field, "read_only", False):
                return sub
        return None

    def schema(self):
        """Flat schema in which embeddings fields are looked up."""
        return self.samples.get_field_schema(flat=True)

    # --- values

    def ids(self):
        """Ids of the units, in collection order."""
        return self.samples.values("id")

    def read(self, field):
        """One value of ``field`` per unit, in collection order."""
        return self.samples.values(field)

    def write(self, name, values, ftype, description):
        """Writes ``values`` (a dict id -> value) into the output field ``name``."""
        samples = self.samples
        if getattr(samples, "_is_frames", False):
            # a to_frames() view: set_values declares the field on the source frames too
            samples.set_values(name, values, key_field="id")
            return
        if self.get_field(name) is None:
            samples._dataset.add_sample_field(name, ftype, description=description)
        samples.set_values(name, values, key_field="id")

    # --- embeddings

    def read_embeddings(self, embeddings, *, progress=None, cache_dir=None):
        """The batch to score: top-level vector fields through the fast path (cached in
        ``cache_dir`` when given), anything else, or values the fast reader cannot take exactly
        like ``values()`` (then the general path reports the error), through
        :meth:`load_embeddings`."""
        names = field_names(embeddings)
        schema = self.schema() if names else {}
        if names and store.supports(self.samples, names) and all(f in schema for f in names):
            batch = _read_stored(self.samples, names, progress, cache_dir)
            if batch is not None:
                return batch
        return LoadedBatch.of(self, embeddings)

    def load_embeddings(self, embeddings):
        """``(ids, X, fields)``: ids of the units that have embeddings, their float32 matrix, the
        fields (``None`` when ``embeddings`` is an array; then every unit must have a row)."""
        if not field_names(embeddings):
            ids = self.ids()
            X = check_embeddings(embeddings)
            if len(X) != len(ids):
                raise ValueError(
                    f"embeddings has {len(X)} rows but the collection has {len(ids)} "
                    f"{self.kind}; pass one row per sample, in the collection's order"
                )
            return ids, X, None
        fields = [self.resolve(f) for f in field_names(embeddings)]
        schema = self.schema()
        columns = []
        for f in fields:
            # label attributes of patches may be undeclared (dynamic): then read them anyway
            col = self._read_vectors(f) if f in schema or "." in f else None
            if col is None or (f not in schema and all(v is None for v in col)):
                vectors = sorted(k for k, v in schema.items() if is_vector_field(v))
                raise ValueError(
                    f"embeddings field {f!r} not found on the collection; vector fields: {vectors}"
                )
            columns.append(col)
        ids = self.ids()
        keep = [i for i in range(len(ids)) if all(col[i] is not None for col in columns)]
        parts = [_matrix(f, [col[i] for i in keep]) for f, col in zip(fields, columns)]
        X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if len(keep) >= 3:
            X = check_embeddings(X, input_name=f"embeddings field(s) {fields}")
        return [ids[i] for i in keep], X, fields

    def _read_vectors(self, field):
        """The values of ``field``, one per unit; FiftyOne's own decoding errors (zlib, numpy)
        become a message that names the field and says what to do."""
        try:
            values = self.read(field)
        except (zlib.error, ValueError, TypeError, EOFError) as e:
            raise ValueError(store.undecodable_message(field, e)) from e  # cause kept for debugging
        return [_as_vector(v) for v in values]


class PatchLevel(SampleLevel):
    """One value per object patch of a ``to_patches()`` view (see the module docstring)."""

    kind = "patches"

    def __init__(self, samples):
        super().__init__(samples)
        self.patches_field = samples.patches_field

    def path(self, name):
        return f"{self.patches_field}.{name}"

    def root_path(self, name):
        return self.samples._root_dataset._get_label_field_path(self.patches_field, name)[1]

    def resolve(self, field):
        """On a patches view, ``attr`` means ``<patches_field>.attr`` unless ``attr`` is a field
        of the patches themselves."""
        if field.startswith(self.patches_field + "."):
            return field
        if self.samples.get_field(field) is not None:
            return field
        return f"{self.patches_field}.{field}"

    def get_field(self, name):
        return self.samples._root_dataset.get_field(self.root_path(name))

    def write(self, name, values, ftype, description):
        samples, root = self.samples, self.samples._root_dataset
        path = self.path(name)
        if self.get_field(name) is None:
            root.add_sample_field(self.root_path(name), ftype, description=description)
        if samples._dataset.get_field(path) is None:
            samples._dataset.add_sample_field(path, ftype, description=description)
        samples.set_values(path, values, key_field="id")

    def read_embeddings(self, embeddings, *, progress=None, cache_dir=None):
        return LoadedBatch.of(self, embeddings)


class FrameLevel(SampleLevel):
    """One value per video frame (see the module docstring)."""

    kind = "frames"

    def path(self, name):
        return f"frames.{name}"

    def schema(self):
        frame_schema = self.samples.get_frame_field_schema(flat=True)
        return {**super().schema(), **{"frames." + k: v for k, v in frame_schema.items()}}

    def ids(self):
        return [i for frames in self.samples.values("frames.id") for i in frames]

    def read(self, field):
        return [v for frames in self.samples.values(field) for v in frames]

    def write(self, name, values, ftype, description):
        samples = self.samples
        if self.get_field(name) is None:
            samples._dataset.add_frame_field(name, ftype, description=description)
        nested = [[values[i] for i in frames] for frames in samples.values("frames.id")]
        samples.set_values(self.path(name), nested)

    def read_embeddings(self, embeddings, *, progress=None, cache_dir=None):
        return LoadedBatch.of(self, embeddings)


# --- what was read -------------------------------------------------------------------------------


class LoadedBatch:
    """Embeddings read with FiftyOne's ``values()``: ``ids`` (strings) of the rows of ``X``, and
    ``all_ids`` every unit of the level (``None`` for an array: every unit has a row)."""

    cache = None

    def __init__(self, X, fields, ids, all_ids=None):
        self.X, self.fields, self.ids, self.all_ids = X, fields, ids, all_ids

    @classmethod
    def of(cls, level, embeddings):
        ids, X, fields = level.load_embeddings(embeddings)
        return cls(X, fields, ids, all_ids=level.ids() if fields is not None else None)

    @property
    def n_all(self):
        return len(self.ids if self.all_ids is None else self.all_ids)

    def write(self, level, columns, ftypes, descriptions, progress, held=None, on_written=None):
        """Write ``columns`` (name -> one value per row of ``X``); units without embeddings get
        ``None``. ``on_written()`` (the run record) is called as part of the write, with
        SIGINT/SIGTERM held back until it returned."""
        all_ids = self.ids if self.all_ids is None else self.all_ids
        with lock.deferred_interrupts():
            for name, column in columns.items():
                values = dict.fromkeys(all_ids)
                values.update(zip(self.ids, column.tolist()))
                level.write(name, values, ftypes[name], descriptions[name])
            if on_written is not None:
                on_written()


class StoredBatch:
    """Embeddings read by :mod:`zcore.store`: ``ids``/``missing`` are ``(n, 12)`` uint8 arrays of
    the ``_id`` bytes of the samples with and without embeddings; ``cache`` is ``"hit"``,
    ``"miss"`` or ``None``, ``cache_ref`` ``(cache_dir, key, stamp at read time)``."""

    def __init__(self, X, fields, ids, missing, cache=None, cache_ref=None):
        self.X, self.fields, self.ids, self.missing = X, fields, ids, missing
        self.cache, self.cache_ref = cache, cache_ref

    @property
    def n_all(self):
        return len(self.ids) + len(self.missing)

    def write(self, level, columns, ftypes, descriptions, progress, held=None, on_written=None):
        """As :meth:`LoadedBatch.write`, through a temporary collection moved server-side
        (:func:`zcore.store.write_columns`); then keeps the cache entry valid."""
        samples = level.samples
        cols = [(k, v, ftypes[k], descriptions[k]) for k, v in columns.items()]
        unchanged = self.cache_ref is not None and store.stamp(samples) == self.cache_ref[2]
        store.write_columns(
            samples,
            self.ids,
            self.missing,
            cols,
            progress=progress,
            tmp_prefix=None if held is None else held.tmp_prefix,
            on_written=on_written,
        )
        if self.cache_ref is None:
            return
        # writing the scores bumped last_modified_at: keep the cache entry valid, unless the
        # samples changed since they were read. The cache is an optimisation: a failure here
        # (read-only directory...) is a warning, the dataset is written.
        cache_dir, key, _ = self.cache_ref
        try:
            if unchanged:
                store.refresh_cached(cache_dir, key, store.fingerprint(samples))
            else:
                store.drop_cached(cache_dir, key)
        except OSError as e:
            warnings.warn(
                f"could not update the embeddings cache entry {key} in {cache_dir} ({e}); it "
                "will be a miss next time",
                stacklevel=3,
            )


def _read_stored(samples, names, progress, cache_dir):
    """A :class:`StoredBatch`, or ``None`` when the fast reader cannot take these values."""
    report = progress if callable(progress) else None
    key = fp = ref = None
    if cache_dir is not None:
        cache_dir = os.path.expanduser(os.fspath(cache_dir))
        key = store.cache_key(samples, names)
        ref = (cache_dir, key, store.stamp(samples))
        fp = store.fingerprint(samples, progress=report)
        hit = store.load_cached(cache_dir, key, fp)
        if hit is not None:
            X, ids, missing = hit
            return StoredBatch(X, names, ids, missing, cache="hit", cache_ref=ref)
    try:
        X, ids, missing = store.read_embeddings(samples, names, progress=report)
    except store.Unsupported:
        return None
    if len(X) >= 3:
        X = check_embeddings(X, input_name=f"embeddings field(s) {names}")
        if key is not None:  # only valid embeddings are cached
            try:
                store.save_cached(cache_dir, key, fp, X, ids, missing, {"fields": names})
            except OSError as e:  # the cache is an optimisation: the run goes on
                warnings.warn(
                    f"could not write the embeddings cache entry {key} in {cache_dir} ({e}); "
                    "scoring without caching",
                    stacklevel=4,
                )
                key = ref = None
    return StoredBatch(X, names, ids, missing, cache=None if key is None else "miss", cache_ref=ref)


# --- vectors -------------------------------------------------------------------------------------


def is_vector_field(field):
    """Whether a FiftyOne field can hold embeddings (a vector, array or list of numbers)."""
    return isinstance(field, (fo.VectorField, fo.ArrayField)) or (
        isinstance(field, fo.ListField) and isinstance(field.field, (fo.FloatField, fo.IntField))
    )


def _matrix(field, rows):
    """The float32 matrix of one field's vectors, or a named error."""
    _check_real_vectors(field, rows)
    lengths = {np.size(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"embeddings field {field!r} holds vectors of different lengths "
            f"{sorted(lengths)[:5]}; recompute them with one model"
        )
    if not rows:
        return np.empty((0, 1), np.float32)
    try:
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    except ValueError:  # numpy's "inhomogeneous shape" says nothing of the field
        raise ValueError(
            f"embeddings field {field!r} holds nested lists or vectors of different shapes; "
            "store one flat vector of numbers per sample (recompute the embeddings)"
        ) from None


def _check_real_vectors(field, rows):
    """Refuse what cannot be an embedding, naming the field (instead of numpy's message, or a
    silent cast that drops the imaginary part of complex numbers)."""
    for i, r in enumerate(rows):
        if isinstance(r, (str, bytes, dict)) or np.isscalar(r):
            raise ValueError(
                f"embeddings field {field!r} holds {type(r).__name__} values (e.g. row {i}), not "
                "vectors of numbers; pass a vector field (see compute_embeddings)"
            )
    kinds = {np.asarray(r).dtype.kind for r in rows[:1000]}
    bad = kinds - set("fiub")
    if bad:
        kind = "complex" if "c" in bad else "non-numeric"
        raise ValueError(
            f"embeddings field {field!r} holds {kind} values; ZCore needs real-valued vectors "
            "(store e.g. np.abs(v) or the real and imaginary parts side by side)"
        )


def _as_vector(value):
    # undeclared array attributes of labels come back serialized
    if isinstance(value, bytes):
        from fiftyone.core.utils import deserialize_numpy_array

        try:
            return deserialize_numpy_array(value)
        except Exception as e:
            raise ValueError(
                f"a stored vector could not be decoded ({type(e).__name__}: {e}); the field "
                "holds corrupted or non-array bytes: recompute the embeddings"
            ) from None
    return value
