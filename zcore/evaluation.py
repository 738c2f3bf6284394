"""FiftyOne layer of the coreset evaluation: does the coreset beat random on *your* labels?

:func:`evaluate_coreset` reads the labels and embeddings of a collection, runs the linear-probe
protocol of :mod:`zcore.core.evaluate` on the samples that have both, and records the result as
a :class:`zcore.runs.EvaluationRun` (the table in the run's results), so the App can show it
again (:func:`load_evaluation`). It writes no field: the run record is its only write, made
after every check and the whole computation succeeded.
"""

import fiftyone as fo
import numpy as np

from . import runs
from .collection import (
    _check_existing_score_field,
    _check_record,
    _check_run_key,
    _check_run_key_name,
    _paced,
    _register,
    recorded_embeddings,
)
from .core import evaluate as E
from .core.budget import as_scores
from .core.progress import stage
from .forms import dropdown, form_error
from .levels import field_names, is_frame_path, level_of

DEFAULT_RUN_KEY = "zcore_evaluation"
#: Sample fields never offered as labels (they are unique per sample).
_NOT_LABELS = ("id", "filepath", "_id", "_dataset_id")


def evaluate_coreset(
    samples,
    *,
    label_field,
    embeddings=None,
    score_field=None,
    methods=E.DEFAULT_METHODS,
    prune=E.DEFAULT_PRUNE,
    seeds=E.DEFAULT_SEEDS,
    seed=None,
    test_size=E.DEFAULT_TEST_SIZE,
    run_key=DEFAULT_RUN_KEY,
    overwrite=False,
    progress=None,
):
    """Does each method's coreset train a better linear probe than a random subset of equal size?

    On the samples of ``samples`` that have both a label and an embedding: a stratified, seeded
    test split is held out; at each prune rate and run seed every method selects from the rest
    (the pool) and random keeps as many; a logistic regression fitted on the kept samples is
    scored on the test split. The protocol, the probe and the mark's rule are those of
    :mod:`zcore.core.evaluate` (the quality benchmark's). The result is recorded as a
    :class:`zcore.runs.EvaluationRun` under ``run_key`` (``samples.load_run_results(run_key)``
    holds ``rows``, ``summary``, ``rule``, ``info``; :func:`load_evaluation` rebuilds the
    result); nothing else is written.

    Parameters
    ----------
    samples : fiftyone.core.collections.SampleCollection
        A dataset or view (sample level).
    label_field : str
        A ``Classification`` field (its ``label`` is used), or a string or int field. Samples
        without a label are skipped.
    embeddings : str or list of str, default=None
        Vector field(s); default: the field(s) that the ``compute_zcore`` run of
        ``score_field`` recorded (any score run's, the latest, without ``score_field``).
        Samples without an embedding are skipped.
    score_field : str, default=None
        Stored scores for the methods that use scores, restricted to the pool; samples without
        a score are then skipped too. ``None``: ``zcore_scores`` of the pool, once per run seed.
    methods : sequence of str, default=("auto", "topk")
        Registered selection methods at their defaults; random is always the baseline.
    prune : sequence of float in (0, 1), default=(0.5, 0.7, 0.9)
        Fractions of the pool removed.
    seeds : int or sequence of int, default=3
        Run seeds (a count ``n``: ``seed .. seed + n - 1``).
    seed : int or None, default=None
        Seed of the test split; ``None`` draws one, recorded with the run.
    test_size : float in (0, 1), default=0.3
        Fraction of each class held out.
    run_key : str, default="zcore_evaluation"
    overwrite : bool, default=False
        Replace an existing evaluation under ``run_key``.
    progress : bool or callable, default=None
        ``progress(done, total, label)`` (:mod:`zcore.core.progress`).

    Returns
    -------
    zcore.core.evaluate.Evaluation
        ``summary`` (mean ± std, random's, difference, mark per method and prune rate),
        ``rows``, ``rule``, ``info``; ``plot()`` gives a plotly figure, ``to_markdown()`` a table.

    Raises
    ------
    ValueError
        Unknown or non-label ``label_field``, unknown method, bad prune rates, no embeddings,
        too few labels or classes, an existing run without ``overwrite``. Nothing is written.
    """
    # every check that needs no data, before anything is read
    _check_run_key_name(run_key)
    req = E.check_request(methods=methods, prune=prune, seeds=seeds, seed=seed, test_size=test_size)
    _check_run_key(samples, run_key, overwrite)
    _check_record(samples, runs.EvaluationRun, run_key, overwrite)
    level = level_of(samples)
    if level.kind != "samples":
        raise ValueError("evaluate_coreset evaluates samples; patches and frames are not supported")
    label_path = label_path_of(samples, label_field)
    if embeddings is None:
        embeddings = default_embeddings(samples, score_field)
    if embeddings is None:
        raise ValueError(
            "pass embeddings=<vector field>: no compute_zcore run recorded the embeddings"
            + (f" of {score_field!r}" if score_field else "")
        )
    if any(is_frame_path(samples, f) for f in field_names(embeddings) or []):
        raise ValueError("frame-level embeddings are not supported; evaluate samples")
    score_path = None
    if score_field is not None:
        score_path = _check_existing_score_field(samples, level.resolve(score_field))
    progress = _paced(progress)
    try:
        stage(progress, "reading labels and embeddings")
        ids, X, fields = level.load_embeddings(embeddings)
        all_ids = level.ids()
        labels = dict(zip(all_ids, samples.values(label_path)))
        keep = [k for k, i in enumerate(ids) if labels[i] is not None]
        s = None
        if score_path is not None:
            by_id = dict(zip(all_ids, as_scores(level.read(score_path))))
            s = np.asarray([by_id[ids[k]] for k in keep], dtype=np.float64)
            scored = ~np.isnan(s)
            keep, s = [k for k, ok in zip(keep, scored) if ok], s[scored]
        y = [labels[ids[k]] for k in keep]
        X = X[np.asarray(keep, dtype=np.int64)] if len(keep) else X[:0]
        n_all = len(all_ids)
        if len(keep) == 0:
            raise ValueError(
                f"no sample of the {n_all} has both a {label_field!r} label and an embedding"
                + (f" and a {score_field!r} score" if score_field else "")
                + ": label some samples (or compute their embeddings) first"
            )
        result = E.evaluate_coreset(
            X,
            y,
            methods=req["methods"],
            prune=req["prune"],
            seeds=req["seeds"],
            seed=req["seed"],
            scores=s,
            test_size=req["test_size"],
            progress=progress,
        )
    finally:
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    result.info.update(
        run_key=run_key,
        label_field=label_field,
        label_path=label_path,
        embeddings=fields,
        score_field=score_path,
        n_samples=n_all,
        n_skipped=n_all - len(keep),
    )
    config = runs.EvaluationRunConfig(
        label_field=label_field,
        label_path=label_path,
        embeddings=fields,
        score_field=score_path,
        methods=req["methods"],
        prune=req["prune"],
        seeds=req["seeds"],
        seed=req["seed"],
        test_size=req["test_size"],
    )
    _register(samples, runs.EvaluationRun, run_key, config, overwrite)
    results = samples.init_run_results(run_key, **result.to_dict())
    samples.save_run_results(run_key, results, overwrite=True)
    return result


