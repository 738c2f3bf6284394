"""Public scoring entry points: :func:`zcore_scores` and, for the glue, :func:`score_components`.

The options of both come from one table (:mod:`zcore.core.config`): :func:`zcore_scores`'s keyword
arguments, signature and parameter documentation are generated from it.
"""

import inspect
from typing import NamedTuple

import numpy as np

from .config import (
    EXECUTION_OPTIONS,
    LAW_OPTIONS,
    Execution,
    ScoreConfig,
    default_n_samples,
    resolve,
)
from .draws import draw_init, draw_points, embedding_stats
from .law import fixed_point_shift
from .parallel import accumulate_parallel, default_num_workers
from .progress import TqdmProgress, as_progress, make_progress, stage
from .validation import check_embeddings, check_seed

__all__ = [
    "Components",
    "combine_components",
    "default_n_samples",
    "minmax_normalize",
    "score_components",
    "zcore_scores",
]


def zcore_scores(embeddings, *, config=None, execution=None, seed=None, progress=False, **options):
    """Zero-shot coreset scores (ZCore) of every sample, from its embedding alone.

    ZCore (Griffin et al., 2024, arXiv:2411.15349) draws random points in embedding space and, for
    each point, rewards the sample nearest to it (**coverage**) and penalises the samples crowded
    around that one (**redundancy**). Samples that often cover an unexplored region and have few
    close neighbours score high. No labels and no training are involved.

    The law, for embeddings ``X`` of shape ``(N, D)``:

    - per informative dimension (max > min), the minimum, median and maximum over the samples;
      constant dimensions are never sampled (they carry no information, and a triangular draw with
      ``min == max`` is undefined);
    - ``n_samples`` points; each picks ``sample_dim`` distinct dimensions at random and draws each
      coordinate from a triangular distribution (left=min, mode=median, right=max);
    - the sample nearest to the point by L1 distance over those dimensions gets +1 (ties: lowest
      index);
    - its ``min(redund_nn, N - 2)`` nearest other samples (L1 over the same dimensions, ties: lowest
      index) are penalised proportionally to ``1 / d**redund_exp``, penalties summing to 1; if the
      nearest of them is at distance 0, only that one gets -1;
    - every score starts from a U(0, 1) draw when ``rand_init`` (a tie-breaker among samples that
      are never covered); scores are min-max normalised to [0, 1].

    Parameters
    ----------
    embeddings : array-like of shape (N, D), or list of array-likes of shape (N, D_i)
        One row per sample. A list of matrices (e.g. one per model) is concatenated along the
        features. Cast to float32.
    <LAW>
    seed : int, numpy.random.Generator or None, default=None
        Source of all randomness. The same seed gives the same scores, with or without workers.
    <EXECUTION>
    progress : bool or callable, default=False
        ``True`` shows tqdm bars; a callable is called as ``progress(done, total, label)`` for each
        stage (see :mod:`zcore.core.progress`): the set-up stages, then ``"scoring"`` with the
        number of points scored so far.
    config : ScoreConfig, default=None
        The law's options as one object (:class:`zcore.core.config.ScoreConfig`), instead of
        the keywords above; not together with them.
    execution : Execution, default=None
        Where and how to run (:class:`zcore.core.config.Execution`), instead of the keywords
        above; not together with them.

    Returns
    -------
    scores : ndarray of shape (N,), float64
        In [0, 1]; **higher = keep**. Meaningful only relative to the other samples of the same
        call. If all raw scores are equal, every score is 0.5.

    Raises
    ------
    ValueError
        For embeddings that are not a finite numeric 2-d array with at least 3 rows, and for
        out-of-range, unknown or conflicting options; the message says what to change.
    ImportError
        When the chosen engine or backend needs a package that is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 16))
    >>> scores = zcore_scores(X, n_samples=500, redund_nn=20, seed=0)
    >>> scores.shape, float(scores.min()), float(scores.max())
    ((200,), 0.0, 1.0)
    """
    config, execution = resolve(config, execution, **options)
    components = score_components(
        embeddings, config=config, execution=execution, seed=seed, progress=progress
    )
    return combine_components(*components, rand_init=config.rand_init)


def _options_doc(specs):
    return "".join("    " + line + "\n" for spec in specs for line in spec.doc().splitlines())


def _signature():
    P = inspect.Parameter
    kw = P.KEYWORD_ONLY

    def opts(specs):
        return [P(s.name, kw, default=s.default) for s in specs]

    return inspect.Signature(
        [
            P("embeddings", P.POSITIONAL_OR_KEYWORD),
            *opts(LAW_OPTIONS),
            P("seed", kw, default=None),
            *opts(EXECUTION_OPTIONS),
            P("progress", kw, default=False),
            P("config", kw, default=None),
            P("execution", kw, default=None),
        ]
    )


zcore_scores.__signature__ = _signature()
zcore_scores.__doc__ = zcore_scores.__doc__.replace(
    "    <LAW>\n", _options_doc(LAW_OPTIONS)
).replace("    <EXECUTION>\n", _options_doc(EXECUTION_OPTIONS))


