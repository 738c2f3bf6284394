"""Compiled scoring engine (numba): the law of :mod:`zcore.core.law`, bit for bit, much faster.

Same contract and same results as :func:`zcore.core.law.accumulate_numpy` (identical coverage and
penalty integers), but a point costs a scan of a thin slice of the samples instead of two passes
over all ``N`` of them.

How
---
Only the point's ``sample_dim`` dimensions matter, and an L1 distance is at least its term along any
one of them. So each search (the covering sample of a point, then the ``k`` nearest others of that
sample) picks one of the point's dimensions as its *scan dimension* ``t`` and visits the samples in
order of ``|x_t - q_t|``, outward from ``q_t`` in the samples sorted along ``t``. The scan stops once
that gap alone is strictly larger than the distance still to beat (the best so far for coverage,
the current ``k``-th for redundancy): every sample not visited is farther. Ties are never cut by the
stop (strict ``>``) and are resolved by index exactly as the law says.

A visited sample is first bounded from below with one byte per other dimension: every dimension is
coded in 256 quantile bins (``codes``, column-major, ``N`` bytes per dimension), and a per-search
table gives, for each code, a lower bound of ``|x_j - q_j|`` that is never above the float64 term
the numpy engine computes (bin edges are taken one fine cell outward, far beyond any rounding).
Only samples whose bound, summed in the drawn order, does not exceed the distance to beat get their
exact distance (same float64 operations, same order, as numpy), read from a column-major copy of
``X`` when ``X`` is small (``NumbaKnobs.columns_budget``), else from a column gathered for a run of points
sharing that dimension (``NumbaKnobs.column_min_points``), else from the row of ``X``.

- **coverage**: the nearest sample, ties to the lowest index;
- **redundancy**: candidates at most at a threshold are buffered; the threshold starts at 1.5x a
  radius estimated from the marginal densities (grown and retried if fewer than ``k`` samples lie
  within it) and drops whenever the full buffer is shrunk to (a superset of) its ``k`` best; the
  exact ``k`` best by ``(distance, index)`` are picked at the end.

The scan dimension is the point's dimension where the samples are sparsest around the query
(estimated from a sorted subsample): the scan visits a strip ``|x_t - q_t| <= r``, fewest where the
density along ``t`` is lowest. This choice changes the time, never the result. Each dimension is
sorted once per phase (coverage, then redundancy) and serves every point that scans it; points whose
scan dimension is rare are searched by a plain pass over the codes instead.

Memory
------
:func:`prepare` builds the codes (``N x D`` bytes, a quarter of ``X``), small per-dimension tables,
and the column-major copy of ``X`` only when ``X`` is at most ``NumbaKnobs.columns_budget`` bytes.
:meth:`Prepared.accumulate` then holds sorted orders and values (8 bytes per sample and dimension)
for at most ``NumbaKnobs.memory_budget`` bytes of dimensions at a time, one gathered column, a chunk of
gathered columns to sort (``16 x N`` floats), batch buffers of a few tens of MB and a few arrays of
``P`` numbers. Nothing of size ``N x N`` or ``N x P`` is allocated. For forked workers, prepare once
in the parent (:func:`prepare`) and give the workers the prepared engine: they
share its codes instead of each building a copy.

Exactness
---------
Distances are the same float64 operations in the same order as the numpy engine. The penalty weights
are computed by numpy with :func:`~zcore.core.law.law_power` (IEEE products for a whole exponent;
numpy's ``**``, whose SIMD ``pow`` a compiled one does not reproduce to the bit, otherwise),
elementwise with the expressions of :func:`~zcore.core.law.penalty_weights`, and their
normalising sum over the ``k`` best sorted by distance (the order of the numpy engine); the rounding
to fixed point is the same float64 operations as :func:`~zcore.core.law.to_fixed`. For
``N <= NumbaKnobs.dense_max_n``, :func:`prepare` returns the dense scan kernel of
:mod:`zcore.core.engine_dense` instead (same results).
"""

import math
from dataclasses import dataclass

import numpy as np

from .kernels import (
    AVAILABLE,
    GATHER_CHUNK,
    Workspace,
    apply_penalties,
    compact,
    gather,
    jit,
    jit_inline,
)

#: Sorted positions scanned per step of a search.
_CHUNK = 64
#: Candidates handed over per redundancy search beyond the ``k`` best (slack of the cheap shrink).
_EXTRA = 64
#: Uniform cells per dimension behind the 256 quantile codes.
_CELLS = 4096


