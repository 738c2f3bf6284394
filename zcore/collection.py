"""FiftyOne layer: read embeddings from a collection, write scores, record runs, select coresets.

Phase order of :func:`compute_zcore` (nothing is written until the scores exist):
validate options and keys -> read embeddings -> score -> write the field(s) -> record the run.

Levels: a collection is scored where its embeddings live.

- samples (images, a view, the active slice of a grouped dataset, a ``to_frames()`` view): the score
  is a sample field (on a frames view it lands on the source video's frames);
- object patches (a ``to_patches(field)`` view): embeddings are an attribute of the labels
  (``"<field>.<attr>"``, or just ``"<attr>"``) and the score is written on each label
  (``<field>.<score_field>`` in the view, e.g. ``detections.detections.zcore_score`` on the dataset);
- video frames (a video collection with frame-level embeddings ``"frames.<attr>"``): every frame
  is scored and the score is written to ``frames.<score_field>``.
"""

import os
import time
import warnings
import zlib

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from . import lock, store
from .core.scoring import _score_components, combine_components, default_n_samples
from .core.selection import resolve_size
from .core.validation import check_embeddings, check_int, check_seed

DEFAULT_SCORE_FIELD = "zcore_score"
RUN_METHOD = "zcore"
_SEED_BITS = 62
_DESCRIPTIONS = {
    "": "ZCore score in [0, 1]; higher = keep",
    "_coverage": "ZCore coverage: sampling points this sample was the nearest to",
    "_redundancy": "ZCore redundancy: total penalty for crowding other covering samples",
}


def compute_zcore(
    samples,
    *,
    embeddings=None,
    model=None,
    score_field=DEFAULT_SCORE_FIELD,
    run_key=None,
    overwrite=False,
    n_samples=None,
    sample_dim=2,
    redund_nn=1000,
    redund_exp=4,
    rand_init=True,
    seed=None,
    use_multiprocessing=False,
    num_workers=None,
    batch_size=32,
    progress=None,
    component_fields=False,
    engine="auto",
    device=None,
    cache_dir=None,
    backend="local",
    client=None,
):
    """Compute ZCore scores for a FiftyOne collection and store them in a sample field.

    Samples without an embedding get ``None`` and are never selected. The run is recorded on the
    dataset as a custom run (``samples.list_runs()``, ``samples.get_run_info(run_key)``,
    ``samples.load_run_results(run_key)``, ``samples.delete_run(run_key)``) with its parameters,
    the seed actually used, and how many samples were scored.

    Parameters
    ----------
    samples : fiftyone.core.collections.SampleCollection
        The dataset or view to score. Scores are relative to this collection only.
    embeddings : str, list of str, or array-like of shape (N, D), default=None
        A vector field name, several field names (concatenated along the features, e.g. one per
        model), or a precomputed matrix with one row per sample of ``samples`` in order. When a
        ``model`` is given, a field name here is where its embeddings are stored.
    model : fiftyone.core.models.Model, default=None
        A model with embeddings (see :mod:`zcore.models`) used to compute the embeddings first.
    score_field : str, default="zcore_score"
        Float field that receives the scores (higher = keep).
    run_key : str, default=None
        Key under which the run is recorded; defaults to ``score_field``.
    overwrite : bool, default=False
        Allow replacing an existing run with this key, or an existing ``score_field``.
    n_samples, sample_dim, redund_nn, redund_exp, rand_init, use_multiprocessing, num_workers, \
    engine, device, backend, client
        See :func:`zcore.zcore_scores`. ``backend="dask"`` scores on a Dask cluster (``client``:
        a ``distributed.Client`` or a scheduler address; ``None`` starts a ``LocalCluster`` of
        ``num_workers`` processes); the embeddings are still read and the scores written here.
    seed : int or None, default=None
        Seed of all randomness. ``None`` draws a fresh seed, which is recorded in the run so the
        scores can be reproduced.
    batch_size : int, default=32
        Batch size when embedding with ``model``.
    progress : bool or callable, default=None
        ``True`` for tqdm bars, or ``progress(fraction, label)`` called as work advances.
    component_fields : bool, default=False
        Also write what each score is made of: ``<score_field>_coverage`` (int, how many sampling
        points the sample was the nearest to) and ``<score_field>_redundancy`` (float, its total
        redundancy penalty). Without the random initial draw, score = normalised
        ``coverage - redundancy``.
    cache_dir : str, default=None
        A directory where the embedding matrix of sample-level fields is cached (``X.npy`` and
        the sample ids, one sub-directory per dataset, field(s) and view). A later run on the same
        collection, e.g. with other hyperparameters, memory-maps the matrix (``mmap_mode="r"``)
        instead of reading the database. The entry is used only while the collection's content
        fingerprint is unchanged: the number of samples and a hash of their ordered ids and
        ``last_modified_at`` times, so adding, deleting or editing a sample through FiftyOne
        (which bumps ``last_modified_at``) invalidates it; checking costs one light pass over the
        ids. Edits made behind FiftyOne's back (raw MongoDB updates) are not detected. Ignored for
        object patches, video frames and arrays.

    Sample-level fields are read in batches into one float32 matrix and the scores are written
    through a temporary collection then moved into the field server-side: an error or
    ``KeyboardInterrupt`` before that move leaves the previous field values and the schema as
    they were (see ``docs/scale.md``).

    The score is written at the level of the collection (see the module docstring): samples,
    object patches of a ``to_patches()`` view, or video frames for ``"frames.<field>"``
    embeddings. On a grouped dataset, the active slice is scored.

    Returns
    -------
    fiftyone.core.runs.RunResults
        With ``num_scored``, ``num_missing``, ``score_field``, ``seed``, ``timings`` (seconds per
        phase: ``read_s``, ``score_s``, ``write_s``, ``record_s``, ``total_s``, and ``embed_s``
        with a model) and ``embeddings_cache`` (``"hit"``, ``"miss"`` or ``None``).

    Raises
    ------
    ValueError
        Bad options, an existing run or field without ``overwrite=True``, missing or invalid
        embeddings. Nothing is written to the dataset in that case.
    """
    t0 = time.perf_counter()
    score_field = _check_field_name(score_field, "score_field")
    run_key = score_field if run_key is None else run_key
    _check_run_key_name(run_key)
    seed = _resolve_seed(seed)
    if model is None and embeddings is None:
        raise ValueError(
            "pass embeddings (a vector field name, a list of them, or an array) or a model that "
            "computes them"
        )
    level = _Level(samples, embeddings if model is None else None)
    out_fields = {score_field: fo.FloatField}
    if component_fields:
        out_fields[score_field + "_coverage"] = fo.IntField
        out_fields[score_field + "_redundancy"] = fo.FloatField

    # one writer per (dataset, field): taken before the checks of what exists, so that of two
    # runs on a new field the second sees the first one's field (see zcore.lock)
    with lock.terminate_as_exception():
        held = lock.acquire(
            samples._root_dataset,
            [level._root_path(name) for name in out_fields],
            run_key=run_key,
            dataset_name=samples._root_dataset.name,
        )
        try:
            return _compute_locked(
                samples,
                level,
                held,
                t0=t0,
                embeddings=embeddings,
                model=model,
                score_field=score_field,
                run_key=run_key,
                overwrite=overwrite,
                out_fields=out_fields,
                seed=seed,
                params_in={
                    "n_samples": n_samples,
                    "sample_dim": sample_dim,
                    "redund_nn": redund_nn,
                    "redund_exp": redund_exp,
                    "rand_init": rand_init,
                },
                use_multiprocessing=use_multiprocessing,
                num_workers=num_workers,
                batch_size=batch_size,
                progress=progress,
                component_fields=component_fields,
                engine=engine,
                device=device,
                cache_dir=cache_dir,
                backend=backend,
                client=client,
            )
        finally:
            held.release()