def load_evaluation(samples, run_key=DEFAULT_RUN_KEY):
    """The :class:`~zcore.core.evaluate.Evaluation` recorded under ``run_key`` (for the App's
    panel, or to plot it again)."""
    if run_key not in runs.EvaluationRun.keys(samples):
        raise ValueError(
            f"no coreset evaluation under {run_key!r}; evaluations: "
            f"{runs.EvaluationRun.keys(samples)}"
        )
    r = samples.load_run_results(run_key, cache=False)
    return E.Evaluation.from_dict({k: getattr(r, k) for k in ("rows", "summary", "rule", "info")})


def list_evaluations(samples):
    """Run keys of the coreset evaluations recorded on the collection's dataset, oldest first."""
    return runs.EvaluationRun.keys(samples)


def label_fields(samples):
    """Fields usable as labels: ``Classification`` fields and string / int fields (not ``id``
    or ``filepath``), sorted."""
    out = []
    for name, field in samples.get_field_schema().items():
        if name in _NOT_LABELS:
            continue
        if _is_classification(field) or _is_plain_label(field):
            out.append(name)
    return sorted(out)


def label_path_of(samples, label_field):
    """The path whose values are the labels: ``<field>.label`` for a ``Classification`` field,
    the field itself for a string / int field; ``ValueError`` saying what to pass otherwise."""
    if not isinstance(label_field, str) or not label_field:
        raise ValueError(f"label_field must be a field name; got {label_field!r}")
    schema = samples.get_field_schema(flat=True)
    field = schema.get(label_field)
    candidates = label_fields(samples)
    if field is None:
        raise ValueError(
            f"label_field {label_field!r} not found on the collection; label fields: {candidates}"
        )
    if _is_classification(field):
        return label_field + ".label"
    if _is_plain_label(field) and label_field not in _NOT_LABELS:
        return label_field
    kind = type(field).__name__
    if isinstance(field, fo.EmbeddedDocumentField):
        kind = field.document_type.__name__
    raise ValueError(
        f"label_field {label_field!r} is a {kind}; pass a Classification field or a string or int "
        f"field with one class per sample (label fields: {candidates})"
    )