class Components(NamedTuple):
    """What scores are made of (:func:`score_components`); :func:`combine_components` makes the
    scores from them."""

    #: ndarray of shape (N,), int64: how many points each sample covered.
    coverage: np.ndarray
    #: ndarray of shape (N,), int64: total redundancy penalty, in units of ``2**-shift``.
    penalty: np.ndarray
    #: ndarray of shape (N,), float64: the U(0, 1) initial draw.
    init: np.ndarray
    #: int: fixed-point bits of ``penalty``.
    shift: int


def score_components(embeddings, *, config, execution, seed=None, progress=None):
    """Validate, draw and accumulate: the :class:`Components` of the scores of ``embeddings``.

    What :func:`zcore_scores` does before :func:`combine_components`; for the glue, which also
    writes the components.

    Parameters
    ----------
    embeddings : array-like of shape (N, D)
        As for :func:`zcore_scores`.
    config : ScoreConfig
    execution : Execution
    seed : int, numpy.random.Generator or None, default=None
    progress : bool or callable, default=None
        ``progress(done, total, label)`` (:mod:`zcore.core.progress`), ``True`` for tqdm bars.
        Stages: ``"checking the embeddings"``, ``"loading the engine (compiled on first use)"``,
        ``"dimension statistics"``, ``"preparing the engine"`` (these take tens of seconds for a
        million samples), then ``"scoring"`` (points).

    Returns
    -------
    Components
        ``coverage, penalty, init, shift``.
    """
    if not isinstance(config, ScoreConfig):
        raise TypeError(f"config must be a ScoreConfig, got {type(config).__name__}")
    if not isinstance(execution, Execution):
        raise TypeError(f"execution must be an Execution, got {type(execution).__name__}")
    callback = as_progress(progress)
    try:
        return _score(embeddings, config, execution, seed, callback)
    finally:
        if isinstance(callback, TqdmProgress) and callback is not progress:
            callback.close()


def _score(embeddings, config, execution, seed, progress):
    stage(progress, "checking the embeddings")
    X = check_embeddings(embeddings)
    n = X.shape[0]
    rng = check_seed(seed)
    n_points = config.n_points(n)
    sample_dim = config.sample_dim

    local = execution.backend == "local"
    if local:
        stage(progress, "loading the engine (compiled on first use)")
        engine = execution.engine_impl().load()

    stats = embedding_stats(X, progress=progress)
    n_valid = len(stats.valid_dims)
    if n_valid < sample_dim:
        raise ValueError(
            f"embeddings have {n_valid} non-constant dimension(s) out of {X.shape[1]}, fewer than "
            f"sample_dim={sample_dim}; lower sample_dim or check the embeddings (constant "
            "dimensions are never sampled)"
        )

    init = draw_init(rng, n)
    dims, coords = draw_points(rng, stats, n_points, sample_dim)
    params = {
        "k": min(config.redund_nn, n - 2),
        "exp": config.redund_exp,
        "shift": fixed_point_shift(n_points),
    }

    if local:  # per-matrix set-up, built once (and shared by forked workers)
        stage(progress, "preparing the engine")
        prepared = engine.prepare(X, device=execution.device)

    with make_progress(progress, n_points, "scoring") as advance:
        if not local:
            from .dask_backend import accumulate_dask

            coverage = np.zeros(n, dtype=np.int64)
            penalty = np.zeros(n, dtype=np.int64)
            accumulate_dask(
                X,
                dims,
                coords,
                coverage,
                penalty,
                client=execution.client,
                n_workers=execution.num_workers,
                engine=execution.engine_name,
                progress=advance,
                **params,
            )
        elif execution.use_multiprocessing:
            coverage, penalty = accumulate_parallel(
                prepared,
                dims,
                coords,
                num_workers=execution.num_workers or default_num_workers(),
                params=params,
                progress=advance,
            )
        else:
            coverage = np.zeros(n, dtype=np.int64)
            penalty = np.zeros(n, dtype=np.int64)
            prepared.accumulate(dims, coords, coverage, penalty, progress=advance, **params)
    return Components(coverage, penalty, init, params["shift"])


def combine_components(coverage, penalty, init, shift, *, rand_init=True):
    """Scores in [0, 1] from :class:`Components` (what :func:`zcore_scores` does).

    ``coverage`` counts the points each sample covered; ``penalty / 2**shift`` is its total
    redundancy penalty; ``init`` is the U(0, 1) initial draw (added when ``rand_init``).
    """
    raw = coverage.astype(np.float64) - np.ldexp(penalty.astype(np.float64), -shift)
    if rand_init:
        raw += init
    return minmax_normalize(raw)


def minmax_normalize(raw):
    """Scale to [0, 1]; a constant input maps to 0.5 (no ranking information)."""
    lo, hi = raw.min(), raw.max()
    if not hi > lo:
        return np.full(raw.shape, 0.5)
    return (raw - lo) / (hi - lo)
