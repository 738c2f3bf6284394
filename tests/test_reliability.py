"""Issue 12: concurrent runs, read-only fields, checks before writes, cache integrity, signals,
orphaned workers, messages. Real FiftyOne on the session's MongoDB, real processes and signals
(tests/zcore_child.py is a compute_zcore run in its own process that stops at a known point)."""

import io
import os
import signal
import subprocess
import sys
import warnings
import zlib

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from conftest import process_gone, wait_gone
from fiftyone.operators.executor import ExecutionError

import zcore
from zcore import lock, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "zcore_child.py")
COMPUTE = "@zcore/zcore/compute_zcore"
SELECT = "@zcore/zcore/select_coreset"
FAST = {"n_samples": 300, "redund_nn": 10}


def _state(ds, field="zcore_score"):
    ds.reload()
    return {
        "values": ds.values(field) if ds.get_field(field) else None,
        "fields": sorted(ds.get_field_schema()),
        "runs": {k: ds.get_run_info(k).config.seed for k in ds.list_runs()},
        "views": ds.list_saved_views(),
    }


def _tmp_collections(ds):
    db = ds._sample_collection.database
    return [c for c in db.list_collection_names() if c.startswith(store._TMP_PREFIX)]


class Child:
    """A compute_zcore process stopped at its first progress report matching ``label``."""

    def __init__(self, ds, seed, label, min_fraction=0.0, **options):
        import json

        args = [f"{k}={json.dumps(v)}" for k, v in {**FAST, **options}.items()]
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, ds.name, str(seed), label, str(min_fraction), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def wait_blocked(self):
        line = self.proc.stdout.readline()
        if not line.startswith("BLOCKED"):
            self.proc.wait()
            raise AssertionError(f"child did not block: {line!r} {self.proc.stderr.read()[-3000:]}")
        pids = [int(x) for x in line.split()[1:]]
        return pids[0], pids[1:]

    def resume(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self):
        out, err = self.proc.communicate()
        return self.proc.returncode, out, err


@pytest.fixture
def ds(make_dataset):
    ds, X = make_dataset(80, 6)
    ds.persistent = True  # loaded by the child processes
    return ds


# --- item 2: one writer per (dataset, field) -----------------------------------------------------


@pytest.mark.parametrize("existing", [False, True])
def test_second_run_on_the_same_field_is_refused_and_names_the_first(ds, existing):
    if existing:
        zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    child = Child(ds, 1, "scoring", overwrite=existing)
    pid, _ = child.wait_blocked()
    try:
        with pytest.raises(lock.ConcurrentRun, match=rf"pid {pid} on host .*zcore_score"):
            zcore.compute_zcore(ds, embeddings="embeddings", seed=2, overwrite=True, **FAST)
        # the same run key with another field is one writer too
        with pytest.raises(lock.ConcurrentRun, match=f"pid {pid}"):
            zcore.compute_zcore(
                ds, embeddings="embeddings", score_field="other", run_key="zcore_score", **FAST
            )
    finally:
        child.resume()
    code, out, err = child.finish()
    assert code == 0, err[-3000:]
    assert "DONE 1" in out
    assert lock.holders(ds) == []
    ds.reload()
    assert ds.get_run_info("zcore_score").config.seed == 1
    X = np.stack(ds.values("embeddings"))
    np.testing.assert_allclose(
        ds.values("zcore_score"), zcore.zcore_scores(X, seed=1, **FAST), rtol=0, atol=1e-12
    )
    # after the first run: a new field is not new any more
    if not existing:
        with pytest.raises(ValueError, match="already exists"):
            zcore.compute_zcore(ds, embeddings="embeddings", seed=2, **FAST)


