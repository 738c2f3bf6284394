"""Bulk read, interrupt-safe write and the embeddings cache (zcore.store), on real FiftyOne."""

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F

import zcore
from zcore import collection, store

FAST = {"n_samples": 300, "redund_nn": 10}


def _dataset(n=40, d=6, *, seed=0, missing=(), storage="vector", field="emb"):
    """Samples with an int ``i`` and embeddings stored as serialized arrays ("vector",
    "float64") or plain lists ("list")."""
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    ds = fo.Dataset()
    if storage == "list":
        ds.add_sample_field(field, fo.ListField, subfield=fo.FloatField)
    samples = []
    for i in range(n):
        s = fo.Sample(filepath=f"/tmp/zcore-scale/{i:05d}.jpg", i=i)
        if i not in missing:
            value = {"vector": X[i], "float64": X[i].astype(np.float64)}.get(storage)
            s[field] = X[i].tolist() if storage == "list" else value
        samples.append(s)
    ds.add_samples(samples)
    return ds, X


@pytest.fixture
def datasets():
    made = []

    def make(*args, **kwargs):
        ds, X = _dataset(*args, **kwargs)
        made.append(ds)
        return ds, X

    yield make
    for ds in made:
        if not ds.deleted:
            ds.delete()


def _values(view, field):
    return np.array([np.nan if v is None else v for v in view.values(field)], dtype=np.float64)


def _temp_collections(ds):
    names = ds._sample_collection.database.list_collection_names()
    return [c for c in names if c.startswith(store._TMP_PREFIX)]


def _state(ds, field="zcore_score"):
    """Everything a failed run must leave as it was."""
    ds.reload()
    return {
        "values": ds.values(field) if ds.get_field(field) else None,
        "schema": {k: type(v).__name__ for k, v in ds.get_field_schema().items()},
        "modified": ds.values("last_modified_at"),
        "runs": {k: ds.get_run_info(k).config.seed for k in ds.list_runs()},
    }


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["vector", "float64", "list"])
def test_fast_read_equals_values_on_a_filtered_sorted_view(datasets, storage):
    ds, X = datasets(50, 7, missing=(3, 20, 21), storage=storage)
    view = ds.match(F("i") % 4 != 1).sort_by("i", reverse=True)
    got, ids, missing = store.read_embeddings(view, ["emb"])

    values, all_ids = view.values("emb"), view.values("id")
    keep = [k for k, v in enumerate(values) if v is not None]
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.asarray([values[k] for k in keep], dtype=np.float32))
    assert store.id_strings(ids) == [all_ids[k] for k in keep]
    assert set(store.id_strings(missing)) == {all_ids[k] for k in range(len(values))} - set(
        store.id_strings(ids)
    )
    assert len(missing) == 2  # 3 is dropped by the match; 20 and 21 are kept but missing


def test_fast_read_mixed_storage_and_several_fields(datasets):
    ds, X = datasets(30, 5)
    coll = ds._sample_collection
    first = ds.first()
    coll.update_one({"_id": first._id}, {"$set": {"emb": [float(v) for v in X[0]]}})
    ds.set_values("emb2", [x[:3] * 2 for x in X])
    got, ids, _ = store.read_embeddings(ds, ["emb", "emb2"])
    np.testing.assert_array_equal(got, np.concatenate([X, X[:, :3] * 2], axis=1))
    assert store.id_strings(ids) == ds.values("id")


def test_values_that_are_not_vectors_fall_back_to_values_errors(datasets):
    ds, _ = datasets(30, 5)
    ds._sample_collection.update_one({"_id": ds.first()._id}, {"$set": {"emb": [1.0, 2.0]}})
    with pytest.raises(store.Unsupported):
        store.read_embeddings(ds, ["emb"])
    with pytest.raises(ValueError, match="different lengths"):
        zcore.compute_zcore(ds, embeddings="emb", seed=0, **FAST)


def test_read_reports_progress(datasets, monkeypatch):
    ds, _ = datasets(30, 5)
    monkeypatch.setattr(store, "READ_BATCH", 4)
    monkeypatch.setattr(store, "PROGRESS_DT", 0.0)
    calls = []
    store.read_embeddings(ds, ["emb"], progress=lambda d, t, label: calls.append((d / t, label)))
    assert len(calls) >= 8 and calls[-1][0] == 1.0
    assert all(label == "reading embeddings" for _, label in calls)


# --- writing ------------------------------------------------------------------------------------


