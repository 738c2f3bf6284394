"""The random draws of ZCore, defined once.

Every engine (numpy, compiled, workers, torch) consumes exactly these draws, produced in this order
from one ``numpy.random.Generator``:

1. ``init = rng.random(N)``: the U(0, 1) start of every score (always drawn, so that ``rand_init``
   changes only the start, never the points);
2. the sampling points, in chunks of :data:`DRAW_CHUNK` points; for each chunk of ``B`` points:

   a. ``sample_dim`` distinct feature dimensions per point, drawn without replacement among the
      *informative* dimensions (those whose max > min over the collection): draw ``j`` is
      ``rng.integers(0, n_valid - j, size=B)``, mapped past the dimensions already chosen for that
      point (ascending order), which gives a uniform choice without replacement;
   b. one coordinate per chosen dimension from ``rng.triangular(min, median, max)`` of that
      dimension, drawn for the ``(B, sample_dim)`` array in C order.

Constant dimensions are never sampled: they carry no information, and a triangular law with
``left == right`` is undefined (numpy raises ``ValueError: left == right``).
"""

from dataclasses import dataclass

import numpy as np

#: Number of points drawn per chunk; part of the law (changing it changes the draws for a seed).
DRAW_CHUNK = 8192

#: Columns per block when computing medians, to bound the float64 copy.
_STATS_BLOCK = 16


@dataclass(frozen=True)
class EmbeddingStats:
    """Per-dimension statistics that parameterise the triangular draws.

    Attributes
    ----------
    low, mode, high : ndarray of shape (D,), float64
        Minimum, median and maximum of each feature over the collection.
    valid_dims : ndarray of shape (D_valid,), int64
        The dimensions with ``high > low``; only these are ever sampled.
    """

    low: np.ndarray
    mode: np.ndarray
    high: np.ndarray
    valid_dims: np.ndarray


def embedding_stats(X, progress=None):
    """Compute :class:`EmbeddingStats` of a validated ``(N, D)`` float32 matrix.

    ``progress(done, total, "dimension statistics")`` (:mod:`zcore.core.progress`), when given, is
    called after each block of dimensions (the medians take about 50 ms per dimension per million
    samples).
    """
    low = np.empty(X.shape[1], dtype=np.float64)
    high = np.empty(X.shape[1], dtype=np.float64)
    mode = np.empty(X.shape[1], dtype=np.float64)
    for start in range(0, X.shape[1], _STATS_BLOCK):
        block = X[:, start : start + _STATS_BLOCK].astype(np.float64)  # exact copies
        cols = slice(start, start + block.shape[1])
        low[cols] = block.min(axis=0)
        high[cols] = block.max(axis=0)
        mode[cols] = np.median(block, axis=0)
        if progress is not None:
            progress(start + block.shape[1], X.shape[1], "dimension statistics")
    valid = np.flatnonzero(high > low)
    return EmbeddingStats(low=low, mode=mode, high=high, valid_dims=valid)


def draw_init(rng, n):
    """The U(0, 1) starting scores; always the first draw from the generator."""
    return rng.random(n)


def draw_points(rng, stats, n_points, sample_dim):
    """Draw all sampling points.

    Parameters
    ----------
    rng : numpy.random.Generator
    stats : EmbeddingStats
    n_points : int
    sample_dim : int
        Must not exceed ``len(stats.valid_dims)`` (checked by the caller).

    Returns
    -------
    dims : ndarray of shape (n_points, sample_dim), int32
        Feature indices of each point (distinct within a row).
    coords : ndarray of shape (n_points, sample_dim), float64
        The point's coordinate along each of its dimensions.
    """
    dims = np.empty((n_points, sample_dim), dtype=np.int32)
    coords = np.empty((n_points, sample_dim), dtype=np.float64)
    n_valid = len(stats.valid_dims)
    for start in range(0, n_points, DRAW_CHUNK):
        b = min(DRAW_CHUNK, n_points - start)
        idx = _choose_distinct(rng, n_valid, sample_dim, b)
        d = stats.valid_dims[idx]
        dims[start : start + b] = d
        coords[start : start + b] = rng.triangular(stats.low[d], stats.mode[d], stats.high[d])
    return dims, coords


def _choose_distinct(rng, n, k, b):
    """``b`` rows of ``k`` distinct integers in ``[0, n)``, uniformly without replacement."""
    idx = np.empty((b, k), dtype=np.int64)
    for j in range(k):
        r = rng.integers(0, n - j, size=b)
        if j:
            chosen = np.sort(idx[:, :j], axis=1)
            for t in range(j):
                r += r >= chosen[:, t]
        idx[:, j] = r
    return idx