def test_a_killed_runs_lock_and_temporary_collection_are_recovered(ds, monkeypatch):
    # the child stops once its scores are in the temporary collection, before the move
    child = Child(ds, 1, "writing", 0.01)
    pid, _ = child.wait_blocked()
    assert [h["pid"] for h in lock.holders(ds)] == [pid, pid]  # field and run key
    tmps = _tmp_collections(ds)
    assert len(tmps) == 1 and str(ds._doc.id) in tmps[0]
    os.kill(pid, signal.SIGKILL)
    child.finish()
    assert _tmp_collections(ds) == tmps and len(lock.holders(ds)) == 2  # left behind
    assert ds.get_field("zcore_score") is None

    res = zcore.compute_zcore(ds, embeddings="embeddings", seed=3, **FAST)
    assert res.seed == 3 and ds.get_run_info("zcore_score").config.seed == 3
    assert _tmp_collections(ds) == [] and lock.holders(ds) == []


def test_a_lock_held_from_another_host_is_not_broken_but_can_be_removed(ds):
    import psutil

    coll = lock._collection()
    doc = {
        "_id": f"{ds._doc.id}:field:zcore_score",
        "token": "elsewhere",
        "dataset_id": str(ds._doc.id),
        "dataset": ds.name,
        "pid": 1,
        "host": "another-machine",
        "process_started": psutil.Process(1).create_time(),
        "run_key": "zcore_score",
    }
    coll.insert_one(doc)
    try:
        with pytest.raises(lock.ConcurrentRun, match="another-machine.*break_lock"):
            zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
        assert ds.get_field("zcore_score") is None
        assert lock.break_lock(ds, "zcore_score") == 1
        zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    finally:
        coll.delete_many({"_id": doc["_id"]})


# --- items 6, 7: signals ---------------------------------------------------------------------------


def test_sigterm_releases_the_lock_and_leaves_the_dataset_as_it_was(ds):
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    before = _state(ds)
    child = Child(ds, 1, "scoring", overwrite=True)
    pid, _ = child.wait_blocked()
    os.kill(pid, signal.SIGTERM)
    code, _, err = child.finish()
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert lock.holders(ds) == [] and _tmp_collections(ds) == []
    assert _state(ds) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_during_the_move_complete_it_with_its_run_record(ds, monkeypatch, sig):
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    # several merge ranges; the child stops after the first range is merged (fraction > 1/2)
    child = Child(ds, 1, "writing", 0.51, overwrite=True)
    pid, _ = child.wait_blocked()
    os.kill(pid, sig)
    os.kill(pid, sig)  # a second Ctrl-C
    child.resume()
    code, out, err = child.finish()
    assert code != 0 and "DONE" not in out
    ds.reload()
    X = np.stack(ds.values("embeddings"))
    np.testing.assert_allclose(
        ds.values("zcore_score"), zcore.zcore_scores(X, seed=1, **FAST), rtol=0, atol=1e-12
    )
    assert ds.get_run_info("zcore_score").config.seed == 1
    assert lock.holders(ds) == [] and _tmp_collections(ds) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + /proc")
def test_workers_die_with_a_killed_parent(make_dataset):
    ds, _ = make_dataset(2000, 6)
    ds.persistent = True
    # stops at the first report of the workers' progress (stage "scoring"),
    # with enough points left that they are busy for a long while
    child = Child(
        ds,
        1,
        "scoring",
        0.0,
        use_multiprocessing=True,
        num_workers=2,
        n_samples=2_000_000,
        redund_nn=10,
        engine="numpy",
    )
    pid, kids = child.wait_blocked()
    workers = [k for k in kids if not process_gone(k)]
    assert workers, "no worker processes were running"
    os.kill(pid, signal.SIGKILL)
    child.finish()
    assert wait_gone(workers) == []


def test_num_workers_is_capped_to_usable_cpus():
    X = np.random.default_rng(0).normal(size=(50, 4))
    usable = len(os.sched_getaffinity(0))
    with pytest.warns(RuntimeWarning, match=f"num_workers=48 is more than the {usable} CPU"):
        got = zcore.zcore_scores(X, seed=0, use_multiprocessing=True, num_workers=48, **FAST)
    np.testing.assert_array_equal(got, zcore.zcore_scores(X, seed=0, **FAST))


