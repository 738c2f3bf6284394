"""Does the coreset beat random on *these* labels? A linear-probe evaluation (numpy + scikit-learn).

The protocol is the quality benchmark's (``benchmarks/quality.py``), run on the caller's own
labelled embeddings:

1. **Split** (seeded by ``seed``, stratified): each class's labelled rows are shuffled and
   ``round(test_size * n_class)`` of them go to a held-out **test** split; the rest form the
   **pool**. Every class needs at least :data:`MIN_TEST_PER_CLASS` rows in the test split.
2. **Select** (per run seed ``s`` and prune rate ``p``): every method keeps
   ``n_keep = round((1 - p) * n_pool)`` pool rows without looking at labels
   (:func:`zcore.core.methods.select` with ``seed=s``); **random** keeps the same count uniformly
   at random (``numpy.random.default_rng(s)``). Methods that use scores get the pool's ZCore
   scores, ``zcore_scores(pool_X, seed=s)`` (computed once per run seed, shared by the methods and
   prune rates), or the caller's ``scores`` restricted to the pool when given.
3. **Probe**: a logistic regression (L2, ``C=1``, lbfgs, :data:`PROBE_MAX_ITER` iterations, the
   benchmark's learner) fitted on the kept rows' embeddings standardised with the kept rows'
   statistics; its accuracy on the test split is the run's number. A coreset that kept a single
   class predicts that class everywhere.
4. **Mark** (:data:`RULE`): per (method, prune rate), over the run seeds, a method *beats random*
   when ``mean - random_mean > max(std, random_std)`` (sample standard deviations, ``ddof=1``),
   *loses* when ``random_mean - mean`` exceeds that band, and is *level* otherwise.

Everything random comes from ``seed`` and the run seeds, so the same arguments give the same table.
"""

import dataclasses
import math
import numbers
import warnings

import numpy as np

from . import methods as M
from .progress import as_progress
from .registry import get_spec
from .validation import check_float, check_int, recordable_seed

#: The baseline every method is compared with (not a registered method).
RANDOM = "random"
DEFAULT_METHODS = ("auto", "topk")
DEFAULT_PRUNE = (0.5, 0.7, 0.9)
DEFAULT_SEEDS = 3
DEFAULT_TEST_SIZE = 0.3
#: Each class needs this many rows in the test split (a class with one test row is a coin flip).
MIN_TEST_PER_CLASS = 2
#: A coreset must have room for two classes.
MIN_KEEP = 2
PROBE_C = 1.0
PROBE_MAX_ITER = 200
PROBE = (
    f"LogisticRegression(C={PROBE_C}, max_iter={PROBE_MAX_ITER}, lbfgs) on embeddings "
    "standardised with the kept samples' mean and std; accuracy on the held-out test split"
)

BEATS, LEVEL, LOSES, BASELINE = "beats random", "level", "loses", "baseline"
RULE = (
    "beats random when mean - random_mean > max(std, random_std); loses when "
    "random_mean - mean > max(std, random_std); level otherwise (mean and sample std, ddof=1, "
    "of the test accuracy over the run seeds)"
)
#: Methods that cannot be evaluated without more input than embeddings and scores.
NOT_EVALUABLE = {"target": "it needs a target set (target_embeddings)"}


def mark(mean, std, random_mean, random_std):
    """The mark of :data:`RULE`: :data:`BEATS`, :data:`LOSES` or :data:`LEVEL`."""
    diff, band = mean - random_mean, max(std, random_std)
    if diff > band:
        return BEATS
    if -diff > band:
        return LOSES
    return LEVEL


def n_keep_of(n_pool, prune):
    """How many of ``n_pool`` rows a prune rate keeps: ``round((1 - prune) * n_pool)``, >= 1."""
    return max(1, int(math.floor((1.0 - prune) * n_pool + 0.5)))