@dataclass(frozen=True)
class NumbaKnobs:
    """Tuning knobs of the compiled engine, with their defaults: only the time and memory depend
    on them, never the integers (the engine tests run every kernel path by changing them).

    Pass one to :func:`prepare` (``prepare(X, knobs=NumbaKnobs(dense_max_n=0))``).
    """

    #: Bytes of sorted orders and values (8 per sample and dimension) held at once, per process.
    memory_budget: int = 256 << 20
    #: Points per call of the coverage kernel (a progress report after each).
    cover_slice: int = 4096
    #: Largest ``X`` (bytes) of which a column-major copy is kept for the exact distances.
    columns_budget: int = 512 << 20
    #: Points of a block sharing their other dimension from which that column is gathered for
    #: them (when there is no column-major copy of ``X``), instead of reading rows of ``X``.
    column_min_points: int = 48
    #: A dimension is sorted for a phase only if at least this many points scan it; the others
    #: are searched by a plain pass over the codes (cheaper than sorting ``N`` values for a few
    #: points).
    sort_min_points: int = 16
    #: Rows of the per-dimension sorted subsample (scan choice, radius estimate, code bins).
    table_rows: int = 16384
    #: Candidate distances per batch of redundancy searches (bounds the batch buffers).
    batch_elements: int = 1 << 20
    #: Largest ``N`` scored by the dense scan kernel (:mod:`zcore.core.engine_dense`) instead of
    #: the windowed one: the crossover of the two measured with ``benchmarks/bench_scoring.py``
    #: (D = 512, ``redund_nn`` = 1000, 1M points: dense 69 s / 171 s, windowed 84 s / 113 s at
    #: N = 100k / 200k, crossing near 120k; see README, Performance).
    dense_max_n: int = 120_000
    #: Dense kernel: candidates per point handed to numpy for the weights are at most
    #: ``k + dense_slack * k + 32`` (the admission threshold is searched until between ``k`` and
    #: that many samples lie within it).
    dense_slack: float = 0.05
    #: Dense kernel: the admission threshold of each redundancy search is estimated on every
    #: ``dense_sub_stride``-th sample before one pass over all of them.
    dense_sub_stride: int = 8
    #: Dense kernel: that estimate aims at ``dense_admit * k`` samples within the threshold, so
    #: that fewer than ``k`` (then the threshold is searched over all the samples) are rare.
    dense_admit: float = 1.25
    #: Dense kernel, two dimensions: float32 filters before the exact float64 distances (the
    #: coverage minimum, the samples within the admission threshold); ``False``: float64 only.
    dense_float32: bool = True
    #: Dense kernel: points per batch are ``dense_batch_elements // (k + slack)``.
    dense_batch_elements: int = 1 << 16
    #: Dense kernel: counting passes spent on the admission threshold before giving up on the
    #: width (then the exact ``k`` best are selected among all the samples within the last
    #: threshold tried).
    dense_max_counts: int = 24


#: The defaults.
DEFAULT_KNOBS = NumbaKnobs()


# ----------------------------------------------------------------------------------------------
# kernels: preparation


@jit
def _encode(X, lo, scale, lut, codes, c0, c1):
    """``codes[j, i] = lut[j, cell]`` with ``cell = clip(int((x - lo) * scale), 0, cells - 1)``."""
    cells = lut.shape[1]
    for i in range(X.shape[0]):
        for j in range(c0, c1):
            u = (np.float64(X[i, j]) - lo[j]) * scale[j]
            cell = 0
            if u >= cells - 1:
                cell = cells - 1
            elif u > 0.0:
                cell = np.int64(u)
            codes[j, i] = lut[j, cell]


# ----------------------------------------------------------------------------------------------
# kernels: searches


@jit_inline
def _lower_bound(vals, v):
    """First position ``j`` with ``vals[j] >= v`` (``vals`` sorted ascending)."""
    lo = 0
    hi = vals.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if np.float64(vals[mid]) < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit
def _choose_scan(table, dims, queries, half_window, n, k, out_t, out_r):
    """Per point: ``out_t``, the index ``j`` of the dimension where the samples are sparsest at the
    query; ``out_r``, a rough radius of the L1 ball around the query that holds ``k`` samples
    (from the marginal densities as if independent; 0 when unknown). Only speed depends on them."""
    n_points, s = dims.shape
    m = table.shape[1]
    volume = 1.0  # s! : the L1 ball of radius r has volume (2r)**s / s!
    for j in range(2, s + 1):
        volume *= j
    for p in range(n_points):
        best = -1.0
        bt = 0
        dens = 1.0
        for j in range(s):
            row = table[dims[p, j]]
            pos = _lower_bound(row, queries[p, j])
            lo = max(pos - half_window, 0)
            hi = min(pos + half_window, m - 1)
            width = (np.float64(row[hi]) - np.float64(row[lo])) / max(hi - lo, 1)
            if width > best:
                best = width
                bt = j
            dens *= 1.0 / (m * width) if width > 0 else np.inf
        out_t[p] = bt
        out_r[p] = 0.5 * (k * volume / (n * dens)) ** (1.0 / s) if dens < np.inf else 0.0


