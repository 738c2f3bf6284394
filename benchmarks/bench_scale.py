"""End-to-end scale benchmark: ``compute_zcore`` delegated on a large persistent dataset.

1. **Dataset** (built once, reused): ``zcore-bench-<n>`` in the FiftyOne database under
   ``--db-dir`` (default ``.cache/bench_scale/db``), ``n`` image samples (fake file paths) with a
   512-d ``embeddings`` ``VectorField``. Embeddings: a Gaussian mixture with a fixed seed, float32:
   20 centres drawn from ``N(0, 2^2)`` per dimension, each sample = a uniformly chosen centre +
   ``N(0, 1)`` noise per dimension, generated 10,000 rows at a time. Rows are inserted with
   pymongo ``insert_many`` as FiftyOne sample documents (``_id``, ``filepath``, ``tags``,
   ``_media_type``, ``_rand``, ``_dataset_id``, ``created_at``, ``last_modified_at``, and the
   vector serialized exactly as ``VectorField`` does); the dataset is then checked through
   FiftyOne (count, first sample, declared field, ``values()`` of a few vectors against the
   generator). A dataset whose build was interrupted is rebuilt.
2. **The run**: the plugin's ``compute_zcore`` operator queued with ``request_delegation=True``,
   then executed in this process by ``DelegatedOperationService`` (as ``fiftyone delegated
   launch`` would), default hyperparameters, ``num_workers=--workers`` (2) worker processes.
   Reported: each phase (``read``, ``score``, ``write``, ``record`` from the run's ``timings``),
   wall time, peak RSS of this process (``ru_maxrss``) and of the largest worker (``ru_maxrss``
   of the children; forked workers share the parent's pages, so that one counts the matrix pages
   they touch again), a sampled peak of the summed PSS of this process and its workers (shared
   pages counted once; the MongoDB server is not included), all against the float32 matrix size,
   and the longest gap between two progress updates of the delegated operation.
3. **Old path** on the first ``--baseline-n`` samples of the same dataset: ``values()`` read
   (embeddings + ids, into a float32 matrix) and ``set_values()`` write of one float field,
   against :mod:`zcore.store`'s read and write of the same samples, with the ratio.

Results: a table on stdout, ``benchmarks/results/scale.md`` and ``scale.json`` (``--out``).

Examples
--------
``python benchmarks/bench_scale.py --n 20000 --baseline-n 20000``
``python benchmarks/bench_scale.py`` (1,280,000 samples; builds the dataset first, ~3 min)
"""

import argparse
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_scoring import _TreeMemory  # noqa: E402

PLUGIN = "@zcore/zcore"
FIELD = "embeddings"
CLUSTERS = 20
BUILD_CHUNK = 10_000


def _setup_env(db_dir):
    """FiftyOne settings, before fiftyone is imported: the database dir and a plugins dir that
    holds this checkout."""
    # a stable plugins dir: numba's on-disk cache is keyed by the source path, so a fresh dir per
    # run would recompile the engine every time (a user's plugins dir does not move)
    plugins = os.path.join(os.path.abspath(db_dir), os.pardir, "plugins")
    os.makedirs(plugins, exist_ok=True)
    if not os.path.lexists(os.path.join(plugins, "zcore")):
        os.symlink(ROOT, os.path.join(plugins, "zcore"))
    os.environ["FIFTYONE_DATABASE_DIR"] = os.path.abspath(db_dir)
    os.environ["FIFTYONE_PLUGINS_DIR"] = plugins
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    os.environ.setdefault("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", "true")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def _warm_engine():
    """Compile the plugin's numba kernels, or load them from numba's cache, under the module name
    the delegated run imports them by: once per plugin location (about 10 s the first time), not
    per run, so it is timed apart."""
    import importlib

    import fiftyone.operators as foo

    package = type(foo.get_operator(PLUGIN + "/compute_zcore")).__module__
    importlib.import_module(package + ".zcore.core.engine_numba").warmup()


