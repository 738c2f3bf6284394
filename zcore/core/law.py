"""The score law: its public helpers (fixed point, powers, weights, distances) and the reference
numpy engine that applies it to drawn points, point by point.

For each point ``p`` with dimensions ``dims[p]`` and coordinates ``coords[p]``:

- distances are L1 over the point's dimensions, computed in float64 from the float32 embeddings,
  summed over the dimensions in their drawn order;
- **coverage**: the sample nearest to the point gets +1 (ties: the smallest index);
- **redundancy**: around that covering sample ``c``, its ``k`` nearest *other* samples by L1 over
  the same dimensions, ordered by ``(distance, index)`` (ties: smaller index first), each get a
  penalty proportional to ``1 / d**redund_exp``, normalised to sum to 1; if the nearest of them is at
  distance 0, only that one gets the full penalty of 1.

Penalties are accumulated in fixed point (integers in units of ``2**-shift``), so the sum does not
depend on the order in which points are processed: any split of the points across workers gives
bit-identical totals. ``shift`` is chosen from the number of points so that no total can overflow;
the rounding error is at most ``2**-(shift+1)`` per penalty (about 5e-13 for up to 1M points).
"""

import math

import numpy as np

#: How many points an engine processes between two progress callbacks.
PROGRESS_EVERY = 256


def fixed_point_shift(n_points):
    """Bits after the binary point for penalty totals of ``n_points`` points (at most 40)."""
    # A sample's total penalty is at most n_points; keep one bit of headroom below int64's 63.
    return int(min(40, 61 - math.ceil(math.log2(n_points + 1))))


#: Largest integral exponent computed by :func:`law_power` with multiplications only.
MAX_INTEGRAL_EXP = 1024


def integral_exponent(exp):
    """``int(exp)`` when ``exp`` is a whole number in ``[0, MAX_INTEGRAL_EXP]``, else ``None``."""
    e = float(exp)
    return int(e) if e.is_integer() and 0 <= e <= MAX_INTEGRAL_EXP else None


def power_by_squaring(x, e):
    """``x ** e`` for a whole ``e >= 1`` by binary exponentiation: squarings of ``x`` from the
    lowest bit of ``e`` up, multiplied into the result in that order. Only ``*`` is used, so it
    serves numpy arrays and torch tensors alike with the same bits; ``e == 1`` returns ``x``."""
    result = None
    base = x
    while True:
        if e & 1:
            result = base if result is None else result * base
        e >>= 1
        if not e:
            return result
        base = base * base


def law_power(x, exp, out=None):
    """``x ** exp`` as the law computes it, elementwise on a float64 array.

    For a whole exponent (the default 4) by binary exponentiation: squarings of ``x`` from the
    lowest bit of ``exp`` up, multiplied into the result in that order. Only IEEE products, so
    every engine (numpy, numba, torch on any device) gets the same bits; for 0, 1 and 2 this is
    what numpy's ``**`` computes too (ones, ``x``, ``x * x``). Other exponents use numpy's ``**``
    (whose SIMD ``pow`` other libraries do not reproduce: the torch engine computes those weights
    with numpy). ``out``, when given, may receive the result (it is returned either way).
    """
    e = integral_exponent(exp)
    if e is None:
        return x**exp if out is None else np.power(x, exp, out=out)
    if e == 0:
        return np.ones_like(x) if out is None else _fill(out, 1.0)
    result = power_by_squaring(x, e)
    if out is None:
        return result if result is not x else x.copy()
    np.copyto(out, result)
    return out


def _fill(out, value):
    out.fill(value)
    return out


def penalty_weights(dist, exp):
    """Normalised penalties ``1/d**exp / sum(1/d**exp)`` for positive distances, overflow-safe.

    Computed as ``(d_min / d)**exp`` (:func:`law_power`) before normalising, which is the same
    quantity without overflowing for tiny distances or large exponents; the sum is numpy's (its
    pairwise summation) over the distances in increasing order.
    """
    w = law_power(dist.min() / dist, exp)
    return w / w.sum()


def to_fixed(weights, shift):
    """Weights as integers in units of ``2**-shift`` (round half to even)."""
    return np.rint(np.ldexp(weights, shift)).astype(np.int64)


def accumulate_numpy(X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
    """Apply the score law to a block of points, point by point, with numpy.

    The straightforward engine: for each point an L1 distance over all N samples for coverage, then
    a partial sort over N for the redundancy neighbours. O(N) per point.

    Parameters
    ----------
    X : ndarray of shape (N, D), float32
    dims : ndarray of shape (P, sample_dim), integer
    coords : ndarray of shape (P, sample_dim), float64
    coverage, penalty : ndarray of shape (N,), int64
        Accumulators, updated in place (``penalty`` in units of ``2**-shift``).
    k : int
        Number of redundancy neighbours, ``1 <= k <= N - 2``.
    exp : float
        Redundancy exponent.
    shift : int
        Fixed-point bits, see :func:`fixed_point_shift`.
    progress : callable, optional
        Called with the number of points processed since the last call.
    """
    n = X.shape[0]
    done = 0
    for p in range(len(dims)):
        cols = X[:, dims[p]].astype(np.float64)
        c = int(np.argmin(l1_distances(cols, coords[p])))
        coverage[c] += 1

        dist = l1_distances(cols, cols[c].copy())
        dist[c] = np.inf
        nn, nd = k_smallest(dist, k, n)
        add_point_penalties(penalty, nn, nd, exp=exp, shift=shift)

        done += 1
        if progress is not None and done == PROGRESS_EVERY:
            progress(done)
            done = 0
    if progress is not None and done:
        progress(done)


def l1_distances(cols, ref):
    """L1 distances of the rows of ``cols`` (float64, shape ``(N, s)``) to ``ref``, as the law
    computes them: float64 absolute differences summed over the dimensions in their drawn order.

    ``ref[j]`` may be a scalar or an array broadcasting against ``cols[:, j]`` (e.g. ``ref =
    coords.T`` gives row ``i``'s distance to its own point ``coords[i]``).
    """
    dist = np.abs(cols[:, 0] - ref[0])
    for j in range(1, cols.shape[1]):
        dist += np.abs(cols[:, j] - ref[j])
    return dist


def add_point_penalties(penalty, nn, nd, *, exp, shift):
    """Add one point's redundancy penalties (fixed point): ``nn``/``nd`` are its ``k`` neighbours
    and their distances ordered by ``(distance, index)``; if the nearest is at distance 0, only it
    gets the whole penalty."""
    if nd[0] == 0.0:
        penalty[nn[0]] += np.int64(1) << shift
    else:
        penalty[nn] += to_fixed(penalty_weights(nd, exp), shift)


def k_smallest(dist, k, n):
    """Indices and distances of the ``k`` smallest by ``(distance, index)``, in that order."""
    if k < n - 1:
        part = np.argpartition(dist, k - 1)[:k]
        t = dist[part].max()
        below = np.flatnonzero(dist < t)
        ties = np.flatnonzero(dist == t)[: k - below.size]
        idx = np.concatenate([below, ties])
    else:
        idx = np.flatnonzero(np.isfinite(dist))
    order = np.lexsort((idx, dist[idx]))
    idx = idx[order]
    return idx, dist[idx]