@jit
def _fill_bounds(e_low, e_high, dp, q, t, lb):
    """``lb[j, code]``: a lower bound of ``|x - q[j]|`` over the samples with that code along
    ``dp[j]`` (0 for the scan dimension ``t``, whose exact gap is used instead)."""
    for j in range(dp.shape[0]):
        row = lb[j]
        if j == t:
            row[:] = 0.0
            continue
        lo_edge = e_low[dp[j]]
        hi_edge = e_high[dp[j]]
        v = q[j]
        for code in range(row.shape[0]):
            row[code] = max(0.0, lo_edge[code] - v, v - hi_edge[code])


# The scan loops shared by the coverage and the redundancy kernels. Inlined in numba's IR
# (jit_inline): a call with array arguments in these loops would otherwise cost reference counting
# (atomic operations) per sample.


@jit_inline
def _plain_hits(lb, codes, dp, i0, i1, limit, hit):
    """Plain pass: into ``hit``, the samples of ``[i0, i1)`` whose code bound (summed in the drawn
    order) is at most ``limit``; returns how many."""
    s = dp.shape[0]
    n_hits = 0
    for i in range(i0, i1):
        bound = lb[0, codes[dp[0], i]]
        for j in range(1, s):
            bound += lb[j, codes[dp[j], i]]
        hit[n_hits] = i
        n_hits += bound <= limit
    return n_hits


@jit_inline
def _distance(src, rows, q, i):
    """The exact L1 distance of sample ``i`` to ``q`` (float64, in the drawn order)."""
    d = abs(np.float64(src[rows[0], i]) - q[0])
    for j in range(1, rows.shape[0]):
        d += abs(np.float64(src[rows[j], i]) - q[j])
    return d


@jit_inline
def _scan_step(vr, qs, n, left, right, left_done, right_done, limit):
    """One step of the outward scan along the sorted values ``vr`` from ``qs``: the side nearer
    to ``qs`` next (left on ties), ``_CHUNK`` positions. Returns ``(a, b, left, right,
    left_done, right_done)``: positions ``[a, b)`` to visit, or ``a == b`` when that side's next
    gap alone is above ``limit`` (the side is then done: every sample beyond is farther)."""
    go_left = right_done
    if not left_done and not right_done:
        go_left = abs(np.float64(vr[left - 1]) - qs) <= abs(np.float64(vr[right]) - qs)
    if go_left:
        a = max(left - _CHUNK, 0)
        if abs(np.float64(vr[left - 1]) - qs) > limit:
            return 0, 0, left, right, True, right_done
        return a, left, a, right, a == 0, right_done
    b = min(right + _CHUNK, n)
    if abs(np.float64(vr[right]) - qs) > limit:
        return 0, 0, left, right, left_done, True
    return right, b, left, b, left_done, b >= n


@jit_inline
def _scan_hits(vr, orr, qs, a, b, t, lb, codes, dp, limit, hit):
    """Sorted scan: into ``hit``, the positions of ``[a, b)`` whose bound (the exact gap along the
    scan dimension ``t``, code bounds along the others, summed in the drawn order: never above
    the exact distance) is at most ``limit``; returns how many."""
    s = dp.shape[0]
    n_hits = 0
    for j in range(a, b):
        g = abs(np.float64(vr[j]) - qs)
        i = orr[j]
        bound = 0.0
        for jj in range(s):
            term = g if jj == t else lb[jj, codes[dp[jj], i]]
            bound = term if jj == 0 else bound + term
        hit[n_hits] = j
        n_hits += bound <= limit
    return n_hits


@jit_inline
def _scan_distance(src, rows, q, i, g, t):
    """The exact distance of sample ``i`` whose gap along the scan dimension ``t`` is ``g`` (the
    same float64 operations, in the same order, as :func:`_distance`)."""
    d = 0.0
    for jj in range(rows.shape[0]):
        term = g if jj == t else abs(np.float64(src[rows[jj], i]) - q[jj])
        d = term if jj == 0 else d + term
    return d


