"""Dense scan kernel of the compiled engine: for small collections, every sample, vectorised.

Same contract and same integers as :func:`zcore.core.law.accumulate_numpy`. The windowed kernel
of :mod:`zcore.core.engine_numba` visits only a strip of the samples but pays a few nanoseconds of
bookkeeping per visited sample; when ``N`` is small, ``redund_nn`` is a large fraction of it and the
strip holds most of the samples anyway, so a plain pass over all ``N`` samples that the compiler
vectorises (a fraction of a nanosecond per sample) is cheaper. :func:`zcore.core.engine_numba.prepare`
picks this kernel when ``N <= NumbaKnobs.dense_max_n`` (a crossover measured with ``benchmarks/bench_scoring.py``).

Per point, over a column-major copy of ``X`` (``4 N D`` bytes, one column per dimension):

- **coverage**: with two dimensions (the default ``sample_dim``), float32 distances of all
  samples to the point rounded to float32 (16 lanes per AVX-512 instruction, no conversions),
  their minimum ``m`` by blocks, then the exact float64 distances (same operations, same order as
  numpy) of the few samples within ``m`` plus twice the error bound of :func:`_bound`: the lowest
  index at the smallest. Otherwise the float64 distances of all samples and their minimum.
- **redundancy**: an admission threshold ``t`` estimated on every ``NumbaKnobs.dense_sub_stride``-th
  sample (so that about ``NumbaKnobs.dense_admit * k`` samples lie within it), then one pass that
  keeps every sample within ``t``: with two dimensions, float32 distances to the covering sample
  ``c`` (whose values are float32: only the rounding of the float32 operations separates them
  from the float64 ones, a relative ``2**-22`` at most) compared with ``t`` widened by ``2**-19``,
  and packed by AVX-512's ``compress`` (:func:`~zcore.core.kernels.compress_pair32`), then the
  exact float64 distances of those kept. If fewer than ``k`` of them are within ``t`` exactly
  (rare), the threshold is searched by counting passes over the exact distances of all samples.
  Then a threshold among the candidates leaves between ``k`` and ``k + dense_slack * k + 32``;
  ties that overflow that width are resolved by the exact selection of the ``k`` best by
  ``(distance, index)``. The float32 steps decide which samples get an exact distance, never a
  result: everything compared, selected or weighted is float64, as in numpy. They run when all
  values and coordinates are far below float32's overflow (:data:`_FAST_LIMIT`).

Points are scored in an order that keeps columns in cache (:func:`_point_order`): those whose
two dimensions fall in the same two groups of dimensions one after the other.

The candidates of a batch of points (``NumbaKnobs.dense_batch_elements``, small enough to stay in
cache) go to :func:`~zcore.core.kernels.apply_penalties` (numpy's sort, the pairwise sum over the
``k`` best sorted ascending, as :func:`~zcore.core.law.penalty_weights` does, and the compiled
fixed-point penalties).

Memory: the column-major copy of ``X`` and a subsample of it (``1 / dense_sub_stride`` of that),
a few ``N``-long buffers, and ``batch x width`` distances, indices and keys
(``24 x NumbaKnobs.dense_batch_elements`` bytes).
"""

import math

import numpy as np

from .kernels import (
    LANES,
    Workspace,
    apply_penalties,
    compact,
    compress_at_most,
    compress_pair32,
    distances_at,
    gather,
    jit,
)

