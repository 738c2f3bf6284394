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

import time
import warnings

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from . import lock, runs, store
from .core.budget import as_scores, resolve_size, select_top_indices, top_order
from .core.config import resolve
from .core.progress import as_progress
from .core.scoring import combine_components, score_components
from .core.validation import recordable_seed
from .levels import field_names, is_frame_path, level_of

DEFAULT_SCORE_FIELD = "zcore_score"
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
    seed=None,
    config=None,
    execution=None,
    batch_size=32,
    progress=None,
    component_fields=False,
    cache_dir=None,
    **options,
):
    """Compute ZCore scores for a FiftyOne collection and store them in a sample field.

    Samples without an embedding get ``None`` and are never selected. The run is recorded on the
    dataset as a :class:`zcore.runs.ScoreRun` (``samples.list_runs(type=ScoreRun)``,
    ``samples.get_run_info(run_key)``, ``samples.load_run_results(run_key)``) with its
    parameters, the seed actually used, and how many samples were scored;
    ``samples.delete_run(run_key)`` deletes the record and the fields it wrote (unless a later
    run wrote them).

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
    <OPTIONS>
    config : ScoreConfig, default=None
        The law's options as one object (:class:`zcore.core.config.ScoreConfig`), instead of
        the keywords above; not together with them.
    execution : Execution, default=None
        Where and how to compute (:class:`zcore.core.config.Execution`), instead of the
        keywords above. With ``backend="dask"`` the embeddings are still read and the scores
        written here.
    seed : int or None, default=None
        Seed of all randomness. ``None`` draws a fresh seed, which is recorded in the run so the
        scores can be reproduced.
    batch_size : int, default=32
        Batch size when embedding with ``model``.
    progress : bool or callable, default=None
        ``True`` for tqdm bars, or ``progress(done, total, label)`` called as work advances,
        stage by stage (:mod:`zcore.core.progress`; at most every couple of seconds within a
        stage): embedding, reading, the scoring's set-up stages, scoring, writing.
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
    config, execution = resolve(config, execution, **options)
    progress = _paced(progress)
    score_field = _check_field_name(score_field, "score_field")
    run_key = score_field if run_key is None else run_key
    _check_run_key_name(run_key)
    seed = recordable_seed(seed)
    if model is None and embeddings is None:
        raise ValueError(
            "pass embeddings (a vector field name, a list of them, or an array) or a model that "
            "computes them"
        )
    level = level_of(samples, embeddings if model is None else None)
    out_fields = {score_field: fo.FloatField}
    if component_fields:
        out_fields[score_field + "_coverage"] = fo.IntField
        out_fields[score_field + "_redundancy"] = fo.FloatField

    # one writer per (dataset, field): taken before the checks of what exists, so that of two
    # runs on a new field the second sees the first one's field (see zcore.lock)
    with lock.terminate_as_exception():
        held = lock.acquire(
            samples._root_dataset,
            [level.root_path(name) for name in out_fields],
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
                config=config,
                execution=execution,
                batch_size=batch_size,
                progress=progress,
                component_fields=component_fields,
                cache_dir=cache_dir,
            )
        finally:
            held.release()
            if progress is not None:
                progress.close()


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
    config,
    execution,
    batch_size,
    progress,
    component_fields,
    cache_dir,
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
    data = level.read_embeddings(embeddings, progress=progress, cache_dir=cache_dir)
    timings["read_s"] = time.perf_counter() - t1
    X, fields = data.X, data.fields
    n_present = len(X)
    if n_present < 3:
        raise ValueError(
            f"only {n_present} sample(s) of {data.n_all} have embeddings; ZCore needs at least 3"
        )

    # the run's record is built and validated (key, type of an existing run) before scoring
    run_config = runs.ScoreRunConfig(
        score_field=score_field,
        owned_fields=[level.root_path(name) for name in out_fields],
        embeddings=fields if fields is not None else "<array>",
        seed=seed,
        level=level.kind,
        score_path=level.path(score_field),
        component_fields=bool(component_fields),
        **{**config.to_dict(), "n_samples": config.n_points(n_present)},
    )
    _check_record(samples, runs.ScoreRun, run_key, overwrite)

    t2 = time.perf_counter()
    coverage, penalty, init, shift = score_components(
        X, config=config, execution=execution, seed=seed, progress=progress
    )
    del X
    data.X = None  # the matrix is not needed to write: let it go before the write
    scores = combine_components(coverage, penalty, init, shift, rand_init=config.rand_init)
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
        _register(samples, runs.ScoreRun, run_key, run_config, overwrite)
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
    _index_score_field(samples, level.root_path(score_field))
    return recorded[0]


def _index_score_field(samples, path):
    """An index on the score field, so that the App offers it in the grid's sort and sorts by
    it fast. The scores and their record are written already: a failure here is a warning."""
    try:
        samples._root_dataset.create_index(path)
    except Exception as e:  # e.g. a read-only database user; sorting still works via SortBy
        warnings.warn(
            f"could not index {path!r} ({e}); the grid cannot sort by it natively", stacklevel=3
        )


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
    balance_by=None,
    balance="proportional",
    include=None,
    ranked=False,
    rank_field=None,
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
        ``None`` (the default, see above) or a registered method:
        ``zcore.core.registry.method_names()``; ``get_spec(name)`` says what it needs and
        accepts, each option with its help and default.
    embeddings : str or list of str
        Vector field(s); needed by every method whose spec ``needs_embeddings`` (all but
        ``topk`` and ``stratified``) and by ``dedup_threshold``.
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
    balance_by : str, default=None
        Balance the coreset over the values of a field: a ``Classification`` field (its
        ``label``), or a string, int or bool field (e.g. ``"metadata.mime_type"``). Each value
        gets a quota of the budget (``balance``), quota a value cannot use goes to the others,
        and the method selects inside each value's samples (samples without a value are not
        kept). The budget must allow one sample per value. Recorded with the run, with the kept
        count per value.
    balance : {"proportional", "equal"}, default="proportional"
        Quotas proportional to each value's samples, or equal.
    include : view, str or list of str, default=None
        Samples already in the coreset (e.g. those labelled so far): a view of the collection,
        a sample tag, or a list of sample ids. They are kept, count against the budget, and the
        method selects the rest among the other samples (per method:
        ``get_spec(name).include_help``; ``docs/selection.md``). Not with ``threshold`` or
        ``balance_by``. Recorded with the run (``include_count``).
    ranked : bool, default=False
        Return the coreset in the order its samples enter it as the budget grows (the included
        ones first), so that labelling its first ``m`` samples labels a coreset of size ``m``
        (exactly for ``topk``; per method: ``get_spec(name).ranking_help``).
    rank_field : str, default=None
        Also write each selected sample's rank (1 = first) to this int field; every other
        sample of the collection gets ``None``. Implies ``ranked``. The field must be new or an
        int field.
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
    if (
        method != "topk"
        or dedup_threshold is not None
        or balance_by is not None
        or include is not None
        or ranked
        or rank_field is not None
    ):
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
            balance_by=balance_by,
            balance=balance,
            include=include,
            ranked=bool(ranked) or rank_field is not None,
            rank_field=rank_field,
            options=method_options,
            replace_run=replace_run,
        )
    if method_options or embeddings is not None or target is not None:
        raise ValueError(
            "embeddings, target and method options apply to methods other than 'topk' (or with "
            f"dedup_threshold); got {sorted(method_options) or ['embeddings/target']}"
        )
    if scores is None and is_frame_path(sample_collection, score_field):
        return _select_frames(sample_collection, score_field, size, fraction, threshold)
    if scores is None:
        field = _check_existing_score_field(
            sample_collection, level_of(sample_collection).resolve(score_field)
        )
        values = as_scores(sample_collection.values(field))
        n_keep = resolve_size(values, size=size, fraction=fraction, threshold=threshold)
        scored = sample_collection.exists(field)
        if threshold is not None:
            scored = scored.match(F(field) >= float(threshold))
        return scored.sort_by([(field, -1), ("_id", 1)]).limit(n_keep)

    ids = sample_collection.values("id")
    scores = as_scores(scores, n=len(ids))
    idx = select_top_indices(scores, size=size, fraction=fraction, threshold=threshold)
    return sample_collection.select([ids[i] for i in idx], ordered=True)


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

    from .core.methods import DEFAULT_METHOD

    topk = ("topk", embeddings if dedup_threshold is not None else None, None)
    level = level_of(samples)
    if threshold is not None or level.kind != "samples" or is_frame_path(samples, score_field):
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
    balance_by=None,
    balance="proportional",
    include=None,
    ranked=False,
    rank_field=None,
    replace_run=False,
):
    """select_coreset for a method of :mod:`zcore.core.methods` (and/or near-duplicate removal):
    validates everything, selects, then records the run and saves the duplicates view."""
    from .core import methods as M

    t0 = time.perf_counter()
    spec = M.get_spec(method)  # unknown names fail first, with the list of valid ones
    options = spec.check_options(options)  # and unknown or invalid options, before any read
    run_key = f"coreset_{method}" if run_key is None else run_key
    _check_run_key(samples, run_key, overwrite or replace_run)
    _check_record(samples, runs.SelectionRun, run_key, overwrite or replace_run)
    if (
        is_frame_path(samples, score_field)
        or field_names(embeddings)
        and any(f.startswith("frames.") for f in field_names(embeddings))
    ):
        raise ValueError(f"method {method!r} selects samples; frame-level fields are not supported")
    if threshold is not None and (method != "topk" or balance_by is not None):
        raise ValueError(
            f"threshold applies to method 'topk' only, unbalanced; pass size or fraction for "
            f"{method!r}" + (" with balance_by" if balance_by is not None else "")
        )
    if balance not in M.BALANCE_QUOTAS:
        raise ValueError(f"balance must be one of {list(M.BALANCE_QUOTAS)}; got {balance!r}")
    if threshold is not None and (include is not None or ranked):
        raise ValueError(
            "threshold keeps every sample above a score, so it has no budget to grow or rank; "
            "pass size or fraction with include/ranked/rank_field"
        )
    if balance_by is not None and (include is not None or ranked):
        raise ValueError(
            "include and ranked/rank_field do not combine with balance_by yet: select with "
            "balance_by alone, or drop balance_by"
        )
    include_ids = None if include is None else include_sample_ids(samples, include)
    if rank_field is not None:
        check_rank_field(samples, rank_field)
    group_path = None if balance_by is None else balance_path(samples, balance_by)
    seed = recordable_seed(seed)
    if dedup_threshold is not None:  # before any work: the view it may save
        check_view_name(
            samples._root_dataset,
            duplicates_view or f"{run_key}_duplicates",
            overwrite=overwrite,
            what="duplicates_view",
        )
    level = level_of(samples)
    all_ids = level.ids()

    # scores: given, read from score_field, or none (methods that can do without)
    if scores is not None:
        s_all = as_scores(scores, n=len(all_ids))
        scores_from = "<array>"
    elif score_field in samples.get_field_schema(flat=True) or (
        level.resolve(score_field) in samples.get_field_schema(flat=True)
    ):
        field = _check_existing_score_field(samples, level.resolve(score_field))
        s_all = as_scores(level.read(field))
        scores_from = field
    elif spec.needs_scores(options):
        _check_existing_score_field(samples, level.resolve(score_field))  # raises: not found
    else:
        s_all, scores_from = None, None

    needs_emb = spec.needs_embeddings or dedup_threshold is not None
    if needs_emb and embeddings is None:
        raise ValueError(
            f"method {method!r}"
            + ("" if spec.needs_embeddings else " with dedup_threshold")
            + " needs embeddings=<vector field name>"
        )
    if method == "target" and target is None and target_embeddings is None:
        raise ValueError("method 'target' needs target=<a collection of target samples>")

    if needs_emb:
        ids, X, fields = level.load_embeddings(embeddings)
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
            _, T, _ = level_of(target).load_embeddings(t_field)
            target_info = {"target_count": len(T), "target_embeddings": field_names(t_field)}
        else:
            T = np.asarray(target_embeddings, dtype=np.float32)
            target_info = {"target_count": len(T), "target_embeddings": "<array>"}
        if len(T) == 0:
            raise ValueError(
                "the target collection has no samples with embeddings; method 'target' needs a "
                "non-empty target"
            )
        kw["target_embeddings"] = T

    include_rows = None
    if include_ids is not None:
        where = {i: k for k, i in enumerate(ids)}
        missing = [i for i in include_ids if i not in where]
        if missing:
            raise ValueError(
                f"{len(missing)} samples to include have no embeddings (or are not in the "
                f"collection), e.g. {missing[:3]}: compute their embeddings or include others"
            )
        include_rows = np.array([where[i] for i in include_ids], dtype=np.int64)
        M.check_include(include_rows, len(ids), n_keep)  # before any write
    balance_info = {}
    if group_path is None:
        idx, dups = M.select(
            method,
            n_keep,
            scores=s,
            embeddings=X,
            seed=seed,
            dedup_threshold=dedup_threshold,
            return_duplicates=True,
            include=include_rows,
            ranked=ranked,
            **kw,
        )
    else:
        values = level.read(group_path)
        codes, names = group_codes([values[r] for r in rows])
        dups, cand = None, np.arange(len(ids))
        if dedup_threshold is not None:  # near-duplicates across groups, then the balance
            dups = M.near_duplicates(X, dedup_threshold, scores=s)
            cand = dups.keep
        sub = M.select_balanced(
            method,
            n_keep,
            codes[cand],
            quota=balance,
            scores=None if s is None else s[cand],
            embeddings=None if X is None else X[cand],
            seed=seed,
            **kw,
        )
        idx = cand[sub]
        kept = np.bincount(codes[idx], minlength=len(names))
        balance_info = {
            "kept_per_value": {str(v): int(c) for v, c in zip(names, kept)},
        }
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
    if rank_field is not None:
        rank = {i: r + 1 for r, i in enumerate(kept_ids)}
        samples.set_values(rank_field, [rank.get(i) for i in samples.values("id")])

    config = runs.SelectionRunConfig(
        selection_method=method,
        options={k: v for k, v in options.items()},
        seed=seed,
        embeddings=fields if fields is not None else None,
        scores=scores_from,
        size=size,
        fraction=fraction,
        dedup_threshold=dedup_threshold,
        duplicates_view=dup_view_name,
        balance_by=balance_by,
        balance=balance if balance_by is not None else None,
        include=None if include is None else _include_source(include),
        include_count=0 if include_rows is None else len(include_rows),
        ranked=bool(ranked),
        rank_field=rank_field,
        **(target_info or {}),
    )
    _register(samples, runs.SelectionRun, run_key, config, overwrite or replace_run)
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
        **balance_info,
    )
    samples.save_run_results(run_key, results, overwrite=True)
    return view


def include_sample_ids(samples, include):
    """The sample ids of ``select_coreset(include=...)``: a view (its samples), a sample tag or a
    list of ids, checked against ``samples``; ``ValueError`` saying what to pass otherwise."""
    if isinstance(include, str):
        tags = samples.count_sample_tags()
        if include not in tags:
            raise ValueError(
                f"no sample of the collection has the tag {include!r}; tags: {sorted(tags)}"
            )
        return samples.match_tags(include).values("id")  # distinct, and in the collection
    if hasattr(include, "values") and hasattr(include, "_dataset"):
        if include._root_dataset.name != samples._root_dataset.name:
            raise ValueError("include is a view of another dataset: pass a view of this one")
        ids = include.values("id")
    else:
        try:
            ids = [str(i) for i in include]
        except TypeError:
            raise ValueError(
                f"include must be a view, a sample tag or a list of sample ids; got {include!r}"
            ) from None
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    if dup:
        raise ValueError(f"include repeats {len(dup)} sample ids, e.g. {dup[:3]}: pass each once")
    present = set(samples.values("id"))
    missing = [i for i in ids if i not in present]
    if missing:
        raise ValueError(
            f"{len(missing)} samples to include are not in the collection, e.g. {missing[:3]}: "
            "include samples of the collection you select from"
        )
    return list(ids)


def _include_source(include):
    if isinstance(include, str):
        return f"tag:{include}"
    if hasattr(include, "values") and hasattr(include, "_dataset"):
        return "<view>"
    return "<ids>"


def check_rank_field(samples, rank_field):
    """``ValueError`` unless ``rank_field`` is a valid name that is new or an int field."""
    _check_field_name(rank_field, "rank_field")
    schema = samples.get_field_schema(flat=True)
    if rank_field in schema and not isinstance(schema[rank_field], fo.IntField):
        raise ValueError(
            f"rank_field {rank_field!r} exists as a {type(schema[rank_field]).__name__}; "
            "pass a new field name or an int field"
        )


def balance_fields(samples):
    """The fields ``select_coreset(balance_by=...)`` accepts: ``Classification`` fields and
    string, int and bool fields (top level or embedded, e.g. ``metadata.mime_type``)."""
    out = []
    for name, field in samples.get_field_schema(flat=True).items():
        try:
            _balance_path_of(name, field)
        except ValueError:
            continue
        out.append(name)
    return sorted(out)


def balance_path(samples, field):
    """The path whose values group the samples for ``balance_by=field``; ``ValueError`` saying
    what can be used otherwise."""
    schema = samples.get_field_schema(flat=True)
    if not isinstance(field, str) or field not in schema:
        raise ValueError(
            f"balance_by field {field!r} not found; fields to balance by: {balance_fields(samples)}"
        )
    return _balance_path_of(field, schema[field])


def _balance_path_of(name, field):
    if isinstance(field, fo.EmbeddedDocumentField) and issubclass(
        field.document_type, fo.Classification
    ):
        return name + ".label"
    plain = (fo.StringField, fo.IntField, fo.BooleanField)
    if isinstance(field, plain) and not isinstance(field, fo.ObjectIdField) and name != "filepath":
        return name
    raise ValueError(
        f"balance_by {name!r} is a {type(field).__name__}; balance by a Classification, string, "
        "int or bool field"
    )


def group_codes(values):
    """``(codes, names)``: an int code per value (``-1`` for ``None``) and the distinct values,
    sorted (as strings when they mix types)."""
    present = sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v))
    index = {v: i for i, v in enumerate(present)}
    codes = np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    return codes, present


def check_coreset_request(
    sample_collection, *, size=None, fraction=None, threshold=None, view_name=None, overwrite=False
):
    """Every check of a later :func:`select_coreset` + :func:`save_coreset` that does not need
    the scores: exactly one valid ``size`` / ``fraction`` / ``threshold`` (finite), and a
    ``view_name`` that is free (by name and by slug) unless ``overwrite``. The operators call it
    before anything is written."""
    resolve_size(np.zeros(0), size=size, fraction=fraction, threshold=threshold)
    check_view_name(
        sample_collection._root_dataset, view_name, overwrite=overwrite, what="view_name"
    )


def check_view_name(dataset, name, *, overwrite=False, what="view_name", remedy=None):
    """A saved-view name that is free on ``dataset`` (by name and by slug) unless
    ``overwrite``; ``ValueError`` saying what to do otherwise (``remedy``, default: the API's
    words). Empty names pass (nothing saved)."""
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
                + "; "
                + (remedy or f"choose another {what} or pass overwrite=True")
            )


def save_coreset(sample_collection, view, *, view_name=None, tag=None, overwrite=False):
    """Save a coreset view under ``view_name`` and/or tag its samples with ``tag``.

    Returns the number of samples in the view.
    """
    dataset = sample_collection._root_dataset
    check_view_name(dataset, view_name, overwrite=overwrite, what="view_name")
    count = view.count()
    if view_name:
        dataset.save_view(view_name, view, overwrite=overwrite)
    if tag:
        view.tag_samples(tag)
    return count


def list_zcore_runs(samples):
    """Run keys of the ``compute_zcore`` runs recorded on the collection's dataset."""
    return runs.ScoreRun.keys(samples)