def _chunks(n, d, seed):
    """``(start, X)`` blocks of the Gaussian mixture, in order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = (2.0 * rng.standard_normal((CLUSTERS, d))).astype(np.float32)
    for start in range(0, n, BUILD_CHUNK):
        m = min(BUILD_CHUNK, n - start)
        X = rng.standard_normal((m, d), dtype=np.float32)
        X += centres[rng.integers(0, CLUSTERS, m)]
        yield start, X, rng.random(m)


def build_dataset(name, n, d, seed):
    """The persistent benchmark dataset (built when missing or incomplete); seconds spent."""
    from datetime import datetime

    import fiftyone as fo
    import fiftyone.core.utils as fou
    from bson import ObjectId

    spec = {"n": n, "d": d, "seed": seed, "clusters": CLUSTERS, "complete": True}
    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
        if ds.info.get("zcore_bench") == spec and len(ds) == n:
            return ds, 0.0
        ds.delete()
    t = time.perf_counter()
    ds = fo.Dataset(name, persistent=True)
    ds.add_sample_field(FIELD, fo.VectorField, description="synthetic Gaussian mixture")
    coll, dataset_id = ds._sample_collection, ds._doc.id
    for start, X, rand in _chunks(n, d, seed):
        now = datetime.utcnow()
        docs = [
            {
                "_id": ObjectId(),
                "filepath": f"/tmp/zcore-bench/{start + i:08d}.jpg",
                "tags": [],
                "_media_type": "image",
                "_rand": float(rand[i]),
                FIELD: fou.serialize_numpy_array(X[i]),
                "_dataset_id": dataset_id,
                "created_at": now,
                "last_modified_at": now,
            }
            for i in range(len(X))
        ]
        coll.insert_many(docs, ordered=False)
        print(f"  built {start + len(X):,}/{n:,}", end="\r", flush=True)
    print()
    ds.sync_last_modified_at()
    _verify(ds, n, d, seed)
    ds.info["zcore_bench"] = spec
    ds.save()
    return ds, time.perf_counter() - t


def _verify(ds, n, d, seed):
    """The dataset reads normally through FiftyOne and holds the generator's vectors."""
    import fiftyone as fo
    import numpy as np

    assert len(ds) == n, (len(ds), n)
    assert isinstance(ds.get_field(FIELD), fo.VectorField)
    assert ds.count(FIELD) == n
    first = ds.first()
    _, X0, _ = next(_chunks(n, d, seed))
    np.testing.assert_array_equal(first[FIELD], X0[0])
    got = np.stack(ds.limit(5).values(FIELD))
    np.testing.assert_array_equal(got, X0[:5])


def _max_rss(who):
    return resource.getrusage(who).ru_maxrss * 1024  # Linux: kilobytes