#: Samples per block of the coverage minimum.
_BLOCK = 256
#: The admission threshold of a redundancy search holds between ``NumbaKnobs.dense_admit * k /
#: stride`` samples of the subsample (every ``NumbaKnobs.dense_sub_stride``-th) and
#: ``_ADMIT_SPREAD * k / stride`` more (the bracket of that search).
_ADMIT_SPREAD = 0.2
#: Bytes of columns per group of dimensions in the order of the points (:func:`_point_order`):
#: two groups fit in a core's L2 cache.
_CACHE_BYTES = 1 << 20
#: The float32 filters run when every value and coordinate is below this in magnitude: far
#: from float32's overflow (about ``2**128``), so their error stays within :func:`_bound`.
_FAST_LIMIT = 2.0**100


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
def _argmin(dist):
    """Lowest index at the minimum of ``dist`` (non-negative float64 distances, no NaN).

    Non-negative doubles order as their bit patterns: the minimum of each block of ``_BLOCK``
    is an integer minimum (vectorised, the same in any order), then the first index at it from
    the first block holding it."""
    n = dist.shape[0]
    bits = dist.view(np.int64)
    best = bits[0]
    first = 0
    n_blocks = n // _BLOCK
    for blk in range(n_blocks):
        i0 = blk * _BLOCK
        m = bits[i0]
        for j in range(_BLOCK):  # a constant trip count: one vectorised loop, no remainder
            m = min(m, bits[i0 + j])
        if m < best:
            best = m
            first = i0
    for i in range(n_blocks * _BLOCK, n):
        if bits[i] < best:
            best = bits[i]
            first = i
    for i in range(first, n):
        if bits[i] == best:
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
def _bound(s, e):
    """An upper bound of ``|s - d|``, for ``s`` the float32 distance (:func:`_cover_pair`) of a
    sample whose float64 distance is ``d``; ``e``: the sum over the dimensions of
    ``|q - float32(q)|``, how far the float32 reference is from the point.

    Why: with ``D`` the exact distance to the point, the float32 terms are exact differences to
    the float32 point (within ``e`` of ``D`` in all) each rounded once, and their sum rounded once
    (relative ``2**-24`` each; a subnormal difference or sum is exact), so ``s`` lies in
    ``[(D - e)(1 - 2**-23), (D + e)(1 + 2**-23 + 2**-48)]``; ``d`` is ``D`` within a relative
    ``2**-52``. Hence ``|s - d| <= e (1 + 2**-20) + D 2**-22`` with ``D <= s (1 + 2**-22) + e``:
    at most ``e (1 + 2**-19) + s 2**-21``. Nothing overflows while values and coordinates stay
    below :data:`_FAST_LIMIT`."""
    return e * (1.0 + 2.0**-19) + s * 2.0**-21


@jit
def _cover_pair(a, b, q0, q1, d32, bmin):
    """The coverage winner for two dimensions (columns ``a``, ``b``; the point ``(q0, q1)``):
    float32 distances to the float32 point first (vectorised, no conversions), their minimum
    ``m`` (as integers, by blocks of ``_BLOCK``), then the exact float64 distances of the few samples
    within ``m + 2 * _bound(m)`` (with a relative margin): the lowest index at the smallest.
    ``d32``: ``n`` float32; ``bmin``: ``n // _BLOCK + 1`` int32."""
    n = a.shape[0]
    bits = d32.view(np.int32)
    p0 = np.float32(q0)
    p1 = np.float32(q1)
    e = abs(q0 - np.float64(p0)) + abs(q1 - np.float64(p1))
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    full = n // _BLOCK
    best = np.int32(0x7F800000)
    for blk in range(full):
        i0 = blk * _BLOCK
        for j in range(_BLOCK):
            d32[i0 + j] = abs(a[i0 + j] - p0) + abs(b[i0 + j] - p1)
        m = bits[i0]
        for j in range(_BLOCK):
            m = min(m, bits[i0 + j])
        bmin[blk] = m
        best = min(best, m)
    if full < n_blocks:
        m = np.int32(0x7F800000)
        for i in range(full * _BLOCK, n):
            d32[i] = abs(a[i] - p0) + abs(b[i] - p1)
            m = min(m, bits[i])
        bmin[full] = m
        best = min(best, m)
    fmin = bmin.view(np.float32)  # the block minima as floats
    lowest = np.inf
    for blk in range(n_blocks):
        if bmin[blk] == best:
            lowest = np.float64(fmin[blk])
            break
    limit = (lowest + 2.0 * _bound(lowest, e)) * (1.0 + 2.0**-19)
    best_d = np.inf
    best_i = -1
    for blk in range(n_blocks):
        if np.float64(fmin[blk]) > limit:
            continue
        for i in range(blk * _BLOCK, min((blk + 1) * _BLOCK, n)):
            if np.float64(d32[i]) <= limit:
                d = abs(np.float64(a[i]) - q0) + abs(np.float64(b[i]) - q1)
                if d < best_d:
                    best_d = d
                    best_i = i
    return best_i


