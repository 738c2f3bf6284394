"""Torch scoring engine: the law of :mod:`zcore.core.law` on a torch device, batched.

Same contract and same integers as :func:`zcore.core.law.accumulate_numpy` on ``device="cpu"`` or
a GPU (``"cuda"``); the CPU path is the same code, which is how the tests prove the integers.
Torch is imported only when this engine runs, so the core never needs it.

On the device, once per matrix (:func:`prepare_torch`): the columns of ``X`` (``D x N`` float32,
contiguous), each column sorted (values float32, sample order int32), flattened so that one
gather reads any (dimension, position). Per call, the coverage and penalty accumulators (int64).
Per batch of points, all on the device, two searches of the same shape:

- **coverage** (the nearest sample to the point, ties to the lowest index) and **redundancy**
  (the ``k`` nearest other samples of the covering sample ``c``) are each searched in a *window*
  of ``W`` consecutive sorted positions of one of the point's dimensions around the query's value
  (found by a branch-free binary search in the sorted column, ``log2 N`` gathers). Of the point's
  dimensions the one whose window ends farthest from the query (the largest smaller gap) is used.
  Distances of the window's samples are the law's float64 operations in its order (float64 sums of
  float64 absolute differences in the drawn order: exact IEEE operations, the same on any device).
- **exactness check**: every sample outside the window is at least its gap along that dimension
  away (an L1 distance is at least any of its terms, and float64 rounding keeps that order), so
  when the ``k``-th distance in the window is *strictly below* the gap on both sides, the window
  holds the exact ``k`` best, ties included. Rows that fail are searched over all ``N`` samples
  (the fallback, in chunks); a search's window doubles for the next batches when more than
  :data:`FALLBACK_RATE` of a batch fell back. ``topk`` gives the ``k`` smallest distances sorted;
  when ties straddle the ``k``-th, the lowest sample indices among them are taken (the law's
  order).
- **penalties** in integer fixed point on the device: weights ``law_power(d_min / d, exp)`` (IEEE
  products only for a whole exponent: the same bits as numpy), normalised by a sum computed with
  numpy's own pairwise summation order (:func:`pairwise_sum`), ``round`` (half to even, as
  ``np.rint``) of ``w / sum * 2**shift`` to int64 and ``index_add_`` (integer sums: exact and
  independent of the order). For a fractional exponent, whose ``pow`` no device reproduces to the
  bit, the ``k`` best distances of the batch go to numpy for the weights and back (one round trip
  per batch).

Nothing goes back to the host per batch but two pairs of counts (rows that fell back, rows with
straddling ties: one read per search, which sizes its fallback) and the progress; the
accumulators come back once per call.

Memory: ``12 N D`` bytes for the columns and their sorted copy, plus about ``48 W`` bytes per point
of a batch for each search's window, the batch sized to a budget: on a GPU a quarter of its free
memory (at most :data:`GPU_BATCH_BYTES`), on the CPU :data:`CPU_BATCH_BYTES`; at most
:data:`MAX_BATCH` points. Nothing of size ``N`` per point is allocated except for the fallback
rows.
"""

import math
from dataclasses import dataclass

import numpy as np

from .law import integral_exponent, law_power, power_by_squaring

#: Largest number of points per batch.
MAX_BATCH = 1 << 16
#: Bytes of per-batch work arrays on the CPU, and at most on a GPU (there a quarter of the free
#: memory when that is less).
CPU_BATCH_BYTES = 256 << 20
GPU_BATCH_BYTES = 8 << 30
#: Bytes per window position and point of a batch (indices, distances, gathers, top-k).
_BYTES_PER_SLOT = 48
#: First windows, in sorted positions: ``WINDOW_SCALE * sqrt(k * N)`` (a strip holding about the
#: ``k`` nearest along two dimensions), at least :data:`MIN_WINDOW` and ``k + 1``.
WINDOW_SCALE = 3.0
MIN_WINDOW = 256
#: Fraction of a batch's rows falling back to the full search above which the window doubles.
FALLBACK_RATE = 0.02


