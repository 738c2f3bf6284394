"""Public scoring entry point: :func:`zcore_scores`."""

import numpy as np

from .draws import draw_init, draw_points, embedding_stats
from .engine import fixed_point_shift
from .engines import get_engine, resolve_engine_name
from .parallel import accumulate_parallel, default_num_workers
from .progress import make_progress
from .validation import check_embeddings, check_float, check_int, check_seed

#: Cap on the default number of sampling points, as in the paper.
MAX_DEFAULT_POINTS = 1_000_000
#: Default sampling points per sample.
POINTS_PER_SAMPLE = 10


def default_n_samples(n):
    """``min(1_000_000, 10 * n)``: the default number of sampling points for ``n`` samples."""
    return int(min(MAX_DEFAULT_POINTS, POINTS_PER_SAMPLE * n))


def zcore_scores(
    embeddings,
    *,
    n_samples=None,
    sample_dim=2,
    redund_nn=1000,
    redund_exp=4,
    rand_init=True,
    seed=None,
    use_multiprocessing=False,
    num_workers=None,
    progress=False,
    engine="auto",
    device=None,
    backend="local",
    client=None,
):
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
    n_samples : int, default=None
        Number of random points; ``None`` means ``min(1_000_000, 10 * N)``. More points give more
        stable scores (two seeds agree more) at a proportional cost.
    sample_dim : int, default=2
        Dimensions per point. Must not exceed the number of non-constant dimensions.
    redund_nn : int, default=1000
        Neighbours penalised around each covering sample; capped at ``N - 2``.
    redund_exp : float, default=4
        Exponent of the redundancy penalty ``1 / d**redund_exp``; 0 spreads it evenly.
    rand_init : bool, default=True
        Start each score from a U(0, 1) draw (the paper's default). The draw is always taken from
        the generator, so this option changes nothing else.
    seed : int, numpy.random.Generator or None, default=None
        Source of all randomness. The same seed gives the same scores, with or without workers.
    use_multiprocessing : bool, default=False
        Split the points across forked worker processes that share the embeddings in shared
        memory (released even when a worker fails or the run is interrupted).
    num_workers : int, default=None
        Worker processes when ``use_multiprocessing``; ``None`` means one per available CPU.
    progress : bool or callable, default=False
        ``True`` shows a tqdm bar; a callable is called as ``progress(done, total)`` with the
        number of points scored so far.
    engine : {"auto", "numpy", "numba", "torch"}, default="auto"
        How the law is computed; every engine gives bit-identical scores. ``"auto"`` uses the
        compiled ``"numba"`` engine when numba is installed, else ``"numpy"`` (the
        straightforward reference), and ``"torch"`` only when a ``device`` is given.
    device : str, default=None
        Torch device for ``engine="torch"`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    backend : {"local", "dask"}, default="local"
        ``"dask"`` shards the rows of the embeddings across the workers of a Dask cluster
        (:mod:`zcore.core.dask_backend`): for matrices too large for one machine's memory or CPUs.
        Same scores as ``"local"`` for the same seed. Needs ``dask[distributed]``
        (``requirements-dask.txt``), and zcore installed on the workers; ``engine`` is then what
        each shard runs (``"auto"``/``"numba"`` or ``"numpy"``).
    client : distributed.Client or str, default=None
        With ``backend="dask"``: the cluster, or a scheduler address (``"tcp://host:8786"``;
        ``"tls://..."`` connects with the TLS files named by ``ZCORE_DASK_TLS_CA_FILE``,
        ``ZCORE_DASK_TLS_CERT`` and ``ZCORE_DASK_TLS_KEY``, or pass a ``distributed.Client``
        built with a ``Security``). ``None`` starts a ``LocalCluster`` of ``num_workers``
        processes (one per CPU when ``None``) for this call and closes it after. **A Dask
        cluster can run code in this process and receives the embeddings: use only clusters
        you control** (``docs/dask.md``, *Trust*).

    Returns
    -------
    scores : ndarray of shape (N,), float64
        In [0, 1]; **higher = keep**. Meaningful only relative to the other samples of the same
        call. If all raw scores are equal, every score is 0.5.

    Raises
    ------
    ValueError
        For embeddings that are not a finite numeric 2-d array with at least 3 rows, and for
        out-of-range options; the message says what to change.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 16))
    >>> scores = zcore_scores(X, n_samples=500, redund_nn=20, seed=0)
    >>> scores.shape, float(scores.min()), float(scores.max())
    ((200,), 0.0, 1.0)
    """
    coverage, penalty, init, shift = _score_components(
        embeddings,
        n_samples=n_samples,
        sample_dim=sample_dim,
        redund_nn=redund_nn,
        redund_exp=redund_exp,
        seed=seed,
        use_multiprocessing=use_multiprocessing,
        num_workers=num_workers,
        progress=progress,
        engine=engine,
        device=device,
        backend=backend,
        client=client,
    )
    return combine_components(coverage, penalty, init, shift, rand_init=rand_init)


def combine_components(coverage, penalty, init, shift, *, rand_init=True):
    """Scores in [0, 1] from the outputs of ``_score_components`` (what :func:`zcore_scores` does).

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


def _score_components(
    embeddings,
    *,
    n_samples,
    sample_dim,
    redund_nn,
    redund_exp,
    seed,
    use_multiprocessing,
    num_workers,
    progress,
    engine="auto",
    device=None,
    backend="local",
    client=None,
    stage=None,
):
    """Validate, draw and accumulate; returns ``coverage, penalty, init, shift``.

    ``stage(label, fraction)``, when given, reports the set-up before the points are scored
    (checks, per-dimension statistics, the engine's preparation), which takes tens of seconds for
    a million samples.
    """
    if stage is not None:
        stage("checking the embeddings", 0.0)
    X = check_embeddings(embeddings)
    n = X.shape[0]
    n_samples = check_int(n_samples, "n_samples", min_value=1, allow_none=True)
    if n_samples is None:
        n_samples = default_n_samples(n)
    sample_dim = check_int(sample_dim, "sample_dim", min_value=1)
    redund_nn = check_int(redund_nn, "redund_nn", min_value=1)
    redund_exp = check_float(redund_exp, "redund_exp", min_value=0)
    num_workers = check_int(num_workers, "num_workers", min_value=1, allow_none=True)
    rng = check_seed(seed)
    if use_multiprocessing and resolve_engine_name(engine, device=device) == "torch":
        raise ValueError(
            "use_multiprocessing works with the numpy and numba engines; the torch engine runs "
            "in one process (forking after a GPU is initialised is unsafe)"
        )

    backend = _check_backend(backend, engine, device, use_multiprocessing, client)
    if backend == "local":
        if stage is not None:
            stage("loading the engine (compiled on first use)", 0.0)
        accumulate = get_engine(engine, device=device)

    stats = embedding_stats(
        X, progress=None if stage is None else lambda d, t: stage("dimension statistics", d / t)
    )
    n_valid = len(stats.valid_dims)
    if n_valid < sample_dim:
        raise ValueError(
            f"embeddings have {n_valid} non-constant dimension(s) out of {X.shape[1]}, fewer than "
            f"sample_dim={sample_dim}; lower sample_dim or check the embeddings (constant "
            "dimensions are never sampled)"
        )

    init = draw_init(rng, n)
    dims, coords = draw_points(rng, stats, n_samples, sample_dim)
    params = {"k": min(redund_nn, n - 2), "exp": redund_exp, "shift": fixed_point_shift(n_samples)}

    if backend == "local":
        prepare = getattr(accumulate, "prepare", None)
        if prepare is not None:  # per-matrix set-up, built once (and shared by forked workers)
            if stage is not None:
                stage("preparing the engine", 0.0)
            accumulate = prepare(X)

    with make_progress(progress, n_samples, desc="zcore") as report:
        if backend == "dask":
            from .dask_backend import accumulate_dask

            coverage = np.zeros(n, dtype=np.int64)
            penalty = np.zeros(n, dtype=np.int64)
            accumulate_dask(
                X,
                dims,
                coords,
                coverage,
                penalty,
                client=client,
                n_workers=num_workers,
                engine=resolve_engine_name(engine),
                progress=report,
                **params,
            )
        elif use_multiprocessing:
            workers = num_workers or default_num_workers()
            coverage, penalty = accumulate_parallel(
                accumulate,
                X,
                dims,
                coords,
                num_workers=workers,
                params=params,
                progress=report,
            )
        else:
            coverage = np.zeros(n, dtype=np.int64)
            penalty = np.zeros(n, dtype=np.int64)
            accumulate(X, dims, coords, coverage, penalty, progress=report, **params)
    return coverage, penalty, init, params["shift"]


#: Values of ``backend`` accepted by :func:`zcore_scores`.
BACKENDS = ("local", "dask")


def _check_backend(backend, engine, device, use_multiprocessing, client):
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: 'local', 'dask'")
    backend = backend.lower()
    if backend == "local":
        if client is not None:
            raise ValueError("client is used only with backend='dask'; pass backend='dask'")
        return backend
    if use_multiprocessing:
        raise ValueError(
            "backend='dask' runs on the cluster's workers; leave use_multiprocessing off (use "
            "num_workers for the size of the LocalCluster, or pass a client)"
        )
    if device is not None or resolve_engine_name(engine) == "torch":
        raise ValueError("backend='dask' runs the numba or numpy engine on each shard, not torch")
    from .dask_access import check_client
    from .dask_backend import require_dask

    require_dask()
    check_client(client)  # type, and TLS settings of a tls:// address, before any work
    return backend