@jit
def _cover_kernel(
    src, srows, codes, e_low, e_high, dims, queries, tscan, sslot, order, vals, out_c, lb, hit
):
    """Coverage winner of each point: min distance, ties to the lowest index.

    ``src[srows[p, j], i]`` is the value of sample ``i`` along the point's ``j``-th dimension
    (``src`` is a column-major copy of ``X``, or ``X.T``).
    """
    n = codes.shape[1]
    for p in range(queries.shape[0]):
        dp = dims[p]
        q = queries[p]
        rows = srows[p]
        srow = sslot[p]
        t = tscan[p] if srow >= 0 else -1
        _fill_bounds(e_low, e_high, dp, q, t, lb)
        best = np.inf
        bi = -1
        if srow < 0:
            for i0 in range(0, n, _CHUNK):
                n_hits = _plain_hits(lb, codes, dp, i0, min(i0 + _CHUNK, n), best, hit)
                for h in range(n_hits):
                    i = hit[h]
                    d = _distance(src, rows, q, i)
                    if d < best or (d == best and i < bi):
                        best = d
                        bi = i
        else:
            qs = q[t]
            vr = vals[srow]
            orr = order[srow]
            right = _lower_bound(vr, qs)
            left = right  # positions [left, right) are done
            left_done = left == 0
            right_done = right >= n
            while not (left_done and right_done):
                a, b, left, right, left_done, right_done = _scan_step(
                    vr, qs, n, left, right, left_done, right_done, best
                )
                n_hits = _scan_hits(vr, orr, qs, a, b, t, lb, codes, dp, best, hit)
                for h in range(n_hits):
                    j = hit[h]
                    i = orr[j]
                    d = _scan_distance(src, rows, q, i, abs(np.float64(vr[j]) - qs), t)
                    if d < best or (d == best and i < bi):
                        best = d
                        bi = i
        out_c[p] = bi


@jit
def _shrink(bd, bi, size, k, hist):
    """Drop candidates that cannot be among the ``k`` best, cheaply: keep those at most at the
    largest distance of the histogram bins (over ``[min, max]``) that hold the ``k``-th smallest.

    Keeps at least the ``k`` best (a superset: ties and the rest of that bin stay). Returns the new
    size and the new admission threshold (the largest distance kept).
    """
    lo = bd[0]
    hi = bd[0]
    for j in range(1, size):
        d = bd[j]
        lo = min(lo, d)
        hi = max(hi, d)
    if not hi > lo:
        return size, hi
    nb = hist.shape[0]
    scale = nb / (hi - lo)
    hist[:] = 0
    for j in range(size):
        hist[min(int((bd[j] - lo) * scale), nb - 1)] += 1
    cum = 0
    last = nb - 1
    for b in range(nb):
        cum += hist[b]
        if cum >= k:
            last = b
            break
    t = lo
    for j in range(size):
        d = bd[j]
        if min(int((d - lo) * scale), nb - 1) <= last and d > t:
            t = d
    w = 0
    for j in range(size):
        d = bd[j]
        if d <= t:
            bd[w] = d
            bi[w] = bi[j]
            w += 1
    return w, t


@jit
def _make_room(bd, bi, size, k, room, sd, si, hist):
    """Shrink the buffer to at most ``room`` candidates (exact selection if ties defeat the
    histogram); returns the new size and threshold."""
    size, thr = _shrink(bd, bi, size, k, hist)
    if size > room:
        size, thr = compact(bd, bi, size, k, sd, si)
    return size, thr


@jit
def _knn_kernel(
    src,
    srows,
    codes,
    e_low,
    e_high,
    dims,
    centers,
    cidx,
    tscan,
    radius,
    sslot,
    order,
    vals,
    k,
    out_d,
    out_i,
    bd,
    bi,
    sd,
    si,
    hist,
    hit,
    lb,
):
    """The ``k`` nearest other samples of each covering sample.

    Row ``p`` of ``out_d``/``out_i`` receives a superset of the exact ``k`` best by
    ``(distance, index)`` (at most ``out_d.shape[1]`` candidates, padded with ``inf``/``-1``).
    Values as in :func:`_cover_kernel`.
    """
    n = codes.shape[1]
    cap = bd.shape[0]
    width = out_d.shape[1]
    for p in range(centers.shape[0]):
        dp = dims[p]
        s = dp.shape[0]
        q = centers[p]
        rows = srows[p]
        c = cidx[p]
        srow = sslot[p]
        t = tscan[p] if srow >= 0 else -1
        _fill_bounds(e_low, e_high, dp, q, t, lb)
        start = 1.5 * radius[p]
        if not start > 0.0:
            start = np.inf
        size = 0
        tries = 0
        while True:
            size = 0
            thr = start
            if srow < 0:
                for i0 in range(0, n, _CHUNK):
                    if size + _CHUNK > cap:
                        size, thr = _make_room(bd, bi, size, k, cap - _CHUNK, sd, si, hist)
                    n_hits = _plain_hits(lb, codes, dp, i0, min(i0 + _CHUNK, n), thr, hit)
                    for h in range(n_hits):
                        i = hit[h]
                        d = _distance(src, rows, q, i)
                        bd[size] = d
                        bi[size] = i
                        size += (d <= thr) & (i != c)
            else:
                qs = q[t]
                vr = vals[srow]
                orr = order[srow]
                right = _lower_bound(vr, qs)
                left = right  # positions [left, right) are done
                left_done = left == 0
                right_done = right >= n
                jo = 1 - t if s == 2 else 0  # s == 2: the other dimension
                lbo = lb[jo]
                ocodes = codes[dp[jo]]
                orow = rows[jo]
                qo = q[jo]
                while not (left_done and right_done):
                    if size + _CHUNK > cap:
                        size, thr = _make_room(bd, bi, size, k, cap - _CHUNK, sd, si, hist)
                    a, b, left, right, left_done, right_done = _scan_step(
                        vr, qs, n, left, right, left_done, right_done, thr
                    )
                    if s == 2:  # two terms: g + other == other + g exactly, either order
                        n_hits = 0
                        for j in range(a, b):
                            g = abs(np.float64(vr[j]) - qs)
                            hit[n_hits] = j
                            n_hits += g + lbo[ocodes[orr[j]]] <= thr
                        for h in range(n_hits):
                            j = hit[h]
                            i = orr[j]
                            g = abs(np.float64(vr[j]) - qs)
                            d = g + abs(np.float64(src[orow, i]) - qo)
                            bd[size] = d
                            bi[size] = i
                            size += (d <= thr) & (i != c)
                    else:
                        n_hits = _scan_hits(vr, orr, qs, a, b, t, lb, codes, dp, thr, hit)
                        for h in range(n_hits):
                            j = hit[h]
                            i = orr[j]
                            d = _scan_distance(src, rows, q, i, abs(np.float64(vr[j]) - qs), t)
                            bd[size] = d
                            bi[size] = i
                            size += (d <= thr) & (i != c)
            if size >= k or start == np.inf:
                break
            # Too few within the threshold: grow it by the expected ratio (the ball holds about
            # `size` samples at `start`, volume ~ r**s), at least 1.25x; unbounded after 3 tries.
            tries += 1
            grow = 4.0 if size == 0 else min(4.0, max(1.25, 1.1 * (k / size) ** (1.0 / s)))
            start = grow * start if tries < 3 else np.inf
        if size > width:
            size, thr = _make_room(bd, bi, size, k, width, sd, si, hist)
        for j in range(size):
            out_d[p, j] = bd[j]
            out_i[p, j] = bi[j]
        for j in range(size, width):
            out_d[p, j] = np.inf
            out_i[p, j] = -1


