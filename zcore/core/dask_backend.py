"""Scoring on a Dask cluster: the rows of ``X`` sharded across workers, the law merged here.

The same law as :mod:`zcore.core.law`, with the same draws, and the same ``coverage`` and
``penalty`` integers as the in-process engines (tested on a ``LocalCluster``). Each worker holds a
contiguous block of rows (a *shard*, kept by a Dask actor with its prepared compiled engine), so no
machine needs the whole matrix but the driver, which only slices it (a ``numpy.memmap`` works:
shards are read from disk one at a time).

For each batch of drawn points:

1. every shard returns, per point, its local nearest sample: distance, global index and that
   sample's coordinates along the point's dimensions (the same float64 operations as the numpy
   engine, so distances compare exactly across shards);
2. the driver keeps, per point, the smallest ``(distance, index)`` (shards are in row order, so
   the first minimum is the lowest index among ties): the covering sample, whose coordinates are
   the center of the redundancy search;
3. every shard finds, per point, a superset of its local ``k`` nearest samples to that center
   (without the covering sample itself), keeps it, and returns only its distances at
   :data:`QUANTILES` ranks (``k/64, 2k/64, ..., k``);
4. from those the driver takes ``T``, the smallest distance with at least ``k`` samples within it
   over all shards (:func:`global_bound`): an upper bound of the global ``k``-th distance; every
   shard then returns only its candidates within ``T``, so about ``k (1 + shards / 64)``
   candidates per point reach the driver in all, instead of ``shards x k``;
5. the driver merges them: the global ``k`` best by ``(distance, index)`` are all within ``T``,
   and the penalties are computed from the union exactly as the compiled engine does for its own
   candidate lists (same routine).

The next batch's step 1 is queued before the driver merges, so the shards keep working meanwhile.
Each shard holds ``k + 64`` candidates per point of a batch between steps 3 and 4, which sizes the
batches (:data:`BATCH_BYTES`).
"""

import time

import numpy as np

from .law import add_point_penalties, k_smallest, l1_distances

#: Bytes of candidate lists held per batch (by each shard, and by the driver).
BATCH_BYTES = 256 << 20
#: Extra candidates each shard may return beyond its ``k`` best (the compiled engine's slack).
_EXTRA = 64

INSTALL_HINT = (
    "backend='dask' needs dask.distributed: pip install -r requirements-dask.txt "
    "(or pip install 'dask[distributed]')"
)


def require_dask():
    """Import ``distributed``, or raise an ImportError that says what to install."""
    try:
        import distributed
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return distributed