def run_delegated(ds, workers, seed):
    """Queue and execute compute_zcore delegated; returns a dict of measurements."""
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    params = {
        "embeddings": FIELD,
        "score_field": "zcore_score",
        "overwrite": True,
        "num_workers": workers,
        "seed": seed,
    }
    svc = DelegatedOperationService()
    for op in svc.list_operations(dataset_name=ds.name):
        svc.delete_operation(op.id)
    r = foo.execute_operator(
        f"{PLUGIN}/compute_zcore", ctx={"dataset": ds, "params": params}, request_delegation=True
    )
    if r.error:
        raise RuntimeError(r.error)
    (op,) = svc.list_operations(dataset_name=ds.name)

    updates = []
    set_progress = svc.set_progress

    def record(doc_id, progress):
        updates.append((time.monotonic(), progress.progress, progress.label))
        return set_progress(doc_id, progress)

    svc.set_progress = record
    rss_before = _max_rss(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    # the MongoDB server FiftyOne started is not counted
    with _TreeMemory(every=1.0, skip=("mongod",)) as mem:
        svc.execute_operation(op)
    t1 = time.monotonic()
    done = svc.get(op.id)
    if done.run_state != "completed":
        raise RuntimeError(
            f"the operation ended {done.run_state}: {done.result and done.result.error}"
        )
    ds.reload()
    timings = ds.load_run_results("zcore_score").timings
    stamps = [t0] + [u[0] for u in updates] + [t1]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    labels = ["(start)"] + [u[2] for u in updates] + ["(end)"]
    return {
        "wall_s": t1 - t0,
        "timings": timings,
        "result": done.result.result,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": _max_rss(resource.RUSAGE_SELF),
        "peak_rss_workers_bytes": _max_rss(resource.RUSAGE_CHILDREN),
        "peak_pss_tree_bytes": mem.peak,
        "progress_updates": len(updates),
        "max_progress_gap_s": gaps[worst],
        "max_gap_between": [labels[worst], labels[worst + 1]],
    }


def old_vs_new(ds, n):
    """Old path (values / set_values) against zcore.store on the first ``n`` samples."""
    import numpy as np

    from zcore import store

    view = ds.limit(n)
    out = {"n": len(view)}
    t = time.perf_counter()
    ids = view.values("id")
    X_old = np.asarray(view.values(FIELD), dtype=np.float32)
    out["old_read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    X_new, ids_new, missing = store.read_embeddings(view, [FIELD])
    out["new_read_s"] = time.perf_counter() - t
    assert np.array_equal(X_old, X_new) and store.id_strings(ids_new) == ids and not len(missing)
    del X_old

    scores = np.random.default_rng(0).random(len(ids))
    for name in ("zcore_bench_old", "zcore_bench_new"):
        if ds.get_field(name) is not None:
            ds.delete_sample_field(name)
    import fiftyone as fo

    ds.add_sample_field("zcore_bench_old", fo.FloatField)
    t = time.perf_counter()
    view.set_values("zcore_bench_old", dict(zip(ids, scores.tolist())), key_field="id")
    out["old_write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store.write_columns(view, ids_new, missing, [("zcore_bench_new", scores, fo.FloatField, None)])
    out["new_write_s"] = time.perf_counter() - t
    assert view.values("zcore_bench_new") == view.values("zcore_bench_old")
    for name in ("zcore_bench_old", "zcore_bench_new"):
        ds.delete_sample_field(name)
    out["read_speedup"] = out["old_read_s"] / out["new_read_s"]
    out["write_speedup"] = out["old_write_s"] / out["new_write_s"]
    return out


def _gib(b):
    return b / 2**30


def report(res):
    n, d = res["n"], res["d"]
    run = res["run"]
    mat = res["matrix_bytes"]
    t = run["timings"]
    grow = run["peak_rss_bytes"] - run["rss_before_bytes"]
    lines = [
        f"# compute_zcore end to end: {n:,} samples x {d} (delegated, {res['workers']} workers)",
        "",
        f"Machine: {res['machine']}. Dataset build: {res['build_s']:.1f} s "
        + ("(reused)" if res["build_s"] == 0 else "(built now)")
        + f". float32 matrix: {_gib(mat):.2f} GiB.",
        "",
        "| phase | seconds |",
        "|---|---:|",
    ]
    for key in ("read_s", "score_s", "write_s", "record_s", "total_s"):
        if key in t:
            lines.append(f"| {key[:-2]} | {t[key]:.1f} |")
    lines += [
        f"| wall (delegated execution) | {run['wall_s']:.1f} |",
        "",
        "| memory | GiB | x matrix |",
        "|---|---:|---:|",
        f"| RSS of the process before the run | {_gib(run['rss_before_bytes']):.2f} | "
        f"{run['rss_before_bytes'] / mat:.2f} |",
        f"| peak RSS of the process (ru_maxrss) | {_gib(run['peak_rss_bytes']):.2f} | "
        f"{run['peak_rss_bytes'] / mat:.2f} |",
        f"| peak RSS increase during the run | {_gib(grow):.2f} | {grow / mat:.2f} |",
        f"| peak RSS of the largest worker | {_gib(run['peak_rss_workers_bytes']):.2f} | "
        f"{run['peak_rss_workers_bytes'] / mat:.2f} |",
        f"| sampled peak PSS, process + workers | {_gib(run['peak_pss_tree_bytes']):.2f} | "
        f"{run['peak_pss_tree_bytes'] / mat:.2f} |",
        "",
        f"Progress: {run['progress_updates']} updates, longest gap {run['max_progress_gap_s']:.1f} s"
        f" (between {run['max_gap_between'][0]!r} and {run['max_gap_between'][1]!r}).",
        f"Before the run, the plugin's compiled kernels were loaded in "
        f"{run.get('engine_warmup_s', float('nan')):.1f} s (compiled once per plugin location, "
        "about 10 s, then read from numba's cache; not part of the run).",
    ]
    b = res.get("baseline")
    if b:
        lines += [
            "",
            f"Old path vs zcore.store on {b['n']:,} samples of the same dataset:",
            "",
            "| | old (values / set_values) | new (zcore.store) | speed-up |",
            "|---|---:|---:|---:|",
            f"| read | {b['old_read_s']:.2f} s | {b['new_read_s']:.2f} s | "
            f"{b['read_speedup']:.1f}x |",
            f"| write | {b['old_write_s']:.2f} s | {b['new_write_s']:.2f} s | "
            f"{b['write_speedup']:.1f}x |",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_280_000, help="number of samples")
    parser.add_argument("--d", type=int, default=512, help="embedding dimension")
    parser.add_argument("--db-dir", default=os.path.join(ROOT, ".cache", "bench_scale", "db"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-n", type=int, default=100_000, help="samples for the old-path timing (0: skip)"
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "scale.md"))
    parser.add_argument("--build-only", action="store_true", help="build the dataset and stop")
    args = parser.parse_args(argv)

    _setup_env(args.db_dir)
    import platform

    name = f"zcore-bench-{args.n}"
    print(f"dataset {name} in {os.environ['FIFTYONE_DATABASE_DIR']}", flush=True)
    ds, build_s = build_dataset(name, args.n, args.d, args.seed)
    print(f"dataset ready ({build_s:.1f} s to build)", flush=True)
    if args.build_only:
        return
    t = time.perf_counter()
    _warm_engine()
    warm_s = time.perf_counter() - t
    print(
        f"engine compiled or loaded in {warm_s:.1f} s; running compute_zcore delegated", flush=True
    )
    run = run_delegated(ds, args.workers, args.seed)
    run["engine_warmup_s"] = warm_s
    res = {
        "n": args.n,
        "d": args.d,
        "workers": args.workers,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "build_s": build_s,
        "matrix_bytes": args.n * args.d * 4,
        "run": run,
    }
    if args.baseline_n:
        res["baseline"] = old_vs_new(ds, min(args.baseline_n, args.n))
    text = report(res)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