# ----------------------------------------------------------------------------------------------
# driver


class _Progress:
    """Half of the points are reported during the coverage phase, the rest during redundancy."""

    def __init__(self, callback, total):
        self.callback = callback
        self.total = total
        self.done = [0, 0]
        self.sent = 0

    def add(self, phase, count):
        if self.callback is None:
            return
        self.done[phase] += count
        target = self.done[0] // 2 + (self.done[1] + 1) // 2
        if target > self.sent:
            self.callback(target - self.sent)
            self.sent = target


def _half_window(n, table_rows, strip):
    """Half-width, in subsample ranks, of the window that compares densities for a strip of about
    ``strip`` samples of the full data."""
    return max(1, int(round(0.5 * strip * table_rows / n)))


class Prepared:
    """Per-matrix data of the compiled engine: a sorted subsample of each dimension, and the
    8-bit quantile codes of every sample with the edges of their bins.

    Calling it (or :meth:`accumulate`) applies the law like
    :func:`zcore.core.law.accumulate_numpy`, for the same ``X`` (the same values; the array may
    be a copy, e.g. in shared memory).
    """

    def __init__(self, X, knobs=None):
        if not AVAILABLE:
            raise ImportError("the numba engine needs numba: pip install numba")
        self.knobs = knobs = DEFAULT_KNOBS if knobs is None else knobs
        X = np.ascontiguousarray(X, dtype=np.float32)
        n, n_dims = X.shape
        self.shape = X.shape
        m = knobs.table_rows
        rows = np.arange(n) if n <= m else (np.arange(m) * n) // m
        table = np.ascontiguousarray(X[rows].T)
        table.sort(axis=1)
        self.table = table

        # Codes: 256 quantile bins over _CELLS uniform cells of [min, max] of the subsample.
        m = table.shape[1]
        lo = table[:, 0].astype(np.float64)
        span = table[:, -1].astype(np.float64) - lo
        scale = np.divide(_CELLS, span, out=np.zeros(n_dims), where=span > 0)
        cell_start = (
            lo[:, None] + np.arange(_CELLS)[None, :] / np.where(scale > 0, scale, 1)[:, None]
        )
        lut = np.empty((n_dims, _CELLS), np.uint8)
        e_low = np.empty((n_dims, 256))
        e_high = np.empty((n_dims, 256))
        for j in range(n_dims):
            ranks = np.searchsorted(table[j], cell_start[j], side="left")
            lut[j] = np.minimum(ranks * 256 // m, 255)
            first = np.searchsorted(lut[j], np.arange(257), side="left")  # first cell of a code
            # One whole cell outward: beyond the rounding of (x - lo) * scale.
            if scale[j] > 0:
                e_low[j] = np.where(first[:256] == 0, -np.inf, lo[j] + (first[:256] - 1) / scale[j])
                e_high[j] = np.where(
                    first[1:] >= _CELLS, np.inf, lo[j] + (first[1:] + 1) / scale[j]
                )
            else:
                e_low[j] = -np.inf
                e_high[j] = np.inf
        self.lut, self.e_low, self.e_high = lut, e_low, e_high
        self.codes = np.empty((n_dims, n), np.uint8)
        for c0 in range(0, n_dims, 64):
            _encode(X, lo, scale, lut, self.codes, c0, min(c0 + 64, n_dims))
        # A column-major copy for the exact distances, when small enough: a scan then reads one
        # column kept in cache instead of scattered rows of X.
        self.columns = np.empty((0, n), np.float32)
        if X.nbytes <= knobs.columns_budget:
            self.columns = np.empty((n_dims, n), np.float32)
            gather(X, np.arange(n_dims), self.columns, 0)
        self._sorted = None  # (order, vals) of every dimension, see keep_sorted

    def __call__(self, X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
        return self.accumulate(
            X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, progress=progress
        )

    def accumulate(self, X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
        """Apply the score law to a block of points; see :func:`accumulate_numba`."""
        X, dims, coords = self._check(X, dims, coords)
        n_points = dims.shape[0]
        if n_points == 0:
            return
        k = int(min(k, X.shape[0] - 1))
        one = np.int64(1) << shift
        report = _Progress(progress, n_points)

        # Phase 1: the covering sample of each point.
        winners = self.nearest(X, dims, coords, report=lambda m: report.add(0, m))
        coverage += np.bincount(winners, minlength=X.shape[0]).astype(np.int64)

        # Phase 2: the k nearest other samples of each covering sample.
        centers = X[winners[:, None], dims].astype(np.float64)
        width = k + _EXTRA
        workspace = Workspace(min(max(1, self.knobs.batch_elements // width), n_points), width, k)

        def take(sel, out_d, out_i):
            apply_penalties(out_d, out_i, penalty, k, exp, shift, one, workspace)
            report.add(1, sel.size)

        self.neighbours(X, dims, centers, winners, k, take)

    def _check(self, X, dims, coords):
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.shape != self.shape:
            raise ValueError(f"prepared for a matrix of shape {self.shape}, got {X.shape}")
        dims = np.ascontiguousarray(dims, dtype=np.int64)
        coords = np.ascontiguousarray(coords, dtype=np.float64)
        return X, dims, coords

    def keep_sorted(self, X):
        """Sort every dimension once and keep the orders (8 bytes per value) for all later calls.

        For repeated calls on the same ``X`` (a Dask shard scores one batch of points at a time):
        without it, each call sorts the dimensions its points scan.
        """
        X, _, _ = self._check(X, np.empty((0, 1)), np.empty((0, 1)))
        n, n_dims = X.shape
        order = np.empty((n_dims, n), np.int32)
        vals = np.empty((n_dims, n), np.float32)
        self._sort_dims(X, np.arange(n_dims), order, vals, self._scratch(n_dims, n))
        self._sorted = (order, vals)

    def _scratch(self, rows, n):
        """Buffer of gathered columns for :meth:`_sort_dims` (none with a column-major copy)."""
        size = 0 if self.columns.shape[0] else min(GATHER_CHUNK, rows)
        return np.empty((size, n), np.float32)

    def _sort_dims(self, X, dims, order, vals, scratch):
        """Row ``j`` of ``order``/``vals``: the argsort and sorted values of dimension
        ``dims[j]``, its column read from the column-major copy or gathered into ``scratch``."""
        step = scratch.shape[0] or GATHER_CHUNK
        for j0 in range(0, dims.size, step):
            part = dims[j0 : j0 + step]
            if self.columns.shape[0]:
                cols = self.columns[part]
            else:
                gather(X, part, scratch, 0)
                cols = scratch
            for j in range(part.size):
                o = np.argsort(cols[j])
                order[j0 + j] = o
                vals[j0 + j] = cols[j][o]

    def nearest(self, X, dims, coords, report=None):
        """Index of the nearest sample of each point (L1 over its dimensions; ties: lowest index).

        The coverage phase of the law, for ``X`` (the matrix this was prepared for).
        """
        X, dims, coords = self._check(X, dims, coords)
        n = X.shape[0]
        n_points = dims.shape[0]
        winners = np.empty(n_points, np.int64)
        if n_points == 0:
            return winners
        lb = np.empty((dims.shape[1], 256))
        hit = np.empty(_CHUNK, np.int64)
        tscan = np.empty(n_points, np.int64)
        radius = np.empty(n_points)
        m = self.table.shape[1]
        src = self.columns if self.columns.shape[0] else X.T
        _choose_scan(
            self.table, dims, coords, _half_window(n, m, math.sqrt(n)), n, 1, tscan, radius
        )

        def cover(pts, sslot, order, vals):
            # in slices, so that progress moves every few thousand points
            step = self.knobs.cover_slice
            for c0 in range(0, pts.size, step):
                part = pts[c0 : c0 + step]
                out = np.empty(part.size, np.int64)
                _cover_kernel(
                    src,
                    dims[part],
                    self.codes,
                    self.e_low,
                    self.e_high,
                    dims[part],
                    coords[part],
                    tscan[part],
                    sslot[c0 : c0 + step],
                    order,
                    vals,
                    out,
                    lb,
                    hit,
                )
                winners[part] = out
                if report is not None:
                    report(part.size)

        self._phase(X, dims, tscan, cover)
        return winners

    def neighbours(self, X, dims, centers, exclude, k, take):
        """The ``k`` nearest samples of each center (L1 over its point's dimensions), without the
        sample ``exclude[p]`` (``-1``: none): the redundancy phase of the law.

        Calls ``take(sel, out_d, out_i)`` batch by batch: row ``r`` of ``out_d``/``out_i`` holds a
        superset of the ``k`` best ``(distance, index)`` of center ``sel[r]``, in any order, padded
        with ``inf``/``-1`` (the arrays are reused by the next batch).
        """
        X, dims, centers = self._check(X, dims, centers)
        n = X.shape[0]
        n_points, s = dims.shape
        if n_points == 0:
            return
        exclude = np.ascontiguousarray(exclude, dtype=np.int64)
        lb = np.empty((s, 256))
        hit = np.empty(_CHUNK, np.int64)
        tscan = np.empty(n_points, np.int64)
        radius = np.empty(n_points)
        m = self.table.shape[1]
        src = self.columns if self.columns.shape[0] else X.T
        _choose_scan(
            self.table,
            dims,
            centers,
            _half_window(n, m, math.sqrt(float(n) * k)),
            n,
            k,
            tscan,
            radius,
        )
        width = k + _EXTRA
        batch = max(1, self.knobs.batch_elements // width)
        cap = k + k // 2 + 4 * _CHUNK
        col_buf = np.empty((1, n), np.float32)  # one gathered column: row 0 for every point
        col_rows = np.zeros((min(batch, n_points), s), np.int64)
        bd, sd = np.empty(cap), np.empty(cap)
        bi, si = np.empty(cap, np.int64), np.empty(cap, np.int64)
        hist = np.empty(256, np.int64)
        out_d = np.empty((min(batch, n_points), width))
        out_i = np.empty((min(batch, n_points), width), np.int64)

        def run_batch(sel, sslot_sel, order, vals, values, value_rows):
            rows = slice(0, sel.size)
            _knn_kernel(
                values,
                value_rows,
                self.codes,
                self.e_low,
                self.e_high,
                dims[sel],
                centers[sel],
                exclude[sel],
                tscan[sel],
                radius[sel],
                sslot_sel,
                order,
                vals,
                k,
                out_d[rows],
                out_i[rows],
                bd,
                bi,
                sd,
                si,
                hist,
                hit,
                lb,
            )
            take(sel, out_d[rows], out_i[rows])

        def redund(pts, sslot, order, vals):
            # Runs of sorted-scan points sharing their other dimension (sample_dim 2, no
            # column-major copy): long runs read that column gathered once, not rows of X.
            starts = np.array([0, pts.size])
            by_column = s == 2 and not self.columns.shape[0] and bool((sslot >= 0).all())
            if by_column:
                other = dims[pts, 1 - tscan[pts]]
                starts = np.concatenate([[0], np.flatnonzero(np.diff(other)) + 1, [pts.size]])
            pending = []
            for r in range(len(starts) - 1):
                lo, hi = starts[r], starts[r + 1]
                if by_column and hi - lo >= self.knobs.column_min_points:
                    dim = int(other[lo])
                    gather(X, np.array([dim]), col_buf, 0)
                    for b0 in range(lo, hi, batch):
                        b1 = min(b0 + batch, hi)
                        sel = pts[b0:b1]
                        run_batch(sel, sslot[b0:b1], order, vals, col_buf, col_rows[: sel.size])
                else:
                    pending.append(np.arange(lo, hi))
                if pending and (sum(p.size for p in pending) >= batch or r == len(starts) - 2):
                    idx = np.concatenate(pending)
                    pending = []
                    for b0 in range(0, idx.size, batch):
                        part = idx[b0 : b0 + batch]
                        run_batch(pts[part], sslot[part], order, vals, src, dims[pts[part]])

        self._phase(X, dims, tscan, redund)

    def _phase(self, X, dims, tscan, kernel):
        """Sort the scan dimensions block by block (at most ``knobs.memory_budget`` bytes at once)
        and call ``kernel(pts, sslot, order, vals)`` on the points of each block; points whose
        scan dimension is rare come first, with ``sslot == -1`` (plain pass)."""
        n, n_dims = X.shape
        n_points, s = dims.shape
        ar = np.arange(n_points)
        scan = dims[ar, tscan]
        cached = self._sorted is not None
        if cached:
            sortable = np.ones(n_dims, bool)
        else:
            sortable = np.bincount(scan, minlength=n_dims) >= self.knobs.sort_min_points
        use_sort = sortable[scan]
        sorted_dims = np.flatnonzero(sortable)
        per_block = int(max(1, min(sorted_dims.size, self.knobs.memory_budget // (8 * n))))
        if cached:
            per_block = n_dims
        srank = np.full(n_dims, -1, np.int64)
        srank[sorted_dims] = np.arange(sorted_dims.size)
        block = np.where(use_sort, srank[scan] // per_block, -1)
        # Inside a block: by the other dims, then the scan dim (their codes stay in cache).
        if s == 2:
            keys = [scan, dims[ar, 1 - tscan], block]
        else:
            keys = [scan] + [dims[:, j] for j in range(s - 1, -1, -1)] + [block]
        order_pts = np.lexsort(keys)
        bounds = np.flatnonzero(np.diff(block[order_pts])) + 1
        bounds = np.concatenate([[0], bounds, [n_points]])
        rows = min(per_block, sorted_dims.size)
        if cached:
            order, vals = self._sorted
        else:
            order = np.empty((rows, n), np.int32)
            vals = np.empty((rows, n), np.float32)
        scratch = self._scratch(0 if cached else rows, n)
        for g in range(len(bounds) - 1):
            pts = order_pts[bounds[g] : bounds[g + 1]]
            b = int(block[pts[0]])
            if b >= 0 and not cached:
                dims_b = sorted_dims[b * per_block : (b + 1) * per_block]
                self._sort_dims(X, dims_b, order, vals, scratch)
            sslot = np.where(use_sort[pts], srank[scan[pts]] - max(b, 0) * per_block, -1)
            kernel(pts, sslot, order, vals)


def prepare(X, knobs=None):
    """The per-matrix data of the compiled engine: the dense scan kernel
    (:class:`zcore.core.engine_dense.DensePrepared`) for at most ``knobs.dense_max_n`` samples,
    else the windowed one (:class:`Prepared`). Both have ``accumulate(X, dims, coords, coverage,
    penalty, *, k, exp, shift, progress=None)`` for that ``X``.

    Build it once for ``X`` before forking workers, and give them the result: they share its
    data (codes, a quarter of the size of ``X``, or a column-major copy) instead of each building
    its own. ``knobs`` (:class:`NumbaKnobs`, default :data:`DEFAULT_KNOBS`) changes the time and
    memory only.
    """
    if not AVAILABLE:
        raise ImportError("the numba engine needs numba: pip install numba")
    knobs = DEFAULT_KNOBS if knobs is None else knobs
    if np.shape(X)[0] <= knobs.dense_max_n:
        from .engine_dense import DensePrepared

        return DensePrepared(X, knobs)
    return Prepared(X, knobs)


def accumulate_numba(
    X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None, knobs=None
):
    """Apply the score law to a block of points; same contract (parameters) and results as
    :func:`zcore.core.law.accumulate_numpy`. ``knobs``: a :class:`NumbaKnobs` (time and memory
    only).

    Notes
    -----
    Each call prepares ``X`` (:func:`prepare`: one pass over ``X``). To score blocks of points of
    the same matrix, or in several forked workers, prepare once
    (``zcore.core.engines.ENGINES["numba"].prepare(X)``) and call its ``accumulate``.
    """
    if not AVAILABLE:
        raise ImportError("the numba engine needs numba: pip install numba")
    if len(dims) == 0:
        return
    prepare(X, knobs).accumulate(
        X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, progress=progress
    )


#: The knobs under which :func:`warmup` runs a tiny problem: together they reach every kernel
#: variant (values from a column-major copy, from rows of ``X``, from a gathered column; the
#: dense kernel).
_WARMUP_KNOBS = (
    NumbaKnobs(sort_min_points=8, column_min_points=4, dense_max_n=0),
    NumbaKnobs(sort_min_points=8, column_min_points=4, dense_max_n=0, columns_budget=0),
    NumbaKnobs(sort_min_points=8, column_min_points=4, dense_max_n=40, columns_budget=0),
)


def warmup():
    """Compile (or load from numba's cache) every kernel variant on a tiny problem, under each
    of :data:`_WARMUP_KNOBS`, for sample_dim 1, 2 and 3."""
    if not AVAILABLE:
        return
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    for knobs in _WARMUP_KNOBS:
        for s in (1, 2, 3):
            dims = np.array([[0, 1, 2][:s]] * 20 + [[3, 0, 1][:s]] * 2, dtype=np.int32)
            coords = rng.normal(size=dims.shape)
            cov = np.zeros(40, np.int64)
            pen = np.zeros(40, np.int64)
            accumulate_numba(X, dims, coords, cov, pen, k=5, exp=4.0, shift=30, knobs=knobs)