@dataclass(frozen=True)
class TorchKnobs:
    """Tuning knobs of the torch engine (the time and memory only, never the integers)."""

    #: Points per batch; ``None`` sizes batches from the memory budget.
    batch: int = None
    #: First window of both searches, in sorted positions (at least ``k + 1`` for redundancy);
    #: ``None`` means ``WINDOW_SCALE * sqrt(k * N)`` (at least :data:`MIN_WINDOW`).
    window: int = None
    #: Bytes of per-batch work arrays; ``None``: :data:`CPU_BATCH_BYTES` on the CPU, a quarter of
    #: the free memory (at most :data:`GPU_BATCH_BYTES`) on a GPU.
    batch_bytes: int = None


def require_torch():
    """Import torch, or raise an ImportError that says how to get it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "engine='torch' needs PyTorch (pip install torch); engine='numpy' needs nothing extra"
        ) from exc
    return torch


def accumulate_torch(
    X,
    dims,
    coords,
    coverage,
    penalty,
    *,
    k,
    exp,
    shift,
    progress=None,
    device="cpu",
    batch=None,
    window=None,
    batch_bytes=None,
):
    """Apply the score law to a block of points with torch; same contract and results as
    :func:`zcore.core.law.accumulate_numpy`.

    Prepares ``X`` on the device for this call only; :func:`prepare_torch` prepares it once for
    many calls.

    Parameters
    ----------
    X, dims, coords, coverage, penalty, k, exp, shift, progress
        As for :func:`zcore.core.law.accumulate_numpy`.
    device : str or torch.device, default="cpu"
    batch, window, batch_bytes
        As the fields of :class:`TorchKnobs`. Change the time, never the result.
    """
    knobs = TorchKnobs(batch=batch, window=window, batch_bytes=batch_bytes)
    prepared = prepare_torch(X, device=device, knobs=knobs)
    prepared.accumulate(
        X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, progress=progress
    )


def prepare_torch(X, *, device="cpu", knobs=None):
    """``X`` on the torch ``device`` (columns and their sorted copies): a :class:`TorchPrepared`
    whose ``accumulate`` applies the law to blocks of points."""
    return TorchPrepared(X, device=device, knobs=knobs or TorchKnobs())


class TorchPrepared:
    """``X`` on the device: its columns (``cols``, ``D x N`` float32, flattened), each sorted
    (``vals`` float32 and the sample order ``order`` int32, flattened the same way)."""

    def __init__(self, X, *, device="cpu", knobs=None):
        torch = require_torch()
        self.torch = torch
        self.dev = torch.device(device)
        self.knobs = knobs or TorchKnobs()
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.n, self.d = X.shape
        XT = torch.from_numpy(X).to(self.dev).T.contiguous()
        vals, order = torch.sort(XT, dim=1)
        self.XT = XT
        self.cols = XT.view(-1)
        self.vals = vals.reshape(-1)
        self.order = order.to(torch.int32).reshape(-1)
        del order

    def budget(self):
        """Bytes of per-batch work arrays (see :class:`TorchKnobs`)."""
        if self.knobs.batch_bytes is not None:
            return int(self.knobs.batch_bytes)
        if self.dev.type == "cuda":
            free = self.torch.cuda.mem_get_info(self.dev)[0]
            return int(min(GPU_BATCH_BYTES, free // 4))
        return CPU_BATCH_BYTES

    def first_window(self, k, floor):
        """The first window of a search for ``k`` neighbours (at least ``floor`` positions)."""
        w = self.knobs.window
        if w is None:
            w = max(MIN_WINDOW, int(WINDOW_SCALE * math.sqrt(k * self.n)))
        return int(min(self.n, max(floor, w)))

    def accumulate(self, X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
        """Add the coverage and fixed-point penalties of the points ``dims``/``coords``; the
        parameters are those of :func:`zcore.core.law.accumulate_numpy` (``X`` is the prepared
        matrix)."""
        torch = self.torch
        n = self.n
        n_points = dims.shape[0]
        if n_points == 0:
            return
        k = int(min(k, n - 1))
        dev = self.dev
        dims_t = torch.from_numpy(np.ascontiguousarray(dims, dtype=np.int64)).to(dev)
        coords_t = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float64)).to(dev)
        base_all = dims_t * n  # offsets of the point's columns in the flattened arrays
        law = _Penalties(torch, dev, n, k, exp, shift)
        cov = torch.zeros(n, dtype=torch.int64, device=dev)
        pen = torch.zeros(n, dtype=torch.int64, device=dev)
        budget = self.budget()
        floors = [1, k + 1]  # coverage, redundancy (which excludes the covering sample)
        windows = [self.first_window(1, floors[0]), self.first_window(k, floors[1])]

        b0 = 0
        while b0 < n_points:
            m = self.knobs.batch or budget // (_BYTES_PER_SLOT * max(windows))
            m = int(max(1, min(MAX_BATCH, m)))
            base = base_all[b0 : b0 + m]
            q = coords_t[b0 : b0 + m]
            m = base.shape[0]

            _, ic, bad_c = self._search(base, q, None, 1, windows[0], budget)
            winners = ic[:, 0]
            cov.index_add_(0, winners, torch.ones_like(winners))
            center = torch.stack(
                [self.cols[base[:, j] + winners] for j in range(base.shape[1])], dim=1
            ).to(torch.float64)  # (m, s): the covering sample's own coordinates
            dr, ir, bad_r = self._search(base, center, winners, k, windows[1], budget)
            law.add(pen, dr, ir)

            for w, bad in enumerate((bad_c, bad_r)):  # size the windows of the next batches
                if bad > FALLBACK_RATE * m:
                    windows[w] = min(n, 2 * windows[w])
                elif m >= 64 and bad < FALLBACK_RATE * m / 4:
                    windows[w] = max(floors[w], (4 * windows[w]) // 5)
            if progress is not None:
                progress(m)
            b0 += m

        coverage += cov.cpu().numpy()
        penalty += pen.cpu().numpy()

    def _lower_bound(self, base, q):
        """Per (row, dimension), the first sorted position whose value is ``>= q`` (``0..N``):
        a branch-free binary search, ``ceil(log2 N)`` gathers."""
        torch = self.torch
        pos = torch.zeros_like(base)
        length = self.n
        while length > 1:
            half = length // 2
            go = self.vals[base + pos + half].to(torch.float64) < q
            pos = torch.where(go, pos + half, pos)
            length -= half
        return pos + (self.vals[base + pos].to(torch.float64) < q).to(pos.dtype)

    def _l1(self, dims, q, idx, t, v_t):
        """The law's L1 distances of the samples ``idx`` (``(m, w)``) to ``q`` (``(m, s)``) over
        the dimensions ``dims`` (``(m, s)``), float64, in the drawn order. ``v_t`` holds the
        samples' values along each row's scan dimension ``t`` (read from the sorted column):
        with one or two dimensions, whose sums do not depend on the order (IEEE addition is
        commutative), it saves a gather."""
        torch = self.torch
        s = dims.shape[1]
        if s == 1:
            return v_t.to(torch.float64).sub_(q).abs_()
        if s == 2:
            rows = torch.arange(q.shape[0], device=q.device)
            other = 1 - t
            dist = v_t.to(torch.float64).sub_(q[rows, t][:, None]).abs_()
            v = self.XT[dims[rows, other][:, None], idx].to(torch.float64)
            return dist.add_(v.sub_(q[rows, other][:, None]).abs_())
        dist = None
        for j in range(s):
            v = self.XT[dims[:, j : j + 1], idx].to(torch.float64)
            term = v.sub_(q[:, j : j + 1]).abs_()
            dist = term if dist is None else dist.add_(term)
        return dist

    def _search(self, base, q, exclude, k, window, budget):
        """The ``k`` best samples of each row by ``(distance, index)`` to ``q``, other than
        ``exclude`` (``(m,)`` or ``None``): distances sorted ``(m, k)`` float64, their sample
        indices ``(m, k)`` int64, and the number of rows that needed the full search."""
        torch = self.torch
        n = self.n
        if window >= n:
            d, i = self._dense(base, q, exclude, k, budget)
            return d, i, 0
        m = q.shape[0]
        dev = q.device
        rows = torch.arange(m, device=dev)
        pos = self._lower_bound(base, q)
        lo = (pos - window // 2).clamp(0, n - window)
        hi = lo + window
        inf = torch.full_like(q, math.inf)
        # gaps to the nearest samples outside the window on each side (positions below ``pos``
        # hold values below q, those from ``pos`` on values at least q)
        left = torch.where(lo > 0, q - self.vals[base + (lo - 1).clamp(min=0)].double(), inf)
        right = torch.where(hi < n, self.vals[base + hi.clamp(max=n - 1)].double() - q, inf)
        gap, t = torch.minimum(left, right).max(dim=1)  # the dimension with the widest margin
        start = base[rows, t] + lo[rows, t]  # the window: rows of sliding views
        idx = self.order.unfold(0, window, 1)[start].to(torch.int64)
        dist = self._l1(base // n, q, idx, t, self.vals.unfold(0, window, 1)[start])
        if exclude is not None:
            dist.masked_fill_(idx == exclude[:, None], math.inf)
        d, i, straddle = _topk(torch, dist, idx, k)
        bad = ~(d[:, -1] < gap)  # some sample outside might be as near as the k-th
        fix = straddle & ~bad
        n_bad, n_fix = (int(v) for v in torch.stack([bad.sum(), fix.sum()]).tolist())
        if n_fix:
            sel = torch.nonzero(fix)[:, 0]
            i[sel] = _lowest_ties(torch, dist[sel], idx[sel], d[sel], i[sel], k)
        del dist, idx
        if n_bad:
            sel = torch.nonzero(bad)[:, 0]
            ex = None if exclude is None else exclude[sel]
            d[sel], i[sel] = self._dense(base[sel], q[sel], ex, k, budget)
        return d, i, n_bad

    def _dense(self, base, q, exclude, k, budget):
        """:meth:`_search` over all ``N`` samples, in chunks of rows that fit ``budget``."""
        torch = self.torch
        n = self.n
        m, s = q.shape
        dev = q.device
        out_d = torch.empty((m, k), dtype=torch.float64, device=dev)
        out_i = torch.empty((m, k), dtype=torch.int64, device=dev)
        step = int(max(1, budget // (32 * n)))
        for r0 in range(0, m, step):
            b = base[r0 : r0 + step]
            qq = q[r0 : r0 + step]
            r = b.shape[0]
            dist = None
            for j in range(s):
                term = self.XT[b[:, j] // n].to(torch.float64).sub_(qq[:, j : j + 1]).abs_()
                dist = term if dist is None else dist.add_(term)
            if exclude is not None:
                dist[torch.arange(r, device=dev), exclude[r0 : r0 + step]] = math.inf
            idx = torch.arange(n, device=dev).expand(r, n)
            d, i, straddle = _topk(torch, dist, idx, k)
            if bool(straddle.any()):
                sel = torch.nonzero(straddle)[:, 0]
                i[sel] = _lowest_ties(torch, dist[sel], idx[sel], d[sel], i[sel], k)
            out_d[r0 : r0 + r] = d
            out_i[r0 : r0 + r] = i
        return out_d, out_i


def _topk(torch, dist, idx, k):
    """Per row, the ``k`` smallest distances (sorted ascending), their sample indices
    ``idx[r, j]`` (among equal distances in any order), and whether ties straddle the ``k``-th
    (then :func:`_lowest_ties` picks the indices)."""
    d, pos = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    i = torch.gather(idx, 1, pos)
    kth = d[:, -1:]
    straddle = (dist == kth).sum(dim=1) != (d == kth).sum(dim=1)
    return d, i, straddle


def _lowest_ties(torch, dist, idx, d, i, k):
    """The indices ``i`` of :func:`_topk`'s rows where ties straddle the ``k``-th distance, the
    ties given the lowest sample indices among them (the law's order)."""
    kth = d[:, -1:]
    n_in = (d == kth).sum(dim=1)
    big = torch.iinfo(torch.int64).max
    keys = torch.where(dist == kth, idx, big)
    lowest = torch.topk(keys, k, dim=1, largest=False, sorted=True).values
    # the last n_in[r] slots of row r hold the ties (d sorted): give them the lowest indices
    first_tie = (k - n_in)[:, None]
    slot = torch.arange(k, device=dist.device)[None, :]
    fixed = torch.gather(lowest, 1, (slot - first_tie).clamp(min=0))
    return torch.where(slot >= first_tie, fixed, i)


class _Penalties:
    """Fixed-point penalties of a batch's ``k`` best, added on the device."""

    def __init__(self, torch, dev, n, k, exp, shift):
        self.torch = torch
        self.dev = dev
        self.k = k
        self.exp = exp
        self.on_device = integral_exponent(exp) is not None
        self.scale = float(np.ldexp(1.0, shift))
        self.one = int(np.int64(1) << shift)
        self.n = n

    def add(self, pen, dist, idx):
        torch = self.torch
        dmin = dist[:, :1]
        zero = dmin[:, 0] == 0.0
        # rows whose nearest is at distance 0: only the lowest index at 0 gets the whole penalty
        # (the zeros are all within the k best, so among their indices)
        big = torch.iinfo(torch.int64).max
        zidx = torch.where(dist == 0.0, idx, big).min(dim=1).values
        pen.index_add_(
            0, torch.where(zero, zidx, 0), torch.where(zero, self.one, 0).to(torch.int64)
        )
        ratio = torch.where(zero[:, None], 1.0, dmin / torch.where(zero[:, None], 1.0, dist))
        if self.on_device:
            w = law_power_torch(ratio, self.exp)
            total = pairwise_sum(w)
        else:  # a fractional exponent: numpy's pow, on the host
            r = ratio.cpu().numpy()
            w_np = law_power(r, self.exp)
            total = torch.from_numpy(w_np.sum(axis=1)).to(self.dev)
            w = torch.from_numpy(w_np).to(self.dev)
        fixed = torch.round((w / total[:, None]) * self.scale).to(torch.int64)
        fixed = torch.where(zero[:, None], 0, fixed)
        pen.index_add_(0, idx.reshape(-1), fixed.reshape(-1))


def law_power_torch(x, exp):
    """:func:`zcore.core.law.law_power` for a whole exponent, on a torch tensor: the same
    squarings and products in the same order, so the same bits."""
    e = integral_exponent(exp)
    if e is None:
        raise ValueError(f"law_power_torch needs a whole exponent, not {exp!r}")
    if e == 0:
        return x.new_ones(x.shape)
    return power_by_squaring(x, e)


#: Block size of numpy's pairwise summation (``PW_BLOCKSIZE``), and its unrolling.
_PW_BLOCK = 128
_PW_UNROLL = 8


def pairwise_sum(w):
    """Row sums of ``w`` (``(m, n)`` float64) in numpy's own order of additions (its pairwise
    summation: ``np.add.reduce`` over a contiguous row), so the same bits as ``w.sum(axis=1)`` in
    numpy: rows of fewer than 8 summed in order; up to 128, eight strided partial sums combined
    as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))`` and the rest added in order; longer
    rows split in two at half the length rounded down to a multiple of 8, each half summed so."""
    n = w.shape[1]
    if n < _PW_UNROLL:
        res = w[:, 0] + 0.0  # numpy starts from 0.0: 0.0 + a == a
        for i in range(1, n):
            res = res + w[:, i]
        return res
    if n <= _PW_BLOCK:
        r = w[:, :_PW_UNROLL].clone()
        i = _PW_UNROLL
        stop = n - n % _PW_UNROLL
        while i < stop:
            r += w[:, i : i + _PW_UNROLL]
            i += _PW_UNROLL
        res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + (
            (r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7])
        )
        for j in range(i, n):
            res = res + w[:, j]
        return res
    n2 = n // 2
    n2 -= n2 % _PW_UNROLL
    return pairwise_sum(w[:, :n2]) + pairwise_sum(w[:, n2:])