def _compute_locked(
    samples,
    level,
    held,
    *,
    t0,
    embeddings,
    model,
    score_field,
    run_key,
    overwrite,
    out_fields,
    seed,
    params_in,
    use_multiprocessing,
    num_workers,
    batch_size,
    progress,
    component_fields,
    engine,
    device,
    cache_dir,
    backend,
    client,
):
    """compute_zcore once the lock is held: every check, then read, score, write + record."""
    _check_run_key(samples, run_key, overwrite)
    for name, ftype in out_fields.items():
        _check_score_field(level, name, overwrite, ftype)

    timings = {}
    if model is not None:
        embeddings = _embed_with_model(samples, model, embeddings, batch_size, progress)
        timings["embed_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    data = _read_embeddings(level, embeddings, progress, cache_dir)
    timings["read_s"] = time.perf_counter() - t1
    X, fields = data.X, data.fields
    n_present = len(X)
    if n_present < 3:
        raise ValueError(
            f"only {n_present} sample(s) of {data.n_all} have embeddings; ZCore needs at least 3"
        )

    n_samples = params_in["n_samples"]
    params = {
        **params_in,
        "n_samples": default_n_samples(n_present) if n_samples is None else n_samples,
    }
    rand_init = params["rand_init"]
    # the run's config is built and validated (key, type of an existing run) before scoring
    config = samples.init_run(
        method=RUN_METHOD,
        score_field=score_field,
        embeddings=fields if fields is not None else "<array>",
        seed=seed,
        level=level.kind,
        score_path=level.path(score_field),
        component_fields=bool(component_fields),
        **params,
    )
    config.build().validate_run(samples, run_key, overwrite=overwrite)

    t2 = time.perf_counter()
    if callable(progress):
        progress(0.0, "scoring: preparing the embeddings")
    coverage, penalty, init, shift = _score_components(
        X,
        seed=seed,
        use_multiprocessing=use_multiprocessing,
        num_workers=num_workers,
        engine=engine,
        device=device,
        backend=backend,
        client=client,
        progress=_score_progress(progress),
        stage=_stage_progress(progress),
        **{k: v for k, v in params.items() if k != "rand_init"},
    )
    del X
    data.X = None  # the matrix is not needed to write: let it go before the write
    scores = combine_components(coverage, penalty, init, shift, rand_init=rand_init)
    columns = {score_field: scores}
    if component_fields:
        columns[score_field + "_coverage"] = coverage
        columns[score_field + "_redundancy"] = np.ldexp(penalty.astype(np.float64), -shift)
    timings["score_s"] = time.perf_counter() - t2

    recorded = []

    def record():
        # called by the write, in the same interrupt-deferred section as the move of the values,
        # so the run record always describes the values in the field
        if recorded:
            return
        t4 = time.perf_counter()
        samples.register_run(run_key, config, overwrite=overwrite)
        timings["record_s"] = time.perf_counter() - t4
        timings["total_s"] = time.perf_counter() - t0
        results = samples.init_run_results(
            run_key,
            score_field=score_field,
            num_scored=n_present,
            num_missing=data.n_all - n_present,
            seed=seed,
            timings=timings,
            embeddings_cache=data.cache,
        )
        samples.save_run_results(run_key, results, overwrite=True)
        recorded.append(results)

    t3 = time.perf_counter()
    # an existing field may be replaced only with overwrite=True (checked above)
    descriptions = {name: _DESCRIPTIONS.get(name[len(score_field) :]) for name in columns}

    def written():
        timings["write_s"] = time.perf_counter() - t3
        record()

    data.write(level, columns, out_fields, descriptions, progress, held, written)
    return recorded[0]


def select_coreset(
    sample_collection,
    *,
    scores=None,
    score_field=DEFAULT_SCORE_FIELD,
    size=None,
    fraction=None,
    threshold=None,
    method=None,
    embeddings=None,
    target=None,
    target_embeddings=None,
    dedup_threshold=None,
    seed=None,
    run_key=None,
    overwrite=False,
    duplicates_view=None,
    **method_options,
):
    """A view of the coreset.

    Exactly one of ``size``, ``fraction`` or ``threshold``. Samples without a score are never
    selected, and ``fraction`` is a fraction of the scored samples.

    **The default** (``method=None``) is the documented default method ``"auto"``
    (:data:`zcore.core.methods.AUTO`, chosen on validation splits of the quality benchmark; the
    README says what it is and where random selection is as good), run on the ``embeddings``
    given or, when none are, on the embeddings that the ``compute_zcore`` run of
    ``score_field`` recorded; the selection is recorded under ``run_key`` (default
    ``"coreset_auto"``, replaced by the next default selection). It falls back to
    ``method="topk"`` — the highest scores, best first, nothing recorded — for ``threshold``
    (a cut on the scores), for patch and frame levels and for ``scores`` given as an array
    without ``embeddings``, and, with a warning, when no embeddings are known.

    ``method="topk"`` without ``dedup_threshold`` is the original ZCore selection (nothing is
    recorded); on the quality benchmark it loses to random selection at 80-95 % pruning. Any
    other method (see ``docs/selection.md`` and
    :mod:`zcore.core.methods`), or near-duplicate removal, reads the ``embeddings`` field, selects
    the sample ids, records the selection as a run (``run_key``, default
    ``"coreset_<method>"``; its config holds the method, options and the seed used) and returns
    a view of the kept samples (in collection order).

    Method arguments:

    method : str or None, default=None
        ``None`` (the default, see above), ``"auto"``, ``"topk"``, ``"cluster_balanced"``,
        ``"stratified"``, ``"hierarchical_kmeans"``, ``"target"``, ``"typiclust"``,
        ``"semdedup"`` or ``"prototypicality"``.
    embeddings : str or list of str
        Vector field(s); needed by every method but ``topk``/``stratified`` and by
        ``dedup_threshold``.
    target : SampleCollection, default=None
        For ``method="target"`` (SimCore): the samples the coreset should resemble; their
        embeddings are read from ``target_embeddings`` (default: the ``embeddings`` field).
    dedup_threshold : float, default=None
        Remove near-duplicates first (L2 distance between L2-normalised embeddings <= this; one
        representative per group, the highest score). The duplicates are saved as the view
        ``duplicates_view`` (default ``"<run_key>_duplicates"``): every member of every group,
        group by group, representative first. The run results hold the groups (sample ids).
    seed : int, default=None
        Seed of the method's randomness (a fresh one, recorded, when ``None``).
    **method_options
        Passed to the method, e.g. ``n_clusters``, ``quota``, ``keep``, ``beta``, ``drop``,
        ``levels``, ``inside``, ``min_similarity``.

    Parameters
    ----------
    sample_collection : fiftyone.core.collections.SampleCollection
    scores : array-like of shape (N,), default=None
        Scores aligned with ``sample_collection`` (its iteration order). If ``None``, the values of
        ``score_field`` are used.
    score_field : str, default="zcore_score"
    size : int, default=None
        Number of samples to keep (all scored samples if fewer).
    fraction : float in (0, 1], default=None
        Fraction of the scored samples to keep.
    threshold : float, default=None
        Keep samples with ``score >= threshold``.

    Returns
    -------
    fiftyone.core.view.DatasetView
        When reading ``score_field``, the view is defined by the field (match, sort, limit), so
        it follows later re-scoring; tag the samples to freeze a selection. With ``scores``, the
        view selects the chosen sample ids.
    """
    replace_run = False  # the default selection's record is replaced by the next one
    if method is None:
        method, embeddings, default_key = _default_method(
            sample_collection, score_field, scores, embeddings, threshold, dedup_threshold
        )
        if default_key and run_key is None:
            run_key, replace_run = default_key, True
    if method != "topk" or dedup_threshold is not None:
        return _select_with_method(
            sample_collection,
            scores=scores,
            score_field=score_field,
            size=size,
            fraction=fraction,
            threshold=threshold,
            method=method,
            embeddings=embeddings,
            target=target,
            target_embeddings=target_embeddings,
            dedup_threshold=dedup_threshold,
            seed=seed,
            run_key=run_key,
            overwrite=overwrite,
            duplicates_view=duplicates_view,
            options=method_options,
            replace_run=replace_run,
        )
    if method_options or embeddings is not None or target is not None:
        raise ValueError(
            "embeddings, target and method options apply to methods other than 'topk' (or with "
            f"dedup_threshold); got {sorted(method_options) or ['embeddings/target']}"
        )
    if scores is None and _is_frame_path(sample_collection, score_field):
        return _select_frames(sample_collection, score_field, size, fraction, threshold)
    if scores is None:
        field = _check_existing_score_field(
            sample_collection, _Level(sample_collection).resolve(score_field)
        )
        values = np.array(
            [np.nan if v is None else v for v in sample_collection.values(field)], dtype=np.float64
        )
        n_keep = resolve_size(values, size=size, fraction=fraction, threshold=threshold)
        scored = sample_collection.exists(field)
        if threshold is not None:
            scored = scored.match(F(field) >= float(threshold))
        return scored.sort_by([(field, -1), ("_id", 1)]).limit(n_keep)

    from .core.selection import select_top_indices

    ids = sample_collection.values("id")
    scores = np.asarray([np.nan if v is None else v for v in scores], dtype=np.float64)
    if scores.shape != (len(ids),):
        raise ValueError(
            f"scores has shape {scores.shape}; expected ({len(ids)},), one per sample of the "
            "collection in order"
        )
    idx = select_top_indices(scores, size=size, fraction=fraction, threshold=threshold)
    return sample_collection.select([ids[i] for i in idx], ordered=True)


SELECTION_RUN_METHOD = "zcore_selection"


def recorded_embeddings(samples, score_field=DEFAULT_SCORE_FIELD):
    """The embedding field(s) that the ``compute_zcore`` run of ``score_field`` read, or ``None``
    (no run, scores from an array, or fields since deleted)."""
    schema = samples.get_field_schema(flat=True)
    for key in reversed(list_zcore_runs(samples)):
        cfg = samples.get_run_info(key).config
        if getattr(cfg, "score_field", None) != score_field:
            continue
        fields = getattr(cfg, "embeddings", None)
        names = [fields] if isinstance(fields, str) else list(fields or [])
        if names and all(isinstance(f, str) and f in schema for f in names):
            return names[0] if len(names) == 1 else names
    return None


def _default_method(samples, score_field, scores, embeddings, threshold, dedup_threshold):
    """``(method, embeddings, run key)`` of ``select_coreset(method=None)`` (see there)."""
    import warnings

    from .core.methods import DEFAULT_METHOD

    topk = ("topk", embeddings if dedup_threshold is not None else None, None)
    level = _Level(samples)
    if threshold is not None or level.kind != "samples" or _is_frame_path(samples, score_field):
        return topk
    if embeddings is None and scores is None:
        embeddings = recorded_embeddings(samples, score_field)
    if embeddings is None:
        if scores is None:
            warnings.warn(
                f"select_coreset: no embeddings are recorded for {score_field!r}, so the highest "
                f"scores are kept (method='topk'); pass embeddings=<vector field> to use the "
                f"default method {DEFAULT_METHOD!r} (README: quality)",
                stacklevel=3,
            )
        return topk
    return DEFAULT_METHOD, embeddings, f"coreset_{DEFAULT_METHOD}"


def _select_with_method(
    samples,
    *,
    scores,
    score_field,
    size,
    fraction,
    threshold,
    method,
    embeddings,
    target,
    target_embeddings,
    dedup_threshold,
    seed,
    run_key,
    overwrite,
    duplicates_view,
    options,
    replace_run=False,
):
    """select_coreset for a method of :mod:`zcore.core.methods` (and/or near-duplicate removal):
    validates everything, selects, then records the run and saves the duplicates view."""
    from .core import methods as M

    t0 = time.perf_counter()
    M.get_method(method)  # unknown names fail first, with the list of valid ones
    run_key = f"coreset_{method}" if run_key is None else run_key
    _check_run_key(samples, run_key, overwrite or replace_run)
    if (
        _is_frame_path(samples, score_field)
        or _field_names(embeddings)
        and any(f.startswith("frames.") for f in _field_names(embeddings))
    ):
        raise ValueError(f"method {method!r} selects samples; frame-level fields are not supported")
    if threshold is not None and method != "topk":
        raise ValueError(
            f"threshold applies to method 'topk' only; pass size or fraction for {method!r}"
        )
    seed = _resolve_seed(seed)
    if dedup_threshold is not None:  # before any work: the view it may save
        _check_view_name(
            samples._root_dataset,
            duplicates_view or f"{run_key}_duplicates",
            overwrite,
            "duplicates_view",
        )
    level = _Level(samples)
    all_ids = level.ids()

    # scores: given, read from score_field, or none (methods that can do without)
    if scores is not None:
        s_all = np.asarray([np.nan if v is None else v for v in scores], dtype=np.float64)
        if s_all.shape != (len(all_ids),):
            raise ValueError(
                f"scores has shape {s_all.shape}; expected ({len(all_ids)},), one per sample of "
                "the collection in order"
            )
        scores_from = "<array>"
    elif score_field in samples.get_field_schema(flat=True) or (
        level.resolve(score_field) in samples.get_field_schema(flat=True)
    ):
        field = _check_existing_score_field(samples, level.resolve(score_field))
        s_all = np.array([np.nan if v is None else v for v in level.read(field)], dtype=np.float64)
        scores_from = field
    elif M.needs_scores(method, options):
        _check_existing_score_field(samples, level.resolve(score_field))  # raises: not found
    else:
        s_all, scores_from = None, None

    needs_emb = method not in M.SCORE_ONLY_METHODS or dedup_threshold is not None
    if needs_emb and embeddings is None:
        raise ValueError(
            f"method {method!r}"
            + (" with dedup_threshold" if method in M.SCORE_ONLY_METHODS else "")
            + " needs embeddings=<vector field name>"
        )
    if method == "target" and target is None and target_embeddings is None:
        raise ValueError("method 'target' needs target=<a collection of target samples>")

    if needs_emb:
        ids, X, fields = _load_embeddings(level, embeddings)
        pos = {i: k for k, i in enumerate(all_ids)}
        rows = np.fromiter((pos[i] for i in ids), dtype=np.int64, count=len(ids))
    else:
        ids, X, fields, rows = all_ids, None, None, np.arange(len(all_ids))
    s = None if s_all is None else s_all[rows]
    n_keep = resolve_size(
        s if s is not None else np.zeros(len(ids)),
        size=size,
        fraction=fraction,
        threshold=threshold,
    )

    kw = dict(options)
    target_info = None
    if method == "target":
        if isinstance(target_embeddings, str) or target_embeddings is None:
            t_field = target_embeddings or embeddings
            if target is None or t_field is None:
                raise ValueError("method 'target' needs target= and an embeddings field")
            _, T, _ = _load_embeddings(_Level(target), t_field)
            target_info = {"target_count": len(T), "target_embeddings": _field_names(t_field)}
        else:
            T = np.asarray(target_embeddings, dtype=np.float32)
            target_info = {"target_count": len(T), "target_embeddings": "<array>"}
        if len(T) == 0:
            raise ValueError(
                "the target collection has no samples with embeddings; method 'target' needs a "
                "non-empty target"
            )
        kw["target_embeddings"] = T

    dups = None
    cand = np.arange(len(ids))
    if dedup_threshold is not None:
        dups = M.near_duplicates(X, dedup_threshold, scores=s)
        cand = dups.keep
    idx = M.get_method(method)(
        None if s is None else s[cand],
        None if X is None else X[cand],
        n_keep,
        seed=seed,
        **kw,
    )
    idx = cand[idx]
    kept_ids = [ids[i] for i in idx]
    view = samples.select(kept_ids, ordered=True)

    dup_view_name = None
    if dups is not None and dups.n_groups:
        dup_view_name = duplicates_view or f"{run_key}_duplicates"
        dataset = samples._root_dataset
        if dataset.has_saved_view(dup_view_name) and not overwrite:
            raise ValueError(
                f"a saved view named {dup_view_name!r} exists; pass overwrite=True or another "
                "duplicates_view"
            )
        dup_ids = [ids[i] for g in dups.groups for i in g]
        dataset.save_view(dup_view_name, samples.select(dup_ids, ordered=True), overwrite=True)

    config = samples.init_run(
        method=SELECTION_RUN_METHOD,
        selection_method=method,
        options={k: v for k, v in options.items()},
        seed=seed,
        embeddings=fields if fields is not None else None,
        scores=scores_from,
        size=size,
        fraction=fraction,
        dedup_threshold=dedup_threshold,
        duplicates_view=dup_view_name,
        **(target_info or {}),
    )
    samples.register_run(run_key, config, overwrite=overwrite or replace_run)
    results = samples.init_run_results(
        run_key,
        num_selected=len(kept_ids),
        num_requested=int(n_keep),
        num_eligible=len(ids) if s is None else int(np.count_nonzero(~np.isnan(s))),
        seed=seed,
        num_duplicate_groups=0 if dups is None else dups.n_groups,
        num_duplicates_removed=0 if dups is None else dups.n_removed,
        duplicate_groups=[] if dups is None else [[ids[i] for i in g] for g in dups.groups],
        timings={"total_s": time.perf_counter() - t0},
    )
    samples.save_run_results(run_key, results, overwrite=True)
    return view


def check_coreset_request(
    sample_collection, *, size=None, fraction=None, threshold=None, view_name=None, overwrite=False
):
    """Every check of a later :func:`select_coreset` + :func:`save_coreset` that does not need
    the scores: exactly one valid ``size`` / ``fraction`` / ``threshold`` (finite), and a
    ``view_name`` that is free (by name and by slug) unless ``overwrite``. The operators call it
    before anything is written."""
    resolve_size(np.zeros(0), size=size, fraction=fraction, threshold=threshold)
    _check_view_name(sample_collection._root_dataset, view_name, overwrite, "view_name")


def _check_view_name(dataset, name, overwrite, what):
    if not name:
        return
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string; got {type(name).__name__}")
    import fiftyone.core.utils as fou

    try:
        slug = fou.to_slug(name)
    except ValueError as e:
        raise ValueError(f"{what} {name!r} cannot name a saved view: {e}") from None
    if overwrite:
        return
    for info in dataset.list_saved_views(info=True):
        if info["name"] == name or fou.to_slug(info["name"]) == slug:
            raise ValueError(
                f"a saved view named {info['name']!r} exists"
                + ("" if info["name"] == name else f" (same slug {slug!r} as {name!r})")
                + f"; choose another {what} or pass overwrite=True"
            )


def save_coreset(sample_collection, view, *, view_name=None, tag=None, overwrite=False):
    """Save a coreset view under ``view_name`` and/or tag its samples with ``tag``.

    Returns the number of samples in the view.
    """
    dataset = sample_collection._root_dataset
    _check_view_name(dataset, view_name, overwrite, "view_name")
    count = view.count()
    if view_name:
        dataset.save_view(view_name, view, overwrite=overwrite)
    if tag:
        view.tag_samples(tag)
    return count


def list_zcore_runs(samples):
    """Run keys of the ZCore runs recorded on the collection's dataset."""
    out = []
    for key in samples.list_runs():
        try:
            cfg = samples.get_run_info(key).config
        except Exception:  # a run of another kind that cannot be loaded here
            continue
        if getattr(cfg, "method", None) == RUN_METHOD:
            out.append(key)
    return out


def score_field_path(samples, score_field):
    """Where ``score_field`` lives in ``samples``: ``<patches_field>.<name>`` on a patches view
    (when that exists), else ``score_field`` itself."""
    return _Level(samples).resolve(score_field)


# --- levels: samples, object patches, video frames ---------------------------------------------


class _Level:
    """Reads and writes one value per scored unit: a sample, an object patch or a video frame."""

    def __init__(self, samples, embeddings=None):
        self.samples = samples
        self.patches_field = (
            samples.patches_field if getattr(samples, "_is_patches", False) else None
        )
        names = _field_names(embeddings)
        frame_names = [n for n in names if n.startswith("frames.")]
        if frame_names and samples._has_frame_fields():
            if len(frame_names) != len(names):
                raise ValueError(
                    f"embeddings {names} mix frame-level ('frames.') and sample-level fields; "
                    "score frames or samples, not both"
                )
            self.kind = "frames"
        else:
            self.kind = "patches" if self.patches_field else "samples"

    def path(self, name):
        """Path of an output field ``name`` in this collection."""
        if self.kind == "patches":
            return f"{self.patches_field}.{name}"
        if self.kind == "frames":
            return f"frames.{name}"
        return name

    def resolve(self, field):
        """A field given by the user: on a patches view, ``attr`` means ``<patches_field>.attr``
        unless ``attr`` is a field of the patches themselves."""
        if self.kind != "patches" or field.startswith(self.patches_field + "."):
            return field
        if self.samples.get_field(field) is not None:
            return field
        return f"{self.patches_field}.{field}"

    def ids(self):
        if self.kind == "frames":
            return [i for frames in self.samples.values("frames.id") for i in frames]
        return self.samples.values("id")

    def read(self, field):
        if self.kind == "frames":
            return [v for frames in self.samples.values(field) for v in frames]
        return self.samples.values(field)

    def _root_path(self, name):
        root = self.samples._root_dataset
        if self.kind == "patches":
            return root._get_label_field_path(self.patches_field, name)[1]
        return self.path(name)

    def read_only_parent(self, name):
        """The path of the read-only field among ``name``'s path on the dataset and its
        parents, or ``None``."""
        root = self.samples._root_dataset
        path = self._root_path(name)
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            sub = ".".join(parts[:i])
            field = root.get_field(sub)
            if field is not None and getattr(field, "read_only", False):
                return sub
        return None

    def get_field(self, name):
        """The existing output field ``name`` (on the dataset), or ``None``."""
        if self.kind == "patches":
            return self.samples._root_dataset.get_field(self._root_path(name))
        return self.samples._dataset.get_field(self.path(name))

    def write(self, name, values, ftype, description):
        """Writes ``values`` (a dict id -> value) into the output field ``name``."""
        samples, root = self.samples, self.samples._root_dataset
        missing = self.get_field(name) is None
        if self.kind == "patches":
            path = self.path(name)
            if missing:
                root.add_sample_field(self._root_path(name), ftype, description=description)
            if samples._dataset.get_field(path) is None:
                samples._dataset.add_sample_field(path, ftype, description=description)
            samples.set_values(path, values, key_field="id")
        elif self.kind == "frames":
            if missing:
                samples._dataset.add_frame_field(name, ftype, description=description)
            nested = [[values[i] for i in frames] for frames in samples.values("frames.id")]
            samples.set_values(self.path(name), nested)
        elif getattr(samples, "_is_frames", False):
            # a to_frames() view: set_values declares the field on the source frames too
            samples.set_values(name, values, key_field="id")
        else:
            if missing:
                samples._dataset.add_sample_field(name, ftype, description=description)
            samples.set_values(name, values, key_field="id")


def _field_names(embeddings):
    if isinstance(embeddings, str):
        return [embeddings]
    if (
        isinstance(embeddings, (list, tuple))
        and embeddings
        and all(isinstance(e, str) for e in embeddings)
    ):
        return list(embeddings)
    return []


def _is_frame_path(samples, field):
    return isinstance(field, str) and field.startswith("frames.") and samples._has_frame_fields()


def _select_frames(samples, field, size, fraction, threshold):
    """A view of ``samples`` that keeps only the top frames by the frame field ``field``."""
    from bson import ObjectId

    level = _Level(samples, field)
    name = field[len("frames.") :]
    if level.get_field(name) is None:
        raise ValueError(f"frame field {field!r} not found; run compute_zcore first")
    ids = level.ids()
    values = np.array([np.nan if v is None else v for v in level.read(field)], dtype=np.float64)
    n_keep = resolve_size(values, size=size, fraction=fraction, threshold=threshold)
    scored = [i for i in range(len(ids)) if not np.isnan(values[i])]
    scored.sort(key=lambda i: (-values[i], ids[i]))
    keep = [ObjectId(ids[i]) for i in scored[:n_keep]]
    return samples.match_frames(F("_id").is_in(keep))


# --- helpers -------------------------------------------------------------------------------------


def _check_field_name(name, what):
    if (
        not isinstance(name, str)
        or not name
        or name.startswith("_")
        or "." in name
        or "$" in name
        or name != name.strip()
    ):
        raise ValueError(
            f"{what} must be a top-level field name such as 'zcore_score' (no dots or '$', not "
            f"starting with '_'); got {name!r}"
        )
    return name


def _check_run_key_name(run_key):
    if not isinstance(run_key, str) or not run_key.isidentifier():
        raise ValueError(
            f"run_key must be a valid Python identifier (letters, digits, underscores); "
            f"got {run_key!r}"
        )


def _check_run_key(samples, run_key, overwrite):
    _check_run_key_name(run_key)
    if samples.has_run(run_key) and not overwrite:
        raise ValueError(
            f"a run with key {run_key!r} already exists on dataset {samples._dataset.name!r}; "
            "pass overwrite=True to replace it, or choose another run_key/score_field"
        )


def _check_score_field(level, score_field, overwrite, ftype=fo.FloatField):
    field = level.get_field(score_field)
    if field is None:
        return
    if not isinstance(field, ftype):
        raise ValueError(
            f"field {score_field!r} exists with type {type(field).__name__}; choose another "
            "score_field"
        )
    if not overwrite:
        raise ValueError(
            f"field {score_field!r} already exists; pass overwrite=True to replace its values, "
            "or choose another score_field"
        )
    read_only = level.read_only_parent(score_field)
    if read_only is not None:
        raise ValueError(
            f"field {read_only!r} is read-only; make it editable "
            f"(field.read_only = False; field.save()) or choose another score_field"
        )


def _check_existing_score_field(samples, field):
    schema = samples.get_field_schema(flat=True)
    if field not in schema:
        floats = sorted(k for k, v in schema.items() if isinstance(v, (fo.FloatField, fo.IntField)))
        raise ValueError(
            f"score field {field!r} not found; run compute_zcore first or choose one of {floats}"
        )
    if not isinstance(schema[field], (fo.FloatField, fo.IntField)):
        raise ValueError(f"field {field!r} is not numeric ({type(schema[field]).__name__})")
    return field


def _resolve_seed(seed):
    if seed is None:
        return int(np.random.default_rng().integers(2**_SEED_BITS))
    if isinstance(seed, np.random.Generator):
        raise ValueError(
            "compute_zcore records its seed with the run: pass an int (or None for a fresh one), "
            "not a numpy Generator"
        )
    check_seed(seed)
    return check_int(seed, "seed", min_value=0)


def _embed_with_model(samples, model, field, batch_size, progress):
    from .models import compute_embeddings

    if field is None:
        raise ValueError("with a model, pass embeddings=<field name> to store its embeddings in")
    if not isinstance(field, str):
        raise ValueError(
            f"with a model, embeddings must be a field name; got {type(field).__name__}"
        )
    _check_field_name(field, "embeddings")
    compute_embeddings(
        samples,
        model,
        embeddings_field=field,
        batch_size=batch_size,
        progress=_embed_progress(progress),
    )
    return field


class _Embeddings:
    """The matrix to score and who its rows belong to.

    Fast path (``ids``/``missing`` are ``(n, 12)`` uint8 arrays of sample ``_id`` bytes, see
    :mod:`zcore.store`), or FiftyOne's ``values()`` path (``ids`` a list of id strings, and
    ``all_ids`` every unit of the level, ``None`` for an array).
    """

    def __init__(self, X, fields, ids, *, missing=None, all_ids=None, cache=None, cache_ref=None):
        self.X, self.fields, self.ids = X, fields, ids
        self.missing, self.all_ids, self.cache = missing, all_ids, cache
        self.cache_ref = cache_ref  # (cache_dir, key, stamp at read time)
        self.fast = missing is not None

    @property
    def n_all(self):
        if self.fast:
            return len(self.ids) + len(self.missing)
        return len(self.ids if self.all_ids is None else self.all_ids)

    def write(self, level, columns, ftypes, descriptions, progress, held=None, on_written=None):
        """Write ``columns`` (name -> one value per row of ``X``); units without embeddings get
        ``None``. ``on_written()`` (the run record) is called as part of the write, with
        SIGINT/SIGTERM held back from the start of the move until it returned."""
        if self.fast:
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
            if self.cache_ref is not None:
                # writing the scores bumped last_modified_at: keep the cache entry valid, unless
                # the samples changed since they were read. The cache is an optimisation: a
                # failure here (read-only directory...) is a warning, the dataset is written.
                cache_dir, key, _ = self.cache_ref
                try:
                    if unchanged:
                        store.refresh_cached(cache_dir, key, store.fingerprint(samples))
                    else:
                        store.drop_cached(cache_dir, key)
                except OSError as e:
                    warnings.warn(
                        f"could not update the embeddings cache entry {key} in {cache_dir} "
                        f"({e}); it will be a miss next time",
                        stacklevel=3,
                    )
            return
        all_ids = self.ids if self.all_ids is None else self.all_ids
        with lock.deferred_interrupts():
            for name, column in columns.items():
                values = dict.fromkeys(all_ids)
                values.update(zip(self.ids, column.tolist()))
                level.write(name, values, ftypes[name], descriptions[name])
            if on_written is not None:
                on_written()


def _read_embeddings(level, embeddings, progress, cache_dir):
    """:class:`_Embeddings` of ``embeddings`` (field name(s) or an array) for ``level``.

    Top-level vector fields of a sample-level collection are read by :mod:`zcore.store` (cached in
    ``cache_dir`` when given); anything else, or values the fast reader cannot take exactly like
    ``values()`` (then the general path reports the error), goes through :func:`_load_embeddings`.
    """
    samples = level.samples
    names = _field_names(embeddings)
    schema = samples.get_field_schema(flat=True) if names else {}
    fast = (
        names
        and level.kind == "samples"
        and store.supports(samples, names)
        and all(f in schema for f in names)
    )
    if fast:
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
                return _Embeddings(X, names, ids, missing=missing, cache="hit", cache_ref=ref)
        try:
            X, ids, missing = store.read_embeddings(samples, names, progress=report)
        except store.Unsupported:
            pass
        else:
            if len(X) >= 3:
                X = check_embeddings(X, input_name=f"embeddings field(s) {names}")
                if key is not None:  # only valid embeddings are cached
                    try:
                        store.save_cached(cache_dir, key, fp, X, ids, missing, {"fields": names})
                    except OSError as e:  # the cache is an optimisation: the run goes on
                        warnings.warn(
                            f"could not write the embeddings cache entry {key} in {cache_dir} "
                            f"({e}); scoring without caching",
                            stacklevel=3,
                        )
                        key = ref = None
            cache = None if key is None else "miss"
            return _Embeddings(X, names, ids, missing=missing, cache=cache, cache_ref=ref)
    ids, X, fields = _load_embeddings(level, embeddings)
    return _Embeddings(X, fields, ids, all_ids=level.ids() if fields is not None else None)


def _load_embeddings(level, embeddings):
    """``(ids, X, fields)``: ids of units (samples, patches or frames) that have embeddings, their
    float32 matrix, the fields.

    ``fields`` is ``None`` when ``embeddings`` is an array (then every unit must have a row).
    """
    samples = level.samples
    if _field_names(embeddings):
        fields = [level.resolve(f) for f in _field_names(embeddings)]
        schema = samples.get_field_schema(flat=True)
        if level.kind == "frames":
            frame_schema = samples.get_frame_field_schema(flat=True)
            schema = {**schema, **{"frames." + k: v for k, v in frame_schema.items()}}
        columns = []
        for f in fields:
            # label attributes of patches may be undeclared (dynamic): then read them anyway
            col = _read_vectors(level, f) if f in schema or "." in f else None
            if col is None or (f not in schema and all(v is None for v in col)):
                vectors = sorted(k for k, v in schema.items() if _is_vector_field(v))
                raise ValueError(
                    f"embeddings field {f!r} not found on the collection; vector fields: {vectors}"
                )
            columns.append(col)
        ids = level.ids()
        keep = [i for i in range(len(ids)) if all(col[i] is not None for col in columns)]
        parts = []
        for f, col in zip(fields, columns):
            rows = [col[i] for i in keep]
            _check_real_vectors(f, rows)
            lengths = {np.size(r) for r in rows}
            if len(lengths) > 1:
                raise ValueError(
                    f"embeddings field {f!r} holds vectors of different lengths "
                    f"{sorted(lengths)[:5]}; recompute them with one model"
                )
            parts.append(_stack_rows(f, rows) if rows else np.empty((0, 1), np.float32))
        kept_ids = [ids[i] for i in keep]
        X = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        if len(kept_ids) >= 3:
            X = check_embeddings(X, input_name=f"embeddings field(s) {fields}")
        return kept_ids, X, fields

    ids = level.ids()
    X = check_embeddings(embeddings)
    if len(X) != len(ids):
        raise ValueError(
            f"embeddings has {len(X)} rows but the collection has {len(ids)} {level.kind}; pass "
            "one row per sample, in the collection's order"
        )
    return ids, X, None


def _is_vector_field(field):
    return isinstance(field, (fo.VectorField, fo.ArrayField)) or (
        isinstance(field, fo.ListField) and isinstance(field.field, (fo.FloatField, fo.IntField))
    )


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


def _stack_rows(field, rows):
    try:
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    except ValueError:  # numpy's "inhomogeneous shape" says nothing of the field
        raise ValueError(
            f"embeddings field {field!r} holds nested lists or vectors of different shapes; "
            "store one flat vector of numbers per sample (recompute the embeddings)"
        ) from None


def _read_vectors(level, field):
    """The values of ``field``, one per unit; FiftyOne's own decoding errors (zlib, numpy) become
    a message that names the field and says what to do."""
    try:
        values = level.read(field)
    except (zlib.error, ValueError, TypeError, EOFError) as e:
        raise ValueError(store.undecodable_message(field, e)) from e  # cause kept for debugging
    return [_as_vector(v) for v in values]


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


def _score_progress(progress):
    if progress is None or progress is False or progress is True:
        return bool(progress)
    rate = store.RateLimit()  # workers are polled every few ms: forward every PROGRESS_DT s

    def report(done, total):
        if rate.due(force=done >= total):
            progress(done / total, f"scoring {done:,}/{total:,} points")

    return report


def _stage_progress(progress):
    if not callable(progress):
        return None
    rate = store.RateLimit()
    last_label = [None]

    def report(label, fraction):
        if rate.due(force=fraction >= 1 or label != last_label[0]):
            last_label[0] = label
            progress(0.0, f"scoring: {label} ({fraction:.0%})")

    return report


def _embed_progress(progress):
    if progress is None or progress is False or progress is True:
        return bool(progress)
    return lambda done, total: progress(done / max(total, 1), f"embedding {done:,}/{total:,}")
