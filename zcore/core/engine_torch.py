"""Torch scoring engine: the law of :mod:`zcore.core.law` on a torch device, batched.

Same contract and same integers as :func:`zcore.core.law.accumulate_numpy` on
``device="cpu"`` or a GPU (``"cuda"``); the CPU path is the same code, which is how the tests prove
the integers. Torch is imported only when this engine runs, so the core never needs it.

On the device, once per call: the columns of ``X`` (``D x N`` float32, contiguous), each column
sorted (values float32 and sample order int32), and the coverage and penalty accumulators (int64).
Per batch of points, all on the device:

- **coverage**: float64 L1 distances of all ``N`` samples to each point (float64 sums of float64
  absolute differences in the drawn order: exact IEEE operations, the same on any device), the
  first index at the minimum (``argmin``), ``index_add_`` of ones;
- **redundancy**: the ``k`` nearest other samples of the covering sample ``c`` are searched in a
  *window* of ``W`` consecutive positions of one of the point's dimensions, pre-sorted, around ``c``'s
  value (the dimension where that window spans the widest range of values). Exactness check: every
  sample outside the window is at least its gap along that dimension away (an L1 distance is at
  least any of its terms, and float64 rounding keeps that order), so when the ``k``-th distance in
  the window is *below* both gaps the window holds the exact ``k`` best, ties included. Rows that
  fail the check are searched over all ``N`` samples (the fallback); ``W`` doubles for the next
  batches when more than :data:`FALLBACK_RATE` of a batch fell back. ``topk`` gives the ``k``
  smallest distances sorted; when ties straddle the ``k``-th, the lowest sample indices among them
  are taken (the law's order);
- **penalties** in integer fixed point on the device: weights ``law_power(d_min / d, exp)`` (IEEE
  products only for a whole exponent: the same bits as numpy), normalised by a sum computed with
  numpy's own pairwise summation order (:func:`pairwise_sum`), ``round`` (half to even, as
  ``np.rint``) of ``w / sum * 2**shift`` to int64 and ``index_add_`` (integer sums: exact and
  independent of the order). For a fractional exponent, whose ``pow`` no device reproduces to the
  bit, the ``k`` best distances of the batch go to numpy for the weights and back (one round trip
  per batch).

Nothing else goes back to the host per batch but one small tensor of counts (rows that fell back,
rows with straddling ties), read to size the fallback; the accumulators come back once at the end.

Memory: ``12 N D`` bytes for the columns and their sorted copy, plus about ``N * (12 * s + 16)``
bytes per point of a batch (its float64 columns and distances), sized to :data:`BATCH_BYTES` (on a
GPU, to a quarter of its free memory if that is more), at most :data:`MAX_BATCH` points.
"""

from dataclasses import dataclass

import numpy as np

from .law import integral_exponent, law_power, power_by_squaring

#: Largest number of points per batch.
MAX_BATCH = 1024
#: Device bytes of per-batch work arrays (distances, columns, masks) to aim for.
BATCH_BYTES = 1 << 30
#: First window, in sorted positions, as a multiple of ``k`` (at least :data:`MIN_WINDOW`).
WINDOW_K = 16
MIN_WINDOW = 4096
#: Fraction of a batch's rows falling back to the full search above which the window doubles.
FALLBACK_RATE = 0.02