class Shard:
    """Rows ``[offset, offset + n)`` of the embeddings, held on one worker (a Dask actor).

    ``engine`` is ``"numba"`` (prepared once, every dimension sorted once and kept: 13 bytes per
    value in all with the shard itself) or ``"numpy"`` (plain passes, nothing extra).
    """

    def __init__(self, X, offset, engine):
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.offset = int(offset)
        self.engine = engine
        self.prepared = None
        self.busy_s = 0.0
        if engine == "numba":
            from . import engine_numba
            from .engines import ENGINES

            ENGINES["numba"].load()
            self.prepared = engine_numba.Prepared(self.X)  # windowed: shards use its searches
            self.prepared.keep_sorted(self.X)

    def size(self):
        return self.X.shape[0]

    def busy(self):
        """Seconds spent computing in :meth:`nearest` and :meth:`neighbours`."""
        return self.busy_s

    def nearest(self, dims, coords):
        """Per point: local nearest distance, its global index, its coordinates on the dims."""
        t0 = time.perf_counter()
        dims = np.ascontiguousarray(dims, dtype=np.int64)
        coords = np.ascontiguousarray(coords, dtype=np.float64)
        if self.prepared is not None:
            local = self.prepared.nearest(self.X, dims, coords)
        else:
            local = _nearest_numpy(self.X, dims, coords)
        vals = self.X[local[:, None], dims].astype(np.float64)
        dist = l1_distances(vals, coords.T)  # row p: the winner's distance to point p
        self.busy_s += time.perf_counter() - t0
        return dist, local + self.offset, vals

    def neighbours(self, dims, centers, exclude, k):
        """Find, per center, a superset of the local ``k`` best ``(distance, global index)``
        without the global sample ``exclude[p]``, keep them for :meth:`within`, and return the
        local distances at ranks :func:`quantile_ranks` ``(k)`` (``inf`` past the candidates), of
        shape ``(P, ranks)``."""
        t0 = time.perf_counter()
        dims = np.ascontiguousarray(dims, dtype=np.int64)
        centers = np.ascontiguousarray(centers, dtype=np.float64)
        n = self.X.shape[0]
        local_ex = np.asarray(exclude, dtype=np.int64) - self.offset
        local_ex[(local_ex < 0) | (local_ex >= n)] = -1
        k_local = int(min(k, n))
        width = k_local + _EXTRA
        out_d = np.full((len(dims), width), np.inf)
        out_i = np.full((len(dims), width), -1, dtype=np.int64)
        if self.prepared is not None:

            def take(sel, d, i):
                out_d[sel] = d
                out_i[sel] = np.where(i >= 0, i + self.offset, -1)

            self.prepared.neighbours(self.X, dims, centers, local_ex, k_local, take)
        else:
            for p in range(len(dims)):
                dist = l1_distances(self.X[:, dims[p]].astype(np.float64), centers[p])
                if local_ex[p] >= 0:
                    dist[local_ex[p]] = np.inf
                available = n - (local_ex[p] >= 0)
                if available == 0:
                    continue
                idx, d = k_smallest(dist, min(k_local, available), n)
                out_d[p, : idx.size] = d
                out_i[p, : idx.size] = idx + self.offset
        # the local distances at ranks RANKS(k): the driver bounds the global k-th from them
        ranks = quantile_ranks(k)
        at = np.full((len(dims), ranks.size), np.inf)  # inf: fewer candidates than the rank
        usable = ranks[ranks <= width]
        if usable.size:
            at[:, : usable.size] = np.partition(out_d, usable - 1, axis=1)[:, usable - 1]
        self._candidates = (out_d, out_i)
        self.busy_s += time.perf_counter() - t0
        return at

    def within(self, bound):
        """The candidates of the last :meth:`neighbours` call at distance <= ``bound[p]``, as
        ``(counts per center, distances, global indices)`` (flat, center by center)."""
        t0 = time.perf_counter()
        out_d, out_i = self._candidates
        self._candidates = None
        keep = (out_d <= np.asarray(bound)[:, None]) & (out_i >= 0)
        out = keep.sum(axis=1), out_d[keep], out_i[keep]
        self.busy_s += time.perf_counter() - t0
        return out


def _nearest_numpy(X, dims, coords):
    return np.array(
        [
            int(np.argmin(l1_distances(X[:, dp].astype(np.float64), q)))
            for dp, q in zip(dims, coords)
        ]
    )


#: Ranks per center that each shard reports to bound the global ``k``-th distance.
QUANTILES = 64