@jit
def _admit(cols, dp, q, t, fast, dist, ci, cd):
    """Into ``ci``/``cd`` (in index order) every sample whose distance to ``q`` is at most ``t``
    and that distance, and possibly others farther; returns ``(size, within)``: how many, and how
    many of them are within ``t``. With ``fast`` (two dimensions, ``q`` a sample's float32
    values), a float32 filter (:func:`~zcore.core.kernels.compress_pair32`, with the margin of
    :func:`_bound`) and the exact distances of the samples it keeps; else the float64 distances
    of all samples into ``dist`` first."""
    n = dist.shape[0]
    w = 0
    i = 0
    if fast:
        a = cols[dp[0]]
        b = cols[dp[1]]
        p0 = np.float32(q[0])
        p1 = np.float32(q[1])
        wide = t * (1.0 + 2.0**-19)
        t32 = np.float32(wide)
        if np.float64(t32) < wide:
            t32 = np.nextafter(t32, np.float32(np.inf))
        while i + LANES <= n:
            w = compress_pair32(a, b, i, p0, p1, t32, ci, w)
            i += LANES
        for j in range(i, n):
            ci[w] = j
            w += abs(a[j] - p0) + abs(b[j] - p1) <= t32
        q0 = q[0]
        q1 = q[1]
        j = 0
        while j + 8 <= w:  # the exact distances of those kept, gathered 8 at a time
            distances_at(a, b, ci, j, q0, q1, cd)
            j += 8
        for jj in range(j, w):
            cd[jj] = abs(np.float64(a[ci[jj]]) - q0) + abs(np.float64(b[ci[jj]]) - q1)
    else:
        _distances(cols, dp, q, dist)
        while i + LANES <= n:
            w = compress_at_most(dist, i, t, ci, w)
            i += LANES
        for j in range(i, n):
            ci[w] = j
            w += dist[j] <= t
        for j in range(w):
            cd[j] = dist[ci[j]]
    within = 0
    for j in range(w):
        within += cd[j] <= t
    return w, within


