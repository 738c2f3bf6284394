"""Dense scan kernel of the compiled engine: for small collections, every sample, vectorised.

Same contract and same integers as :func:`zcore.core.law.accumulate_numpy`. The windowed kernel
of :mod:`zcore.core.engine_numba` visits only a strip of the samples but pays a few nanoseconds of
bookkeeping per visited sample; when ``N`` is small, ``redund_nn`` is a large fraction of it and the
strip holds most of the samples anyway, so a plain pass over all ``N`` samples that the compiler
vectorises (a fraction of a nanosecond per sample) is cheaper. :func:`zcore.core.engine_numba.prepare`
picks this kernel when ``N <= NumbaKnobs.dense_max_n`` (a crossover measured with ``benchmarks/bench_scoring.py``).

Per point, over a column-major copy of ``X`` (``4 N D`` bytes, one column per dimension):

- **coverage**: the float64 L1 distances of all samples to the point (same operations, same order
  as numpy), then the lowest index at their minimum;
- **redundancy**: the distances of all samples to the covering sample ``c`` (``c`` itself set to
  ``inf``); an admission threshold from a strided subsample (a rank a little above the expected
  rank of the ``k``-th), every sample at most at it kept (retried with a higher rank, at worst
  all samples, if fewer than ``k`` were), and the exact ``k`` best by ``(distance, index)`` picked
  among them. The threshold changes the time only: a sample above it is farther than ``k`` others.

The candidates of a batch of points (``NumbaKnobs.dense_batch_elements``, small enough to stay in
cache) go to :func:`~zcore.core.kernels.apply_penalties`: numpy sorts them and takes the pairwise
sum over the ``k`` best sorted ascending, as :func:`~zcore.core.law.penalty_weights` does; for a
whole exponent the weights themselves are the products of :func:`~zcore.core.law.law_power`,
computed in the compiled loop that adds the fixed-point penalties (the float64 operations of
:func:`~zcore.core.law.to_fixed`); other exponents use numpy's ``**``.

Memory: the column-major copy of ``X``, two ``N``-long buffers, and ``batch x k`` distances and
indices (``16 x NumbaKnobs.dense_batch_elements`` bytes), plus numpy temporaries of the same size.
"""

import numpy as np

from .kernels import Workspace, apply_penalties, compact, gather, jit

#: Samples per block of the coverage minimum.
_BLOCK = 256


@jit
def _distances(cols, dp, q, out):
    """``out[i] = sum_j |cols[dp[j], i] - q[j]|`` in float64, in the drawn order of ``dp``."""
    n = out.shape[0]
    s = dp.shape[0]
    a = cols[dp[0]]
    q0 = q[0]
    if s == 2:
        b = cols[dp[1]]
        q1 = q[1]
        for i in range(n):
            out[i] = abs(np.float64(a[i]) - q0) + abs(np.float64(b[i]) - q1)
        return
    for i in range(n):
        out[i] = abs(np.float64(a[i]) - q0)
    for j in range(1, s):
        col = cols[dp[j]]
        qj = q[j]
        for i in range(n):
            out[i] += abs(np.float64(col[i]) - qj)