# --- item 3: read-only fields ----------------------------------------------------------------------


def test_read_only_score_field_is_refused(ds):
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, component_fields=True, **FAST)
    field = ds.get_field("zcore_score_coverage")
    field.read_only = True
    field.save()
    before = _state(ds)
    with pytest.raises(ValueError, match="'zcore_score_coverage' is read-only"):
        zcore.compute_zcore(
            ds, embeddings="embeddings", seed=1, overwrite=True, component_fields=True, **FAST
        )
    assert _state(ds) == before
    assert lock.holders(ds) == []


# --- item 4: every check before anything is written --------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"save_coreset": True, "view_name": "taken", "fraction": 0.5}, "'taken' exists"),
        ({"save_coreset": True, "view_name": "Taken!", "fraction": 0.5}, "same slug"),
        ({"save_coreset": True, "threshold": float("nan")}, "threshold must be finite"),
        ({"save_coreset": True, "size_mode": "size"}, "no size was given"),
    ],
)
def test_compute_operator_checks_the_coreset_before_writing(ds, params, match):
    ds.save_view("taken", ds.limit(3))
    before = _state(ds)
    with pytest.raises(ExecutionError, match=match):
        foo.get_operator(COMPUTE)(ds, embeddings="embeddings", seed=0, **FAST, **params)
    assert _state(ds) == before


def test_select_operator_checks_the_view_name_before_recording_a_run(ds):
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    ds.save_view("taken", ds.limit(3))
    before = _state(ds)
    with pytest.raises(ExecutionError, match="'taken' exists"):
        foo.get_operator(SELECT)(
            ds,
            size=10,
            method="cluster_balanced",
            embeddings="embeddings",
            n_clusters=3,
            view_name="taken",
        )
    assert _state(ds) == before


def test_select_operator_needs_a_size(ds):
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    from fiftyone.operators.executor import ExecutionContext

    op = foo.get_operator(SELECT)
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {}})
    with pytest.raises(ValueError, match="exactly one of size, fraction or threshold"):
        op.execute(ctx)


def test_python_duplicates_view_is_checked_before_selecting(ds):
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    ds.save_view("dups", ds.limit(2))
    before = _state(ds)
    with pytest.raises(ValueError, match="'dups' exists"):
        zcore.select_coreset(
            ds, size=10, embeddings="embeddings", dedup_threshold=1.5, duplicates_view="dups"
        )
    assert _state(ds) == before


# --- item 5: cache -----------------------------------------------------------------------------------


def _entry(cache_dir):
    (key,) = [k for k in os.listdir(cache_dir) if not k.startswith(".")]
    return os.path.join(cache_dir, key)


@pytest.mark.parametrize(
    "tamper",
    ["wider", "float64", "same_shape_other_values", "ids_swapped", "ids_duplicated"],
)
def test_tampered_cache_entries_are_misses(ds, tmp_path, tamper):
    cache = str(tmp_path / "cache")
    zcore.compute_zcore(ds, embeddings="embeddings", seed=0, cache_dir=cache, **FAST)
    hit = zcore.compute_zcore(
        ds, embeddings="embeddings", seed=0, cache_dir=cache, overwrite=True, **FAST
    )
    assert hit.embeddings_cache == "hit"
    entry = _entry(cache)
    X = np.load(os.path.join(entry, "X.npy"))
    ids = np.load(os.path.join(entry, "ids.npy"))
    if tamper == "wider":
        np.save(os.path.join(entry, "X.npy"), np.hstack([X, X[:, :1]]))
    elif tamper == "float64":
        np.save(os.path.join(entry, "X.npy"), X.astype(np.float64))
    elif tamper == "same_shape_other_values":
        np.save(os.path.join(entry, "X.npy"), X[::-1].copy())
    elif tamper == "ids_swapped":
        np.save(os.path.join(entry, "ids.npy"), ids[::-1].copy())
    else:
        ids[1] = ids[0]
        np.save(os.path.join(entry, "ids.npy"), ids)
    res = zcore.compute_zcore(
        ds, embeddings="embeddings", seed=4, cache_dir=cache, overwrite=True, **FAST
    )
    assert res.embeddings_cache == "miss"
    Xdb = np.stack(ds.values("embeddings"))
    np.testing.assert_allclose(
        ds.values("zcore_score"), zcore.zcore_scores(Xdb, seed=4, **FAST), rtol=0, atol=1e-12
    )