@dataclasses.dataclass
class Evaluation:
    """The result of :func:`evaluate_coreset`.

    ``rows``: one dict per probe, ``{method, prune, seed, n_keep, accuracy}`` (random's rows
    have ``method="random"``). ``summary``: one dict per (method, prune), ``{method, prune,
    n_keep, mean, std, random_mean, random_std, difference, mark}``, random's own rows marked
    :data:`BASELINE`. ``rule``: how the mark is decided. ``info``: what was evaluated (methods,
    prune rates, run seeds, split seed, test size, counts, classes, where scores came from, the
    probe).
    """

    rows: list
    summary: list
    rule: str
    info: dict

    def to_dict(self):
        """Plain JSON-able dict (stored as the run's results by the FiftyOne layer)."""
        return {"rows": self.rows, "summary": self.summary, "rule": self.rule, "info": self.info}

    @classmethod
    def from_dict(cls, d):
        return cls(rows=list(d["rows"]), summary=list(d["summary"]), rule=d["rule"], info=d["info"])

    def cell(self, method, prune):
        """The summary row of ``(method, prune)``."""
        for r in self.summary:
            if r["method"] == method and math.isclose(r["prune"], prune):
                return r
        raise KeyError((method, prune))

    def to_markdown(self):
        """The summary as a markdown table (accuracy in %, mean ± std over the run seeds)."""
        lines = [
            "| method | prune | kept | accuracy (%) | random (%) | difference | mark |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.summary:
            lines.append(
                f"| {r['method']} | {100 * r['prune']:.0f}% | {r['n_keep']} | "
                f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} | "
                f"{100 * r['random_mean']:.2f} ± {100 * r['random_std']:.2f} | "
                f"{100 * r['difference']:+.2f} | {r['mark']} |"
            )
        lines.append("")
        lines.append(f"Rule: {self.rule}.")
        return "\n".join(lines)

    def plot_traces(self):
        """The plot's data as plain plotly trace dicts (one per method, random dashed): test
        accuracy vs the kept fraction, mean with ± std error bars."""
        traces = []
        for method in self.info["methods"] + [RANDOM]:
            cells = sorted(
                (r for r in self.summary if r["method"] == method), key=lambda r: -r["prune"]
            )
            trace = {
                "type": "scatter",
                "mode": "lines+markers",
                "name": method,
                "x": [round(1.0 - r["prune"], 6) for r in cells],
                "y": [r["mean"] for r in cells],
                "error_y": {"type": "data", "array": [r["std"] for r in cells], "visible": True},
                "text": [r["mark"] for r in cells],
                "hovertemplate": "kept %{x:.0%}: %{y:.2%} (%{text})<extra>" + method + "</extra>",
            }
            if method == RANDOM:
                trace["line"] = {"dash": "dash", "color": "gray"}
            traces.append(trace)
        return traces

    def plot_layout(self):
        return {
            "title": {"text": "Linear-probe test accuracy vs kept fraction (mean ± std)"},
            "xaxis": {"title": {"text": "kept fraction (1 - prune rate)"}, "tickformat": ".0%"},
            "yaxis": {"title": {"text": "test accuracy"}, "tickformat": ".0%"},
        }

    def plot(self):
        """A plotly figure: accuracy vs kept fraction, one line per method with ± std error
        bars, random dashed (needs ``plotly``)."""
        import plotly.graph_objects as go

        return go.Figure(data=self.plot_traces(), layout=self.plot_layout())