def label_counts(samples, label_field, embeddings):
    """``{class: number of samples with that label and an embedding}`` (one aggregation; the
    operator's form checks these with :func:`zcore.core.evaluate.check_label_counts`)."""
    path = label_path_of(samples, label_field)
    view = samples.exists(path)
    for f in field_names(embeddings) or []:
        view = view.exists(f)
    return view.count_values(path)


def default_embeddings(samples, score_field=None):
    """The embeddings that the ``compute_zcore`` run of ``score_field`` recorded, or, without
    ``score_field``, those of the latest score run whose fields still exist; ``None`` if none."""
    if score_field is not None:
        return recorded_embeddings(samples, score_field)
    schema = samples.get_field_schema(flat=True)
    for key in reversed(runs.ScoreRun.keys(samples)):
        names = getattr(samples.get_run_info(key).config, "embeddings", None)
        names = [names] if isinstance(names, str) else list(names or [])
        if names and all(isinstance(f, str) and f in schema for f in names):
            return names[0] if len(names) == 1 else names
    return None


def _is_classification(field):
    return isinstance(field, fo.EmbeddedDocumentField) and issubclass(
        field.document_type, fo.Classification
    )


def _is_plain_label(field):
    return isinstance(field, (fo.StringField, fo.IntField)) and not isinstance(
        field, fo.BooleanField
    )


# --- the operator's form and output (``evaluate_coreset`` in the plugin's __init__.py) ----------

#: Columns of the operator's table: (key of :func:`table_rows`, label).
TABLE_COLUMNS = (
    ("method", "Method"),
    ("prune", "Prune"),
    ("kept", "Kept"),
    ("accuracy", "Accuracy % (mean ± std)"),
    ("random", "Random %"),
    ("difference", "Difference"),
    ("mark", "Mark"),
)


def table_rows(result):
    """The summary of ``result`` as rows of display strings (keys of :data:`TABLE_COLUMNS`)."""
    return [
        {
            "method": r["method"],
            "prune": f"{100 * r['prune']:.0f}%",
            "kept": r["n_keep"],
            "accuracy": f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}",
            "random": f"{100 * r['random_mean']:.2f} ± {100 * r['random_std']:.2f}",
            "difference": f"{100 * r['difference']:+.2f}",
            "mark": r["mark"],
        }
        for r in result.summary
    ]


def parse_methods(value):
    """Method names from the form (a list) or a comma-separated string; default when empty."""
    if value is None or value == "" or value == []:
        return list(E.DEFAULT_METHODS)
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return list(value)


def parse_prune(value):
    """Prune rates from the form (comma-separated text such as ``"0.5, 0.7, 0.9"``), a number
    or a list; default when empty. Range checks are :func:`zcore.core.evaluate.check_request`'s."""
    if value is None or value == "" or value == []:
        return list(E.DEFAULT_PRUNE)
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, str):
        try:
            return [float(v) for v in value.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                "prune rates are comma-separated fractions removed, e.g. 0.5, 0.7, 0.9; got "
                f"{value!r}"
            ) from None
    return list(value)