def test_cache_write_failures_leave_a_consistent_dataset(ds, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = zcore.compute_zcore(
            ds, embeddings="embeddings", seed=0, cache_dir=str(blocker / "cache"), **FAST
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "could not write the embeddings cache" in messages[0]
    assert res.embeddings_cache is None
    assert ds.get_run_info("zcore_score").config.seed == res.seed == 0

    cache = str(tmp_path / "cache")
    zcore.compute_zcore(
        ds, embeddings="embeddings", seed=1, cache_dir=cache, overwrite=True, **FAST
    )

    def read_only(*args, **kwargs):  # injected: the entry cannot be rewritten after the write
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store, "refresh_cached", read_only)
    with pytest.warns(UserWarning, match="could not update the embeddings cache entry"):
        zcore.compute_zcore(
            ds, embeddings="embeddings", seed=2, cache_dir=cache, overwrite=True, **FAST
        )
    X = np.stack(ds.values("embeddings"))
    np.testing.assert_allclose(
        ds.values("zcore_score"), zcore.zcore_scores(X, seed=2, **FAST), rtol=0, atol=1e-12
    )
    assert ds.get_run_info("zcore_score").config.seed == 2


def test_operator_cache_dir_only_under_the_configured_root(ds, tmp_path, monkeypatch):
    monkeypatch.delenv("ZCORE_CACHE_ROOT", raising=False)
    op = foo.get_operator(COMPUTE)
    before = _state(ds)
    with pytest.raises(ExecutionError, match="must set ZCORE_CACHE_ROOT"):
        op(ds, embeddings="embeddings", seed=0, cache_dir=str(tmp_path / "c"), **FAST)
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("ZCORE_CACHE_ROOT", str(root))
    for outside in (str(tmp_path / "elsewhere"), "../elsewhere", "/etc"):
        with pytest.raises(ExecutionError, match="is outside ZCORE_CACHE_ROOT"):
            op(ds, embeddings="embeddings", seed=0, cache_dir=outside, **FAST)
    assert _state(ds) == before
    op(ds, embeddings="embeddings", seed=0, cache_dir="mine", **FAST)
    assert os.listdir(root / "mine")


# --- item 9: messages ---------------------------------------------------------------------------------


def test_messages_name_the_problem(make_dataset):
    ds, _ = make_dataset(10, 3)
    with pytest.raises(ValueError, match="no dots or '\\$'"):
        zcore.compute_zcore(ds, embeddings="embeddings", score_field="a$b")
    ds.add_sample_field("text", fo.StringField)
    ds.set_values("text", ["x"] * len(ds))
    with pytest.raises(ValueError, match="'text' holds str values.*not vectors of numbers"):
        zcore.compute_zcore(ds, embeddings="text", seed=0)
    # tags (a list of strings) is not offered as a vector field
    with pytest.raises(ValueError, match="'nope' not found.*vector fields: \\['embeddings'\\]$"):
        zcore.compute_zcore(ds, embeddings="nope", seed=0)
    ds.set_values("cplx", [np.array([1 + 2j, 3, 4]) for _ in range(len(ds))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent ComplexWarning cast
        with pytest.raises(ValueError, match="'cplx' holds complex values"):
            zcore.compute_zcore(ds, embeddings="cplx", seed=0)
    with pytest.raises(ExecutionError, match="score_field must be a top-level field name"):
        foo.get_operator(COMPUTE)(ds, embeddings="embeddings", score_field=5)


def _npy_blob(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return zlib.compress(buf.getvalue())


_GOOD_BLOB = _npy_blob(np.zeros(3, np.float32))
_BAD_VECTORS = {
    "garbage": (b"garbage", "cannot be decoded as a vector \\(zlib: Error -3"),
    "truncated": (_GOOD_BLOB[:-8], "cannot be decoded as a vector \\(zlib: Error -5"),
    "object npy": (
        _npy_blob(np.array([{"a": 1}, 2], dtype=object)),
        "cannot be decoded as a vector \\(not a .npy array of numbers\\)",
    ),
    "not npy": (zlib.compress(b"hello"), "not a .npy array of numbers"),
    "dict": ({"a": 1}, "holds dict values \\(e.g. sample {id}\\), not vectors of numbers"),
    "nested": ([[1.0, 2.0, 3.0]], "holds nested lists or vectors of different shapes"),
    "ragged": (_npy_blob(np.zeros(5, np.float32)), "holds vectors of different lengths \\[3, 5\\]"),
    "strings": (["a", "b", "c"], "holds non-numeric values"),
}


@pytest.mark.parametrize("row", [0, 7])  # the first value (sets the width) or a later one
@pytest.mark.parametrize("case", sorted(_BAD_VECTORS))
def test_corrupted_vectors_are_named_on_the_fast_read_path(make_dataset, case, row):
    """A value written behind FiftyOne's back (raw MongoDB update) into a VectorField: the
    batched BSON reader, or the values() path it falls back to, names the field (and, for bytes
    it cannot decode, the sample) and says what to do; no numpy/zlib text alone, nothing
    written."""
    from bson import ObjectId

    ds, _ = make_dataset(10, 3)
    sid = ds.values("id")[row]
    value, match = _BAD_VECTORS[case]
    ds._sample_collection.update_one({"_id": ObjectId(sid)}, {"$set": {"embeddings": value}})
    match = match.format(id=sid)
    if "cannot be decoded" in match:
        match = f"the stored value of sample {sid} {match}.*Recompute the embeddings"
    with pytest.raises(ValueError, match=f"embeddings field 'embeddings'.*{match}") as e:
        zcore.compute_zcore(ds, embeddings="embeddings", seed=0, **FAST)
    assert "allow_pickle" not in str(e.value) and "inhomogeneous" not in str(e.value)
    ds.reload()
    assert not ds.has_sample_field("zcore_score") and ds.list_runs() == []


def test_corrupted_vectors_are_named_on_the_values_path():
    """Frame-level embeddings are read with values(): FiftyOne's zlib/numpy errors are named."""
    ds = fo.Dataset()
    sample = fo.Sample(filepath="/tmp/zcore-test/video.mp4")
    for i in range(1, 11):
        sample.frames[i] = fo.Frame(emb=np.random.default_rng(i).random(3).astype(np.float32))
    ds.add_sample(sample)
    try:
        frame_id = ds._frame_collection.find_one({})["_id"]
        for value, what in [(b"garbage", "zlib: Error -3"), ({"a": 1}, "not a .npy array")]:
            ds._frame_collection.update_one({"_id": frame_id}, {"$set": {"emb": value}})
            with pytest.raises(
                ValueError,
                match=f"'frames.emb': a stored value cannot be decoded as a vector \\({what}.*"
                "Recompute the embeddings",
            ):
                zcore.compute_zcore(ds, embeddings="frames.emb", seed=0, **FAST)
        # deleting the dataset reloads the in-memory sample's frames: give it a valid one back
        ds._frame_collection.update_one({"_id": frame_id}, {"$set": {"emb": _GOOD_BLOB}})
    finally:
        ds.delete()