@dataclass(frozen=True)
class TorchKnobs:
    """Tuning knobs of the torch engine (the time only, never the integers)."""

    #: Points per batch; ``None`` sizes batches from :data:`BATCH_BYTES`.
    batch: int = None
    #: First window of the redundancy search, in sorted positions (``>= k + 1``); ``None`` means
    #: ``max(MIN_WINDOW, WINDOW_K * k)``.
    window: int = None


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
):
    """Apply the score law to a block of points with torch; same contract and results as
    :func:`zcore.core.law.accumulate_numpy`.

    Parameters
    ----------
    X, dims, coords, coverage, penalty, k, exp, shift, progress
        As for :func:`zcore.core.law.accumulate_numpy`.
    device : str or torch.device, default="cpu"
    batch : int, optional
        Points per batch; by default sized from :data:`BATCH_BYTES`.
    window : int, optional
        First window of the redundancy search, in sorted positions (``>= k + 1``); by default
        ``max(MIN_WINDOW, WINDOW_K * k)``. Changes the time, never the result.
    """
    torch = require_torch()
    n = X.shape[0]
    n_points, s = dims.shape
    if n_points == 0:
        return
    k = int(min(k, n - 1))
    dev = torch.device(device)
    state = _DeviceState(torch, X, dev)
    dims_t = torch.from_numpy(np.ascontiguousarray(dims, dtype=np.int64)).to(dev)
    coords_t = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float64)).to(dev)
    if batch is None:
        budget = BATCH_BYTES
        if dev.type == "cuda":  # a quarter of the free device memory, at least BATCH_BYTES
            budget = max(budget, torch.cuda.mem_get_info(dev)[0] // 4)
        batch = budget // max(1, n * (12 * s + 16))
    batch = int(max(1, min(MAX_BATCH, batch)))
    if window is None:
        window = max(MIN_WINDOW, WINDOW_K * k)
    window = int(min(n, max(k + 1, window)))
    law = _Penalties(torch, dev, n, k, exp, shift)
    cov = torch.zeros(n, dtype=torch.int64, device=dev)
    pen = torch.zeros(n, dtype=torch.int64, device=dev)

    for b0 in range(0, n_points, batch):
        d_b = dims_t[b0 : b0 + batch]
        q_b = coords_t[b0 : b0 + batch]
        m = d_b.shape[0]
        cols = state.XT[d_b.reshape(-1)].reshape(m, s, n).to(torch.float64)
        winners = _l1(cols, q_b).argmin(dim=1)  # first index at the minimum
        cov.index_add_(0, winners, torch.ones_like(winners))
        rows = torch.arange(m, device=dev)
        center = cols[rows, :, winners]  # (m, s): the covering sample's own coordinates

        dist, idx, fell_back = _k_best(torch, state, cols, d_b, center, winners, k, window)
        law.add(pen, dist, idx)
        if fell_back > FALLBACK_RATE * m and window < n:
            window = min(n, 2 * window)
        del cols
        if progress is not None:
            progress(m)

    coverage += cov.cpu().numpy()
    penalty += pen.cpu().numpy()


class _DeviceState:
    """``X`` on the device: columns (``XT``, ``D x N`` float32), each sorted (``vals``, and the
    sample order ``order``, int32)."""

    def __init__(self, torch, X, dev):
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.n = X.shape[0]
        self.XT = torch.from_numpy(X).to(dev).T.contiguous()
        vals, order = torch.sort(self.XT, dim=1)
        self.vals = vals
        self.order = order.to(torch.int32)
        del order


def _l1(cols, ref):
    """``sum_j |cols[:, j, :] - ref[:, j]|`` in the drawn order, float64: shape ``(m, n)``."""
    dist = (cols[:, 0, :] - ref[:, 0:1]).abs()
    for j in range(1, cols.shape[1]):
        dist += (cols[:, j, :] - ref[:, j : j + 1]).abs()
    return dist


def _l1_at(cols, ref, idx, torch):
    """The distances of :func:`_l1` at the sample indices ``idx`` (shape ``(m, w)``) only."""
    dist = (torch.gather(cols[:, 0, :], 1, idx) - ref[:, 0:1]).abs()
    for j in range(1, cols.shape[1]):
        dist += (torch.gather(cols[:, j, :], 1, idx) - ref[:, j : j + 1]).abs()
    return dist


def _k_best(torch, state, cols, dims_b, center, winners, k, window):
    """The ``k`` best other samples of each center by ``(distance, index)``: distances sorted
    ascending ``(m, k)`` float64, their sample indices ``(m, k)`` int64 (among equal distances in
    any order), and the number of rows that needed the full search."""
    n = state.n
    m, s = center.shape
    rows = torch.arange(m, device=center.device)
    if window >= n:  # the window is everything: no check needed
        dist = _l1(cols, center)
        dist[rows, winners] = torch.inf
        idx = torch.arange(n, device=center.device).expand(m, n)
        d, i = _topk_ties(torch, dist, idx, k)
        return d, i, 0

    # the scan dimension: where a window around the center spans the widest range of values
    pos = (cols < center[:, :, None]).sum(dim=2)  # (m, s): first sorted position of the value
    half = window // 2
    lo = (pos - half).clamp(0, n - window)
    spread = state.vals[dims_b, (lo + window - 1)] - state.vals[dims_b, lo]
    t = spread.argmax(dim=1)  # (m,)
    dim_t = dims_b[rows, t]
    lo_t = lo[rows, t]
    flat = (dim_t * n + lo_t)[:, None] + torch.arange(window, device=center.device)
    idx = state.order.view(-1)[flat].to(torch.int64)  # (m, window) sample indices
    dist = _l1_at(cols, center, idx, torch)
    dist[idx == winners[:, None]] = torch.inf
    d, i = _topk_ties(torch, dist, idx, k)

    # exactness: the k-th distance below the gap to the first sample outside, on both sides
    q_t = center[rows, t]
    flat_vals = state.vals.view(-1)
    inf = torch.full_like(q_t, torch.inf)
    left = torch.where(
        lo_t > 0, (q_t - flat_vals[(dim_t * n + lo_t - 1).clamp(min=0)].double()).abs(), inf
    )
    hi_t = lo_t + window
    right = torch.where(
        hi_t < n,
        (flat_vals[(dim_t * n + hi_t).clamp(max=dim_t * n + n - 1)].double() - q_t).abs(),
        inf,
    )
    bad = ~(d[:, -1] < torch.minimum(left, right))
    n_bad = int(bad.sum())  # the one read per batch: how many rows need the full search
    if n_bad:
        sel = torch.nonzero(bad)[:, 0]
        full = _l1(cols[sel], center[sel])
        full[torch.arange(sel.numel(), device=center.device), winners[sel]] = torch.inf
        all_idx = torch.arange(n, device=center.device).expand(sel.numel(), n)
        d[sel], i[sel] = _topk_ties(torch, full, all_idx, k)
    return d, i, n_bad


def _topk_ties(torch, dist, idx, k):
    """Per row, the ``k`` smallest distances (sorted ascending) and their sample indices
    ``idx[r, j]``, where ties straddling the ``k``-th take the lowest sample indices."""
    d, pos = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    i = torch.gather(idx, 1, pos)
    kth = d[:, -1:]
    n_eq = (dist == kth).sum(dim=1)
    n_in = (d == kth).sum(dim=1)
    straddle = n_eq != n_in
    if bool(straddle.any()):
        sel = torch.nonzero(straddle)[:, 0]
        big = torch.iinfo(torch.int64).max
        keys = torch.where(dist[sel] == kth[sel], idx[sel], big)
        lowest = torch.sort(keys, dim=1).values[:, :k]  # ascending: ties' indices, then big
        # the last n_in[r] slots of row r hold the ties (d sorted): give them the lowest indices
        first_tie = (k - n_in[sel])[:, None]
        slot = torch.arange(k, device=dist.device)[None, :]
        take = (slot - first_tie).clamp(min=0)
        fixed = torch.gather(lowest, 1, take)
        i[sel] = torch.where(slot >= first_tie, fixed, i[sel])
    return d, i


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