def test_write_equals_set_values(datasets):
    ds, _ = datasets(40, 5, missing=(2, 9))
    view = ds.match(F("i") >= 5)
    _, ids, missing = store.read_embeddings(view, ["emb"])
    values = np.random.default_rng(1).random(len(ids))
    counts = np.arange(len(ids))
    sample = ds.first()  # in memory, outside the view
    inside = ds[view.first().id]  # in memory, inside the view
    before = dict(zip(ds.values("id"), ds.values("last_modified_at")))

    store.write_columns(
        view,
        ids,
        missing,
        [("new", values, fo.FloatField, "desc"), ("new_n", counts, fo.IntField, None)],
    )
    expected = dict.fromkeys(view.values("id"))
    expected.update(zip(store.id_strings(ids), values.tolist()))
    ds.add_sample_field("old", fo.FloatField)
    view.set_values("old", expected, key_field="id")

    ds.reload()
    assert ds.values("new") == ds.values("old")
    assert ds.values("new")[:5] == [None] * 5  # outside the view: untouched
    assert isinstance(ds.get_field("new"), fo.FloatField)
    assert ds.get_field("new").description == "desc"
    assert isinstance(ds.get_field("new_n"), fo.IntField)
    counts_by_id = dict.fromkeys(view.values("id"))
    counts_by_id.update(zip(store.id_strings(ids), counts.tolist()))
    assert view.values("new_n") == [counts_by_id[i] for i in view.values("id")]
    after = dict(zip(ds.values("id"), ds.values("last_modified_at")))
    written = set(view.values("id"))
    assert all(after[i] > before[i] for i in written)
    assert all(after[i] == before[i] for i in after if i not in written)
    assert sample.new is None and inside.new == expected[inside.id]
    assert _temp_collections(ds) == []


def test_write_reports_progress_and_swaps_in_ranges(datasets, monkeypatch):
    ds, _ = datasets(60, 4)
    monkeypatch.setattr(store, "SWAP_CHUNK", 7)
    monkeypatch.setattr(store, "WRITE_BATCH", 9)
    monkeypatch.setattr(store, "PROGRESS_DT", 0.0)
    monkeypatch.setattr(store, "_range_bounds", _small_ranges(store._range_bounds))
    _, ids, missing = store.read_embeddings(ds, ["emb"])
    calls = []
    store.write_columns(
        ds,
        ids,
        missing,
        [("s", np.linspace(0, 1, 60), fo.FloatField, None)],
        progress=lambda *a: calls.append(a),
    )
    np.testing.assert_array_equal(_values(ds, "s"), np.linspace(0, 1, 60))
    assert len(calls) >= 10 and calls[-1][0] == calls[-1][1]  # done == total at the end


def _small_ranges(bounds):
    return lambda ids, chunk: bounds(ids, min(chunk, 7))


# --- compute_zcore ------------------------------------------------------------------------------


def test_compute_zcore_scores_match_zcore_scores(datasets):
    ds, X = datasets(60, 6, missing=(4, 30))
    ds.add_sample_field("zcore_score", fo.FloatField)
    ds.set_values("zcore_score", [7.0] * 60)
    view = ds.match(F("i") >= 10)
    res = zcore.compute_zcore(view, embeddings="emb", seed=3, overwrite=True, **FAST)
    assert res.num_scored == 49 and res.num_missing == 1 and res.embeddings_cache is None
    rows = [i for i in range(10, 60) if i != 30]
    got = _values(ds, "zcore_score")
    np.testing.assert_array_equal(got[rows], zcore.zcore_scores(X[rows], seed=3, **FAST))
    assert np.isnan(got[30]) and (got[:10] == 7.0).all()
    assert set(res.timings) >= {"read_s", "score_s", "write_s", "record_s", "total_s"}


def test_injected_failure_during_the_write_leaves_everything_intact(datasets, monkeypatch):
    ds, _ = datasets(40, 5, missing=(1,))
    zcore.compute_zcore(ds, embeddings="emb", seed=0, component_fields=True, **FAST)
    before = _state(ds)
    monkeypatch.setattr(store, "WRITE_BATCH", 8)
    insert, calls = store._insert_batch, []

    def failing(tmp, docs):
        calls.append(len(docs))
        if len(calls) == 3:
            raise RuntimeError("injected")
        insert(tmp, docs)

    monkeypatch.setattr(store, "_insert_batch", failing)
    with pytest.raises(RuntimeError, match="injected"):
        zcore.compute_zcore(ds, embeddings="emb", seed=1, overwrite=True, **FAST)
    assert _state(ds) == before
    assert _temp_collections(ds) == []

    # a new field is not declared either
    with pytest.raises(RuntimeError, match="injected"):
        calls.clear()
        zcore.compute_zcore(ds, embeddings="emb", score_field="other", seed=1, **FAST)
    assert _state(ds) == before and ds.get_field("other") is None
    assert _temp_collections(ds) == []