@jit
def _block_min(dist, i0, i1):
    """Minimum of ``dist[i0:i1]`` with eight independent running minima (a minimum is the same
    value in any order: no chain of dependent comparisons)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = dist[i0]
    i = i0
    while i + 8 <= i1:
        v0, v1, v2, v3 = dist[i], dist[i + 1], dist[i + 2], dist[i + 3]
        v4, v5, v6, v7 = dist[i + 4], dist[i + 5], dist[i + 6], dist[i + 7]
        m0 = v0 if v0 < m0 else m0
        m1 = v1 if v1 < m1 else m1
        m2 = v2 if v2 < m2 else m2
        m3 = v3 if v3 < m3 else m3
        m4 = v4 if v4 < m4 else m4
        m5 = v5 if v5 < m5 else m5
        m6 = v6 if v6 < m6 else m6
        m7 = v7 if v7 < m7 else m7
        i += 8
    for j in range(i, i1):
        v = dist[j]
        m0 = v if v < m0 else m0
    m0 = m1 if m1 < m0 else m0
    m2 = m3 if m3 < m2 else m2
    m4 = m5 if m5 < m4 else m4
    m6 = m7 if m7 < m6 else m6
    m0 = m2 if m2 < m0 else m0
    m4 = m6 if m6 < m4 else m4
    return m4 if m4 < m0 else m0


@jit
def _argmin(dist):
    """Lowest index at the minimum of ``dist`` (non-negative float64 distances, no NaN): the
    minimum of each block of ``_BLOCK``, then the first
    index at it in the first block holding it."""
    n = dist.shape[0]
    best = dist[0]
    first = 0
    for i0 in range(0, n, _BLOCK):
        m = _block_min(dist, i0, min(i0 + _BLOCK, n))
        if m < best:
            best = m
            first = i0
    for i in range(first, n):
        if dist[i] == best:
            return i
    return first


@jit
def _count_at_most(bits, t):
    c = 0
    for i in range(bits.shape[0]):
        c += bits[i] <= t
    return c


@jit
def _threshold(bits, k, width, guess, s, max_counts, scratch):
    """An int64 threshold ``t`` with ``k <= #{bits <= t} <= width``, searched by counting passes
    inside a shrinking bracket: the first step as if the count grew as ``t**s`` (the volume of an
    L1 ball), then interpolating ``log t`` against ``log count`` between the bracket's ends, and
    bisecting the bit patterns when that would not shrink the bracket. Returns ``(t, count)``,
    with a count above ``width`` only when ties (or ``max_counts``) defeat the search.
    ``scratch``: one float64, to reinterpret bit patterns."""
    as_int = scratch.view(np.int64)
    lo = np.int64(-1)  # count(lo) < k
    hi = np.int64(0x7FF0000000000000)  # the bits of +inf: count(hi) >= k
    c_lo = 0
    c_hi = bits.shape[0]
    target = np.log(0.5 * (k + width))
    t = guess
    side = 0  # which end moved last (+1 hi, -1 lo): twice the same end, bisect instead
    stuck = False
    for _ in range(max_counts):
        if not lo < t < hi:
            t = lo + (hi - lo) // 2
        c = _count_at_most(bits, t)
        if c < k:
            lo = t
            c_lo = c
            stuck = side == -1
            side = -1
        else:
            hi = t
            c_hi = c
            if c <= width:
                return t, c
            stuck = side == 1
            side = 1
        if hi - lo <= 1:
            break
        as_int[0] = t
        tf = scratch[0]
        bracketed = c_lo > 0 and lo >= 0 and hi < np.int64(0x7FF0000000000000)
        if bracketed and stuck:  # interpolation not shrinking the bracket: bisect
            t = lo + (hi - lo) // 2
            side = 0
        elif bracketed:
            as_int[0] = lo
            llo = np.log(scratch[0])
            as_int[0] = hi
            lhi = np.log(scratch[0])
            f = (target - np.log(c_lo)) / (np.log(c_hi) - np.log(c_lo))
            scratch[0] = np.exp(llo + f * (lhi - llo))
            t = as_int[0]
        elif c > 0 and tf > 0.0:
            scratch[0] = tf * np.exp((target - np.log(c)) / s)
            t = as_int[0]
        elif tf > 0.0:  # nothing within t: four times farther
            scratch[0] = 4.0 * tf
            t = as_int[0]
        else:  # a typical distance: the smallest finite one of three samples
            t = hi
            for i in (0, bits.shape[0] // 2, bits.shape[0] - 1):
                if lo < bits[i] < t:
                    t = bits[i]
        if t <= lo or t >= hi:
            t = lo + (hi - lo) // 2
    return hi, c_hi


@jit
def _dense_kernel(
    cols, dims, coords, k, width, max_counts, out_c, out_d, out_i, dist, bd, bi, sd, si
):
    """Coverage winner (``out_c``) of each point, and in row ``p`` of ``out_d``/``out_i`` a
    superset (at most ``width``, padded with ``inf``/``-1``, in any order) of the ``k`` best other
    samples of it by ``(distance, index)``."""
    n = dist.shape[0]
    n_points, s = dims.shape
    bits = dist.view(np.int64)
    center = np.empty(s)
    scratch = np.empty(1)
    guess = np.int64(-1)
    for p in range(n_points):
        dp = dims[p]
        _distances(cols, dp, coords[p], dist)
        c = _argmin(dist)
        out_c[p] = c
        for j in range(s):
            center[j] = np.float64(cols[dp[j], c])
        _distances(cols, dp, center, dist)
        dist[c] = np.inf
        row_d = out_d[p]
        row_i = out_i[p]
        row_d[:] = np.inf
        row_i[:] = -1
        if k >= n - 1:  # every other sample
            w = 0
            for i in range(n):
                if i != c:
                    row_d[w] = dist[i]
                    row_i[w] = i
                    w += 1
            continue
        t, count = _threshold(bits, k, width, guess, s, max_counts, scratch)
        guess = t
        if count <= width:
            w = 0
            for i in range(n):  # branch-free: bi has room for all n
                bi[w] = i
                w += bits[i] <= t
            for j in range(w):
                row_i[j] = bi[j]
                row_d[j] = dist[bi[j]]
        else:  # ties (or the search) overflow the width: the exact k best among them
            size = 0
            for i in range(n):
                if bits[i] <= t:
                    bd[size] = dist[i]
                    bi[size] = i
                    size += 1
            size, _ = compact(bd, bi, size, k, sd, si)
            for j in range(size):
                row_d[j] = bd[j]
                row_i[j] = bi[j]


def columns_of(X):
    """Column-major float32 copy of ``X`` (one contiguous row per dimension)."""
    n, n_dims = X.shape
    cols = np.empty((n_dims, n), np.float32)
    gather(X, np.arange(n_dims), cols, 0)
    return cols


class DensePrepared:
    """Per-matrix data of the dense kernel (the column-major copy of ``X``); calling it applies
    the law like :func:`zcore.core.law.accumulate_numpy`, for the same ``X``."""

    def __init__(self, X, knobs=None):
        from .engine_numba import DEFAULT_KNOBS

        self.knobs = DEFAULT_KNOBS if knobs is None else knobs
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.shape = X.shape
        self.columns = columns_of(X)

    def __call__(self, X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
        return self.accumulate(
            X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, progress=progress
        )

    def accumulate(self, X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
        """Apply the score law to a block of points; see :func:`zcore.core.engine_numba.accumulate_numba`."""
        if tuple(np.shape(X)) != self.shape:
            raise ValueError(f"prepared for a matrix of shape {self.shape}, got {np.shape(X)}")
        dims = np.ascontiguousarray(dims, dtype=np.int64)
        coords = np.ascontiguousarray(coords, dtype=np.float64)
        n = self.shape[0]
        n_points = dims.shape[0]
        if n_points == 0:
            return
        k = int(min(k, n - 1))
        one = np.int64(1) << shift
        slack = self.knobs.dense_slack
        width = k + int(slack * k) + (32 if slack else 0)
        # points sharing their dimensions one after the other: their columns stay in cache
        order = np.lexsort(dims.T[::-1])
        batch = int(max(1, min(n_points, self.knobs.dense_batch_elements // width)))
        out_c = np.empty(batch, np.int64)
        out_d = np.empty((batch, width))
        out_i = np.empty((batch, width), np.int64)
        ws = Workspace(batch, width, k)
        dist = np.empty(n)
        bd, sd = np.empty(n), np.empty(n)
        bi, si = np.empty(n, np.int64), np.empty(n, np.int64)
        for b0 in range(0, n_points, batch):
            sel = order[b0 : b0 + batch]
            m = sel.size
            rows = slice(0, m)
            _dense_kernel(
                self.columns,
                dims[sel],
                coords[sel],
                k,
                width,
                self.knobs.dense_max_counts,
                out_c[rows],
                out_d[rows],
                out_i[rows],
                dist,
                bd,
                bi,
                sd,
                si,
            )
            coverage += np.bincount(out_c[rows], minlength=n)
            apply_penalties(out_d[rows], out_i[rows], penalty, k, exp, shift, one, ws)
            if progress is not None:
                progress(m)