def evaluate_coreset(
    embeddings,
    labels,
    *,
    methods=DEFAULT_METHODS,
    prune=DEFAULT_PRUNE,
    seeds=DEFAULT_SEEDS,
    seed=None,
    scores=None,
    test_size=DEFAULT_TEST_SIZE,
    score_options=None,
    progress=None,
):
    """Linear-probe accuracy of each method's coreset against random subsets of equal size.

    See the module docstring for the protocol (split, selection, probe, mark).

    Parameters
    ----------
    embeddings : array-like of shape (N, D)
        Labelled rows only.
    labels : array-like of shape (N,)
        Class of each row (strings or ints; no missing values).
    methods : sequence of str, default=("auto", "topk")
        Registered selection methods (:func:`zcore.core.registry.method_names`), each at its
        defaults; random is always evaluated as the baseline.
    prune : sequence of float in (0, 1), default=(0.5, 0.7, 0.9)
        Fractions of the pool removed; each keeps ``round((1 - p) * n_pool)`` rows.
    seeds : int or sequence of int, default=3
        The run seeds (selection, ZCore scoring, random subsets): a count ``n`` means
        ``seed, seed + 1, ..., seed + n - 1``. Two or more give a standard deviation.
    seed : int or None, default=None
        Seed of the test split (and first run seed); ``None`` draws one, kept in ``info``.
    scores : array-like of shape (N,), default=None
        Scores of the rows (higher = keep); when given, methods that use scores get these,
        restricted to the pool, instead of ``zcore_scores(pool, seed=s)``.
    test_size : float in (0, 1), default=0.3
        Fraction of each class held out for testing.
    score_options : dict, default=None
        Keywords of :func:`zcore.zcore_scores` for the pool's scores (e.g. ``n_samples``).
    progress : bool or callable, default=None
        ``progress(done, total, label)`` (:mod:`zcore.core.progress`): one stage,
        ``"evaluating coresets"``, counting scorings and probes.

    Returns
    -------
    Evaluation
        ``rows``, ``summary`` (with the mark), ``rule``, ``info``; ``plot()``.

    Raises
    ------
    ValueError
        Unknown or unevaluable method, prune rate outside (0, 1), too few labelled rows or
        classes (fewer than 2 classes, a class with fewer than 2 rows in the test split, a
        coreset of fewer than 2 rows), bad shapes.
    """
    req = check_request(methods=methods, prune=prune, seeds=seeds, seed=seed, test_size=test_size)
    X = M._as_embeddings(embeddings, required=True, method="evaluation")
    y_raw = _as_labels(labels, len(X))
    s_all = None if scores is None else M._as_scores(scores, n=len(X))
    classes, y = np.unique(y_raw, return_inverse=True)
    test, pool = split(y, test_size=req["test_size"], seed=req["seed"], classes=classes)
    n_pool = len(pool)
    keeps = {p: n_keep_of(n_pool, p) for p in req["prune"]}
    for p, k in keeps.items():
        if k < MIN_KEEP:
            raise ValueError(
                f"prune rate {p} keeps {k} of the {n_pool} pool samples; a coreset needs at least "
                f"{MIN_KEEP} (room for 2 classes): lower the prune rate or label more samples"
            )
    if len(np.unique(y[pool])) < 2:
        raise ValueError("the pool (labelled samples outside the test split) has a single class")
    return _evaluate(X, y, classes, test, pool, keeps, s_all, req, score_options or {}, progress)


def check_request(*, methods, prune, seeds, seed, test_size):
    """The request's options converted and checked (before any data is read): method names
    (the registry's message for an unknown one), prune rates in (0, 1), run seeds, split seed,
    test size. Returns a dict with ``methods`` (list, random removed), ``prune`` (sorted list),
    ``seeds`` (list of ints), ``seed`` (an int) and ``test_size``."""
    if isinstance(methods, str):
        methods = [methods]
    names = []
    for name in methods:
        if name == RANDOM:
            continue  # always evaluated, as the baseline
        get_spec(name)  # unknown names: the registry's message with the valid names
        if name in NOT_EVALUABLE:
            raise ValueError(f"method {name!r} cannot be evaluated here: {NOT_EVALUABLE[name]}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("pass at least one selection method to compare with random")
    if isinstance(prune, numbers.Real):
        prune = [prune]
    rates = []
    for p in prune:
        p = check_float(p, "prune")
        if not 0.0 < p < 1.0:
            raise ValueError(
                f"prune rates are fractions removed, in (0, 1) (e.g. 0.7 keeps 30%); got {p}"
            )
        if p not in rates:
            rates.append(p)
    if not rates:
        raise ValueError("pass at least one prune rate")
    seed = recordable_seed(seed)
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        n = check_int(seeds, "seeds", min_value=1)
        run_seeds = [seed + i for i in range(n)]
    else:
        run_seeds = [check_int(s, "seeds entry", min_value=0) for s in seeds]
        if not run_seeds or len(set(run_seeds)) != len(run_seeds):
            raise ValueError(f"seeds must be a count or distinct ints; got {list(seeds)}")
    test_size = check_float(test_size, "test_size")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1); got {test_size}")
    return {
        "methods": names,
        "prune": sorted(rates),
        "seeds": run_seeds,
        "seed": seed,
        "test_size": test_size,
    }