@jit
def _drop(ci, cd, size, c):
    """Remove sample ``c`` from ``ci/cd[:size]`` (ascending indices; the order is not kept);
    returns the new size."""
    lo = 0
    hi = size
    while lo < hi:
        mid = (lo + hi) >> 1
        if ci[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    if lo < size and ci[lo] == c:
        ci[lo] = ci[size - 1]
        cd[lo] = cd[size - 1]
        return size - 1
    return size


@jit
def _sub_distances(sub, dp, q, fast, sdist):
    """The distances of the subsample to ``q`` (:func:`_distances`); with ``fast`` in float32
    (they only steer the admission threshold)."""
    if not fast:
        _distances(sub, dp, q, sdist)
        return
    a = sub[dp[0]]
    b = sub[dp[1]]
    p0 = np.float32(q[0])
    p1 = np.float32(q[1])
    for i in range(sdist.shape[0]):
        sdist[i] = np.float64(abs(a[i] - p0) + abs(b[i] - p1))


@jit
def _dense_kernel(
    cols,
    sub,
    k,
    k_sub,
    width_sub,
    width,
    max_counts,
    fast,
    dims,
    coords,
    out_c,
    out_d,
    out_i,
    dist,
    sdist,
    d32,
    bmin,
    ci,
    cd,
    sd,
    si,
):
    """Coverage winner (``out_c``) of each point, and in row ``p`` of ``out_d``/``out_i`` a
    superset (at most ``width``, padded with ``inf``/``-1``, in any order) of the ``k`` best other
    samples of it by ``(distance, index)``. ``fast``: two dimensions, all values and coordinates
    far below float32's overflow (the float32 filters of :func:`_cover_pair` and :func:`_admit`
    apply)."""
    n = dist.shape[0]
    n_points, s = dims.shape
    bits = dist.view(np.int64)
    sbits = sdist.view(np.int64)
    cbits = cd.view(np.int64)
    center = np.empty(s)
    scratch = np.empty(1)
    guess = np.int64(-1)
    guess_sub = np.int64(-1)
    for p in range(n_points):
        dp = dims[p]
        if fast:
            c = _cover_pair(cols[dp[0]], cols[dp[1]], coords[p, 0], coords[p, 1], d32, bmin)
        else:
            _distances(cols, dp, coords[p], dist)
            c = _argmin(dist)
        out_c[p] = c
        for j in range(s):
            center[j] = np.float64(cols[dp[j], c])
        row_d = out_d[p]
        row_i = out_i[p]
        row_d[:] = np.inf
        row_i[:] = -1
        if k >= n - 1:  # every other sample
            _distances(cols, dp, center, dist)
            w = 0
            for i in range(n):
                if i != c:
                    row_d[w] = dist[i]
                    row_i[w] = i
                    w += 1
            continue
        # An admission threshold from the subsample (about k_sub of its samples within it),
        # then every sample within it in one pass.
        _sub_distances(sub, dp, center, fast, sdist)
        ts, _ = _threshold(sbits, k_sub, width_sub, guess_sub, s, max_counts, scratch)
        guess_sub = ts
        scratch.view(np.int64)[0] = ts
        size, within = _admit(cols, dp, center, scratch[0], fast, dist, ci, cd)
        kept = _drop(ci, cd, size, c)
        within -= size - kept  # c is within (at distance 0)
        size = kept
        if within < k:  # too few: the threshold searched over all the samples
            _distances(cols, dp, center, dist)
            dist[c] = np.inf
            t, _ = _threshold(bits, k, 2 * width, guess, s, max_counts, scratch)
            guess = t
            size = 0
            for i in range(n):
                ci[size] = i
                cd[size] = dist[i]
                size += bits[i] <= t
        # the k best are among the size candidates: fewer, between k and width of them
        t, count = _threshold(cbits[:size], k, width, np.int64(-1), s, max_counts, scratch)
        if count > width:  # ties (or the search) overflow the width: the exact k best
            count, _ = compact(cd, ci, size, k, sd, si)
            t = np.int64(0x7FF0000000000000)
            size = count
        scratch.view(np.int64)[0] = t
        limit = scratch[0]
        w = 0
        j = 0
        while j + LANES <= size:  # the positions of those within t, then their values
            w = compress_at_most(cd, j, limit, si, w)
            j += LANES
        for jj in range(j, size):
            si[w] = jj
            w += cd[jj] <= limit
        for jj in range(w):
            row_i[jj] = ci[si[jj]]
            row_d[jj] = cd[si[jj]]


@jit
def _add_coverage(coverage, winners):
    """``coverage[c] += 1`` for each ``c`` of ``winners`` (a bincount without an ``N``-long
    temporary per batch)."""
    for c in winners:
        coverage[c] += 1


def _point_order(dims, n):
    """The order in which points are scored (any order gives the same integers): points whose
    dimensions fall in the same two groups of dimensions one after the other, each group
    ``_CACHE_BYTES`` of columns, so that a run of points reads columns already in cache; by
    their dimensions inside a run."""
    group = max(1, _CACHE_BYTES // (4 * max(n, 1)))
    keys = [dims[:, j] for j in range(dims.shape[1] - 1, -1, -1)]
    keys += [dims[:, j] // group for j in range(dims.shape[1] - 1, -1, -1)]
    return np.lexsort(keys)


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
        self.max_abs = float(np.abs(self.columns).max()) if X.size else 0.0
        self._subsamples = {}

    def subsample(self, stride):
        """Every ``stride``-th sample of the column-major copy, contiguous (kept per stride)."""
        if stride not in self._subsamples:
            self._subsamples[stride] = np.ascontiguousarray(self.columns[:, ::stride])
        return self._subsamples[stride]

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
        order = _point_order(dims, n)
        batch = int(max(1, min(n_points, self.knobs.dense_batch_elements // width)))
        out_c = np.empty(batch, np.int64)
        out_d = np.empty((batch, width))
        out_i = np.empty((batch, width), np.int64)
        ws = Workspace(batch, width, k)
        dist = np.empty(n)
        stride = self.knobs.dense_sub_stride
        k_sub = int(math.ceil(self.knobs.dense_admit * k / stride)) + 1
        width_sub = k_sub + int(math.ceil(_ADMIT_SPREAD * k / stride)) + 2
        sub = self.subsample(stride)
        sdist = np.empty(sub.shape[1])
        # candidate buffers: all n samples at worst, and LANES slots of room for a full store
        ci, si = np.empty(n + LANES, np.int32), np.empty(n + LANES, np.int32)
        cd, sd = np.empty(n + LANES), np.empty(n + LANES)
        d32 = np.empty(n, np.float32)
        bmin = np.empty(n // _BLOCK + 1, np.int32)
        fast = bool(
            dims.shape[1] == 2
            and self.max_abs < _FAST_LIMIT
            and float(np.abs(coords).max()) < _FAST_LIMIT
        )
        for b0 in range(0, n_points, batch):
            sel = order[b0 : b0 + batch]
            m = sel.size
            rows = slice(0, m)
            _dense_kernel(
                self.columns,
                sub,
                k,
                k_sub,
                width_sub,
                width,
                self.knobs.dense_max_counts,
                fast and self.knobs.dense_float32,
                dims[sel],
                coords[sel],
                out_c[rows],
                out_d[rows],
                out_i[rows],
                dist,
                sdist,
                d32,
                bmin,
                ci,
                cd,
                sd,
                si,
            )
            _add_coverage(coverage, out_c[rows])
            apply_penalties(out_d[rows], out_i[rows], penalty, k, exp, shift, one, ws)
            if progress is not None:
                progress(m)