def vector_fields(samples):
    """Sample-level vector fields of ``samples`` that hold values."""
    from .levels import is_vector_field

    schema = samples.get_field_schema(flat=True)
    names = [n for n, f in schema.items() if is_vector_field(f)]
    return sorted(n for n in names if samples.count(n) > 0)


def form_inputs(inputs, view, params):
    """The operator's form on ``inputs`` (a ``types.Object``): label field, embeddings, methods,
    prune rates, seeds, seed, run key. The cheap checks (options, the run key, the label counts
    of the samples with an embedding) mark the form invalid with their reason, so Execute and
    Schedule stay disabled and a programmatic call fails before anything runs."""
    import fiftyone.operators.types as types

    from .core.registry import app_methods

    labels = label_fields(view)
    if not labels:
        form_error(
            inputs,
            "no_labels",
            "No label field: evaluating needs a Classification field or a string/int field "
            "with the class of (some of) the samples",
        )
        return
    default_label = "ground_truth" if "ground_truth" in labels else labels[0]
    inputs.enum(
        "label_field",
        labels,
        default=default_label,
        label="Label field",
        description="Classification, string or int; samples without a label are skipped",
        view=dropdown(labels),
    )
    fields = vector_fields(view)
    if not fields:
        form_error(inputs, "no_vectors", "No vector field: compute embeddings first")
        return
    recorded = default_embeddings(view)
    default_emb = recorded if recorded in fields else fields[0]
    inputs.enum(
        "embeddings",
        fields,
        default=default_emb,
        label="Embeddings field",
        description="Default: the field the latest ZCore scores were computed from",
    )
    choices = types.AutocompleteView(allow_user_input=False, allow_duplicates=False)
    for spec in app_methods():
        if spec.name not in E.NOT_EVALUABLE:
            choices.add_choice(spec.name, label=spec.label, description=spec.help)
    inputs.list(
        "methods",
        types.String(),
        default=list(E.DEFAULT_METHODS),
        label="Methods (each compared with random)",
        description="At their defaults; ZCore scores are computed on the pool for each seed",
        view=choices,
    )
    inputs.str(
        "prune",
        default=", ".join(str(r) for r in E.DEFAULT_PRUNE),
        label="Prune rates",
        description="Fractions removed, comma-separated (0.9 keeps 10%)",
    )
    inputs.int(
        "seeds",
        default=E.DEFAULT_SEEDS,
        label="Seeds",
        description="Runs per method and prune rate (2 or more give a std)",
        min=1,
        max=20,
    )
    inputs.int(
        "seed",
        label="Seed",
        description="Of the test split; empty: a fresh one, recorded",
        required=False,
        min=0,
    )
    inputs.str("run_key", label="Run key", default=DEFAULT_RUN_KEY)
    inputs.bool("overwrite", label="Replace an existing evaluation with this key", default=False)

    try:
        E.check_request(
            methods=parse_methods(params.get("methods")),
            prune=parse_prune(params.get("prune")),
            seeds=params.get("seeds") or E.DEFAULT_SEEDS,
            seed=params.get("seed") if params.get("seed") is not None else 0,
            test_size=E.DEFAULT_TEST_SIZE,
        )
        run_key = params.get("run_key") or DEFAULT_RUN_KEY
        _check_run_key(view, run_key, bool(params.get("overwrite", False)))
        label_field = params.get("label_field") or default_label
        counts = label_counts(view, label_field, params.get("embeddings") or default_emb)
        E.check_label_counts(counts, test_size=E.DEFAULT_TEST_SIZE)
    except ValueError as e:
        form_error(inputs, "invalid", str(e))
        return
    inputs.view(
        "summary",
        types.Notice(
            label=f"{sum(counts.values()):,} samples with a label and an embedding, "
            f"{len(counts)} classes; {round(100 * E.DEFAULT_TEST_SIZE)}% of each class is held "
            "out for testing"
        ),
    )