def check_label_counts(counts, *, test_size=DEFAULT_TEST_SIZE):
    """``ValueError`` saying what is needed unless ``counts`` (``{class: n labelled}``) can be
    split: at least 2 classes, each with at least :data:`MIN_TEST_PER_CLASS` rows in the test
    split (``round(test_size * n)``) and one in the pool. Cheap: the form calls it."""
    counts = {c: int(n) for c, n in counts.items() if n}
    if len(counts) < 2:
        raise ValueError(
            f"evaluating needs labelled samples of at least 2 classes; found {len(counts)} "
            f"({', '.join(map(str, counts)) or 'no labels'}): label more samples"
        )
    short = []
    for c, n in sorted(counts.items(), key=lambda kv: str(kv[0])):
        n_test = _n_test(n, test_size)
        if n_test < MIN_TEST_PER_CLASS or n - n_test < 1:
            short.append(f"{c!s} ({n})")
    if short:
        need = min_per_class(test_size)
        raise ValueError(
            f"each class needs at least {need} labelled samples with test_size={test_size} (at "
            f"least {MIN_TEST_PER_CLASS} in the test split and 1 in the pool); too few: "
            f"{', '.join(short)}. Label more samples of these classes, or evaluate a view "
            "without them"
        )


def min_per_class(test_size=DEFAULT_TEST_SIZE):
    """The fewest labelled samples a class needs (see :func:`check_label_counts`)."""
    n = MIN_TEST_PER_CLASS + 1
    while _n_test(n, test_size) < MIN_TEST_PER_CLASS or n - _n_test(n, test_size) < 1:
        n += 1
    return n


def _n_test(n, test_size):
    return int(math.floor(test_size * n + 0.5))


def split(y, *, test_size, seed, classes=None):
    """``(test, pool)`` row indices (sorted): per class, ``round(test_size * n_class)`` rows
    drawn without replacement by ``numpy.random.default_rng(seed)`` go to the test split.
    ``y`` holds class indices ``0..K-1`` (``classes`` names them in errors)."""
    counts = np.bincount(y)
    names = classes if classes is not None else np.arange(len(counts))
    check_label_counts(
        {_plain(names[c]): n for c, n in enumerate(counts)},
        test_size=test_size,
    )
    rng = np.random.default_rng(seed)
    test = []
    for c in range(len(counts)):
        members = np.flatnonzero(y == c)
        test.append(rng.permutation(members)[: _n_test(len(members), test_size)])
    test = np.sort(np.concatenate(test)).astype(np.int64)
    pool = np.setdiff1d(np.arange(len(y)), test).astype(np.int64)
    return test, pool