def quantile_ranks(k):
    """1-based ranks ``ceil(k * j / QUANTILES)``, ``j = 1..QUANTILES`` (distinct, last = ``k``)."""
    return np.unique(-(-k * np.arange(1, QUANTILES + 1) // QUANTILES)).astype(np.int64)


def global_bound(quantiles, k):
    """Per center, the smallest reported distance ``T`` with at least ``k`` samples within it
    over all shards: an upper bound of the global ``k``-th distance (``inf`` if none).

    ``quantiles`` has shape ``(shards, P, ranks)``: shard ``s`` has at least ``ranks[j]``
    candidates at distance ``<= quantiles[s, p, j]``. Sweeping the reported values upward, each
    one raises its shard's guaranteed count from the previous rank to its own.
    """
    ranks = quantile_ranks(k)
    shards, n_points, m = quantiles.shape
    step = np.diff(np.concatenate([[0], ranks]))
    values = quantiles.transpose(1, 0, 2).reshape(n_points, shards * m)
    gains = np.broadcast_to(np.tile(step, shards), values.shape)
    order = np.argsort(values, axis=1, kind="stable")
    total = np.cumsum(np.take_along_axis(gains, order, axis=1), axis=1)
    reached = total >= k
    first = np.argmax(reached, axis=1)
    bound = np.take_along_axis(values, order, axis=1)[np.arange(n_points), first]
    return np.where(reached.any(axis=1), bound, np.inf)


def _shard_class():
    """The :class:`Shard` class as the workers import it: from the installed ``zcore`` package.

    The FiftyOne App loads this plugin under another module name (its plugins directory), which
    workers cannot import; ``zcore`` itself must be installed on them (``pip install <plugin>``).
    """
    try:
        from zcore.core.dask_backend import Shard as installed
    except ImportError:
        return Shard
    return installed


def shard_bounds(n, n_shards):
    """Row boundaries of ``n_shards`` contiguous, near-equal shards of ``n`` rows."""
    return [(i * n) // n_shards for i in range(n_shards + 1)]


def accumulate_dask(
    X,
    dims,
    coords,
    coverage,
    penalty,
    *,
    k,
    exp,
    shift,
    client=None,
    n_shards=None,
    n_workers=None,
    engine="numba",
    batch_points=None,
    progress=None,
    stats=None,
):
    """Apply the score law on a Dask cluster; same contract and results as the in-process engines.

    Parameters
    ----------
    X, dims, coords, coverage, penalty, k, exp, shift, progress
        As for :func:`zcore.core.law.accumulate_numpy` (``X`` may be a ``numpy.memmap``).
    client : distributed.Client or str, default=None
        The cluster. A string is a scheduler address (``"tcp://host:8786"``; a ``tls://`` one
        connects with the credentials of :func:`zcore.core.dask_access.security_from_env`).
        ``None`` starts a ``LocalCluster`` of ``n_workers`` single-threaded worker processes for
        this call. The cluster can run code in this process and receives ``X``: use only
        clusters you control (:mod:`zcore.core.dask_access`).
    n_shards : int, default=None
        Row shards; ``None`` means one per worker. Shard ``i`` goes to worker ``i % workers``.
    n_workers : int, default=None
        Workers of the ``LocalCluster`` started when ``client`` is None (``None``: one per CPU).
    engine : {"numba", "numpy"}, default="numba"
        What each shard runs. The workers need zcore (and numba for ``"numba"``) installed.
    batch_points : int, default=None
        Points per round trip; ``None`` sizes batches to :data:`BATCH_BYTES` of candidates.
    stats : dict, optional
        Filled with where the time went: ``cluster_s`` (starting a LocalCluster), ``setup_s``
        (sending the shards, preparing them), ``shard_busy_s`` (per shard, computing),
        ``merge_s`` (the driver merging), ``wait_s`` (the driver waiting for shards),
        ``batches``, ``batch_points``, ``shards``, ``candidates_per_point`` (neighbour
        candidates sent to the driver per point, all shards together; ``k`` at best).
    """
    distributed = require_dask()
    stats = {} if stats is None else stats
    cluster = None
    own_client = False
    futures = []  # held until the end: a released actor future deletes its actor
    t0 = time.perf_counter()
    if client is None:
        cluster = distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        )
        client = distributed.Client(cluster)
        own_client = True
    elif isinstance(client, str):
        from .dask_access import connect

        client = connect(client)  # over TLS for tls:// addresses (dask_access)
        own_client = True
    stats["cluster_s"] = time.perf_counter() - t0
    try:
        if len(dims) == 0:
            return
        # actor proxies bind to the *current* client: make it this one (another client may be
        # the process default, e.g. the user's or a test's)
        with client.as_current():
            actors, bounds = _start_shards(client, X, n_shards, engine, futures, stats)
            _score(
                actors,
                bounds,
                dims,
                coords,
                coverage,
                penalty,
                k,
                exp,
                shift,
                batch_points,
                progress,
                stats,
            )
            stats["shard_busy_s"] = [a.busy().result() for a in actors]
    finally:
        if futures and not own_client:
            client.cancel(futures)  # the shards leave the workers of a shared cluster
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


def _start_shards(client, X, n_shards, engine, futures, stats):
    """Send the row shards to the workers (one at a time) and build a :class:`Shard` on each."""
    t0 = time.perf_counter()
    n = X.shape[0]
    shard_class = _shard_class()
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise ValueError("the Dask cluster has no workers; start some, or pass client=None")
    shards = int(min(n_shards or len(workers), n))
    bounds = shard_bounds(n, shards)
    for i in range(shards):
        where = [workers[i % len(workers)]]
        part = np.ascontiguousarray(X[bounds[i] : bounds[i + 1]], dtype=np.float32)
        data = client.scatter(part, workers=where)
        del part
        futures.append(
            client.submit(shard_class, data, bounds[i], engine, workers=where, actor=True)
        )
    actors = [f.result() for f in futures]
    stats["setup_s"] = time.perf_counter() - t0
    stats["shards"] = shards
    return actors, bounds


def _score(
    actors, bounds, dims, coords, coverage, penalty, k, exp, shift, batch_points, progress, stats
):
    """The batches of points: nearest on every shard, pick, neighbours on every shard, merge."""
    n = bounds[-1]
    n_points = len(dims)
    if batch_points is None:
        # each shard holds (k + 64) candidates per point between two calls; the driver about k
        batch_points = max(256, BATCH_BYTES // (16 * 2 * (k + _EXTRA)))
    merge = _Merger(k, exp, shift)
    sample_dim = dims.shape[1]
    n_ranks = quantile_ranks(k).size
    starts = list(range(0, n_points, batch_points))
    wait = merge_s = 0.0
    candidates = 0

    def ask_nearest(b0):
        b1 = min(b0 + batch_points, n_points)
        return [a.nearest(dims[b0:b1], coords[b0:b1]) for a in actors]

    pending = ask_nearest(starts[0])
    for s, b0 in enumerate(starts):
        b1 = min(b0 + batch_points, n_points)
        t = time.perf_counter()
        local = [
            _nearest_answer(f.result(), bounds, j, b1 - b0, sample_dim)
            for j, f in enumerate(pending)
        ]
        wait += time.perf_counter() - t
        dist = np.stack([r[0] for r in local])
        # shards are in row order: the first minimum is the lowest global index among ties
        best = np.argmin(dist, axis=0)
        cols = np.arange(b1 - b0)
        winners = np.stack([r[1] for r in local])[best, cols]
        centers = np.stack([r[2] for r in local])[best, cols]
        coverage += np.bincount(winners, minlength=n).astype(np.int64)
        asked = [a.neighbours(dims[b0:b1], centers, winners, k) for a in actors]
        if s + 1 < len(starts):
            pending = ask_nearest(starts[s + 1])  # queued: shards work while we merge
        t = time.perf_counter()
        quantiles = [
            _quantiles_answer(f.result(), j, b1 - b0, n_ranks) for j, f in enumerate(asked)
        ]
        bound = global_bound(np.stack(quantiles), k)
        found = [
            _within_answer(f.result(), bounds, j, b1 - b0)
            for j, f in enumerate([a.within(bound) for a in actors])
        ]
        t2 = time.perf_counter()
        wait += t2 - t
        candidates += sum(int(c.sum()) for c, _, _ in found)
        dist, idx = _assemble(found, b1 - b0, k)
        merge(dist, idx, penalty)
        merge_s += time.perf_counter() - t2
        if progress is not None:
            progress(b1 - b0)
    stats.update(
        wait_s=wait,
        merge_s=merge_s,
        batches=len(starts),
        batch_points=batch_points,
        candidates_per_point=candidates / n_points,
    )


# --- what comes back from the shards --------------------------------------------------------
# The answers are checked to be plain numpy arrays of the expected dtypes, shapes and index
# ranges before they are used: a worker running another zcore version, or a cluster that is not
# what it claims, then fails with a message instead of wrong scores or an obscure error. This is
# no defence against a hostile cluster: its answers are unpickled (which can run code) before
# any check, so the real defence is to connect only to clusters you control (dask_access).


_F8, _I8 = np.dtype(np.float64), np.dtype(np.int64)


def _bad_answer(method, shard, got):
    return ValueError(
        f"a Dask worker answered Shard.{method} for shard {shard} with {got}: the workers run "
        "another zcore version than this process (install the same one on every worker), or the "
        "cluster is not one you control (see docs/dask.md, 'Trust')"
    )


def _arrays(answer, method, shard, specs):
    """``answer`` as a tuple of plain arrays matching ``specs`` = ``(dtype, shape)`` (``None``
    in a shape: any length). The dtypes are exact: float32 distances, say, would change ties."""
    parts = answer if type(answer) is tuple else (answer,)
    if len(parts) != len(specs) or any(type(a) is not np.ndarray for a in parts):
        names = ", ".join(type(a).__name__ for a in parts)
        raise _bad_answer(method, shard, f"({names}), not {len(specs)} numpy array(s)")
    for a, (dtype, shape) in zip(parts, specs):
        if (
            a.dtype != dtype
            or a.ndim != len(shape)
            or any(want is not None and got != want for got, want in zip(a.shape, shape))
        ):
            raise _bad_answer(method, shard, f"an array of dtype {a.dtype} and shape {a.shape}")
        if a.dtype.kind == "f" and np.isnan(a).any():
            raise _bad_answer(method, shard, "NaN values")
    return parts


def _in_shard(idx, bounds, method, shard):
    if idx.size and (idx.min() < bounds[shard] or idx.max() >= bounds[shard + 1]):
        raise _bad_answer(method, shard, "sample indices outside its rows")


def _nearest_answer(answer, bounds, shard, rows, sample_dim):
    dist, idx, vals = _arrays(
        answer, "nearest", shard, [(_F8, (rows,)), (_I8, (rows,)), (_F8, (rows, sample_dim))]
    )
    _in_shard(idx, bounds, "nearest", shard)
    return dist, idx, vals


def _quantiles_answer(answer, shard, rows, n_ranks):
    return _arrays(answer, "neighbours", shard, [(_F8, (rows, n_ranks))])[0]


def _within_answer(answer, bounds, shard, rows):
    counts, d, i = _arrays(
        answer, "within", shard, [(_I8, (rows,)), (_F8, (None,)), (_I8, (None,))]
    )
    if (counts < 0).any() or int(counts.sum()) != d.size or d.size != i.size:
        raise _bad_answer("within", shard, "counts that do not match its candidates")
    _in_shard(i, bounds, "within", shard)
    return counts, d, i


def _assemble(found, rows, k):
    """``(dist, idx)`` of shape ``(rows, width)`` from each shard's flat ``(counts, d, i)``,
    padded with ``inf``/``-1``."""
    counts = np.stack([c for c, _, _ in found])
    width = max(int(counts.sum(axis=0).max()), k)
    dist = np.full((rows, width), np.inf)
    idx = np.full((rows, width), -1, dtype=np.int64)
    fill = np.zeros(rows, dtype=np.int64)
    for c, d, i in found:
        row = np.repeat(np.arange(rows), c)
        first = np.cumsum(c) - c  # where each row's run starts in the flat arrays
        col = np.arange(len(d)) - first[row] + fill[row]
        dist[row, col] = d
        idx[row, col] = i
        fill += c
    return dist, idx


class _Merger:
    """Adds the penalties of merged candidate lists: the compiled engine's exact routine when
    numba is here, else the numpy reference's, row by row."""

    def __init__(self, k, exp, shift):
        from . import kernels

        self.k, self.exp, self.shift = k, exp, shift
        self.one = np.int64(1) << shift
        self.numba = kernels.AVAILABLE

    def __call__(self, dist, idx, penalty):
        if self.numba:
            from .kernels import Workspace, apply_penalties

            workspace = Workspace(dist.shape[0], dist.shape[1], self.k)
            apply_penalties(dist, idx, penalty, self.k, self.exp, self.shift, self.one, workspace)
            return
        for r in range(dist.shape[0]):
            keep = np.flatnonzero(idx[r] >= 0)
            order = np.lexsort((idx[r, keep], dist[r, keep]))[: self.k]
            nn, nd = idx[r, keep[order]], dist[r, keep[order]]
            add_point_penalties(penalty, nn, nd, exp=self.exp, shift=self.shift)