def test_keyboard_interrupt_during_scoring_leaves_everything_intact(datasets, monkeypatch):
    ds, _ = datasets(40, 5)
    zcore.compute_zcore(ds, embeddings="emb", seed=0, **FAST)
    before = _state(ds)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(collection, "score_components", interrupt)
    with pytest.raises(KeyboardInterrupt):
        zcore.compute_zcore(ds, embeddings="emb", seed=1, overwrite=True, **FAST)
    assert _state(ds) == before
    assert _temp_collections(ds) == []


def test_interrupt_during_the_swap_completes_it_and_records_the_run(datasets, monkeypatch):
    ds, X = datasets(60, 5)
    zcore.compute_zcore(ds, embeddings="emb", seed=0, **FAST)
    monkeypatch.setattr(store, "_range_bounds", _small_ranges(store._range_bounds))
    merge, calls = store._merge_chunk, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        merge(*args)

    monkeypatch.setattr(store, "_merge_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zcore.compute_zcore(ds, embeddings="emb", seed=1, overwrite=True, **FAST)
    ds.reload()
    np.testing.assert_array_equal(_values(ds, "zcore_score"), zcore.zcore_scores(X, seed=1, **FAST))
    assert ds.get_run_info("zcore_score").config.seed == 1
    assert _temp_collections(ds) == []


# --- cache --------------------------------------------------------------------------------------


def test_cache_is_hit_then_invalidated_by_edits_additions_and_deletions(
    datasets, monkeypatch, tmp_path
):
    ds, X = datasets(40, 5, missing=(6,))
    rows = [i for i in range(40) if i != 6]
    cache = str(tmp_path / "cache")
    reads = []
    read = store.read_embeddings
    monkeypatch.setattr(store, "read_embeddings", lambda *a, **k: reads.append(1) or read(*a, **k))

    def run(seed, **kw):
        return zcore.compute_zcore(
            ds, embeddings="emb", seed=seed, overwrite=True, cache_dir=cache, **{**FAST, **kw}
        )

    assert run(0).embeddings_cache == "miss" and len(reads) == 1
    res = run(1, redund_nn=5, n_samples=200)
    assert res.embeddings_cache == "hit" and len(reads) == 1
    np.testing.assert_array_equal(
        _values(ds, "zcore_score")[rows],
        zcore.zcore_scores(X[rows], seed=1, redund_nn=5, n_samples=200),
    )
    assert np.isnan(_values(ds, "zcore_score")[6])

    # editing one embedding bumps its last_modified_at, which invalidates the entry
    sample = ds.skip(10).first()
    stamp = sample.last_modified_at
    sample["emb"] = X[10] + 1
    sample.save()
    assert ds[sample.id].last_modified_at > stamp
    assert run(2).embeddings_cache == "miss" and len(reads) == 2
    X2 = X.copy()
    X2[10] += 1
    np.testing.assert_array_equal(
        _values(ds, "zcore_score")[rows], zcore.zcore_scores(X2[rows], seed=2, **FAST)
    )
    assert run(2).embeddings_cache == "hit"

    ds.add_sample(fo.Sample(filepath="/tmp/zcore-scale/new.jpg", emb=X[0]))
    assert run(3).embeddings_cache == "miss" and len(reads) == 3
    assert run(3).embeddings_cache == "hit"
    ds.delete_samples(ds.skip(3).first())
    assert run(4).embeddings_cache == "miss" and len(reads) == 4

    # another view of the same dataset is another entry
    view = ds.match(F("i") < 20)
    res = zcore.compute_zcore(
        view, embeddings="emb", score_field="v", seed=0, cache_dir=cache, **FAST
    )
    assert res.embeddings_cache == "miss"


def test_cache_entry_is_dropped_when_samples_change_during_the_run(datasets, monkeypatch, tmp_path):
    ds, _ = datasets(30, 5)
    cache = str(tmp_path / "cache")
    kw = {"embeddings": "emb", "overwrite": True, "cache_dir": cache, "seed": 0, **FAST}
    assert zcore.compute_zcore(ds, **kw).embeddings_cache == "miss"

    def edit_while_scoring(*args, **kwargs):
        ds.set_values("other", [1] * len(ds))  # bumps last_modified_at after the read
        return score(*args, **kwargs)

    score = collection.score_components
    monkeypatch.setattr(collection, "score_components", edit_while_scoring)
    assert zcore.compute_zcore(ds, **kw).embeddings_cache == "hit"
    monkeypatch.undo()
    assert zcore.compute_zcore(ds, **kw).embeddings_cache == "miss"
    assert zcore.compute_zcore(ds, **kw).embeddings_cache == "hit"