def linear_probe(X_train, y_train, X_test, y_test):
    """Test accuracy of the probe (:data:`PROBE`) fitted on ``(X_train, y_train)``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:  # one class kept: the probe predicts it everywhere
        return float(np.mean(y_test == y_train[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scaler = StandardScaler().fit(X_train)
        clf = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER)
        clf.fit(scaler.transform(X_train), y_train)
        return float(np.mean(clf.predict(scaler.transform(X_test)) == y_test))


def _evaluate(X, y, classes, test, pool, keeps, s_all, req, score_options, progress):
    progress = as_progress(progress)
    methods, run_seeds = req["methods"], req["seeds"]
    # methods that use scores at their defaults (cluster_balanced does; hierarchical_kmeans not)
    uses_scores = [m for m in methods if get_spec(m).needs_scores()]
    compute_scores = s_all is None and bool(uses_scores)
    n_probes = len(run_seeds) * len(keeps) * (len(methods) + 1)
    total = n_probes + (len(run_seeds) if compute_scores else 0)
    done = 0
    label = "evaluating coresets"

    def advance():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)

    if progress is not None:
        progress(0, total, label)
    X_pool, y_pool, X_test, y_test = X[pool], y[pool], X[test], y[test]
    rows = []
    for s in run_seeds:
        if compute_scores:
            from .scoring import zcore_scores

            pool_scores = zcore_scores(X_pool, seed=s, **score_options)
            advance()
        else:
            pool_scores = None if s_all is None else s_all[pool]
        for p, k in keeps.items():
            rand = np.random.default_rng(s).choice(len(pool), size=k, replace=False)
            chosen = {RANDOM: rand}
            for m in methods:
                chosen[m] = M.select(
                    m,
                    k,
                    scores=pool_scores if m in uses_scores else None,
                    embeddings=X_pool if get_spec(m).needs_embeddings else None,
                    seed=s,
                )
            for m in methods + [RANDOM]:
                idx = np.asarray(chosen[m], dtype=np.int64)
                acc = linear_probe(X_pool[idx], y_pool[idx], X_test, y_test)
                rows.append(
                    {
                        "method": m,
                        "prune": p,
                        "seed": int(s),
                        "n_keep": int(len(idx)),
                        "accuracy": acc,
                    }
                )
                advance()
    summary = summarise(rows, methods)
    info = {
        "methods": list(methods),
        "prune": list(req["prune"]),
        "seeds": [int(s) for s in run_seeds],
        "seed": int(req["seed"]),
        "test_size": float(req["test_size"]),
        "n_labelled": int(len(y)),
        "n_pool": int(len(pool)),
        "n_test": int(len(test)),
        "classes": [_plain(c) for c in classes],
        "class_counts": {str(_plain(c)): int(n) for c, n in zip(classes, np.bincount(y))},
        "scores": (
            "given (restricted to the pool)"
            if s_all is not None
            else "zcore_scores(pool embeddings, seed=run seed)"
            if uses_scores
            else "none (no method uses scores)"
        ),
        "probe": PROBE,
    }
    return Evaluation(rows=rows, summary=summary, rule=RULE, info=info)


def summarise(rows, methods):
    """Per (method, prune): mean and sample std over seeds, random's, the difference and the
    mark (:func:`mark`); random's own rows are marked :data:`BASELINE`."""

    def stats(m, p):
        v = np.asarray([r["accuracy"] for r in rows if r["method"] == m and r["prune"] == p])
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    out = []
    for p in sorted({r["prune"] for r in rows}):
        rm, rs = stats(RANDOM, p)
        n_keep = next(r["n_keep"] for r in rows if r["method"] == RANDOM and r["prune"] == p)
        for m in list(methods) + [RANDOM]:
            mean, std = stats(m, p)
            out.append(
                {
                    "method": m,
                    "prune": p,
                    "n_keep": n_keep,
                    "mean": mean,
                    "std": std,
                    "random_mean": rm,
                    "random_std": rs,
                    "difference": mean - rm,
                    "mark": BASELINE if m == RANDOM else mark(mean, std, rm, rs),
                }
            )
    return out


def _as_labels(labels, n):
    y = np.asarray(labels, dtype=object)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels must have one entry per row ({n}); got shape {y.shape}")
    if any(v is None for v in y):
        raise ValueError("labels contain None: pass only the labelled rows")
    kinds = {type(_plain(v)) for v in y}
    if kinds <= {int} or kinds <= {str}:
        return np.asarray([_plain(v) for v in y])
    raise ValueError(
        f"labels must be all strings or all ints; got {sorted(k.__name__ for k in kinds)}"
    )


def _plain(v):
    """A numpy scalar as the Python value (JSON-able)."""
    return v.item() if isinstance(v, np.generic) else v