def _check_record(samples, run_cls, run_key, overwrite):
    """Before any work: a record of ``run_cls`` may take ``run_key`` (FiftyOne's rules: a valid
    key, no record of another kind under it, ``overwrite`` to replace one)."""
    if not (overwrite and run_cls.is_legacy(samples, run_key)):
        run_cls(run_cls.CONFIG()).validate_run(samples, run_key, overwrite=overwrite)


def _register(samples, run_cls, run_key, config, overwrite):
    """Records ``config`` under ``run_key``. Never runs the replaced record's cleanup: the run
    that replaces it has just written the fields that cleanup would delete. An untyped record of
    the same kind (written by an earlier zcore) is removed first: FiftyOne refuses to replace a
    record by one of another class."""
    if overwrite and run_cls.is_legacy(samples, run_key):
        samples.delete_run(run_key)  # an untyped record has no cleanup
    samples.register_run(run_key, config, overwrite=overwrite, cleanup=False)


def score_field_path(samples, score_field):
    """Where ``score_field`` lives in ``samples``: ``<patches_field>.<name>`` on a patches view
    (when that exists), else ``score_field`` itself."""
    return level_of(samples).resolve(score_field)


def _select_frames(samples, field, size, fraction, threshold):
    """A view of ``samples`` that keeps only the top frames by the frame field ``field``."""
    from bson import ObjectId

    level = level_of(samples, field)
    name = field[len("frames.") :]
    if level.get_field(name) is None:
        raise ValueError(f"frame field {field!r} not found; run compute_zcore first")
    ids = level.ids()
    values = as_scores(level.read(field))
    n_keep = resolve_size(values, size=size, fraction=fraction, threshold=threshold)
    keep = [ObjectId(ids[i]) for i in top_order(values, ties=ids)[:n_keep]]
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
        progress=progress,
    )
    return field


def _paced(progress):
    """The run's one progress callback (:mod:`zcore.core.progress`), paced: within a stage at
    most every :data:`zcore.store.PROGRESS_DT` seconds (the engines report every few
    milliseconds), always at a new stage and at its end. ``None`` when silent; its ``close()``
    closes the tqdm bars of ``progress=True``."""
    callback = as_progress(progress)
    if callback is None:
        return None
    rate = store.RateLimit()
    last = [None]

    def report(done, total, label):
        if rate.due(force=label != last[0] or done >= total):
            last[0] = label
            callback(done, total, label)

    report.close = getattr(callback, "close", lambda: None)
    return report
