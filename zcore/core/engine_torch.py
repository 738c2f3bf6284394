"""Torch scoring engine: the law of :mod:`zcore.core.engine` on torch tensors, batched.

Same contract and same results as :func:`zcore.core.engine.accumulate_numpy` (identical coverage
and penalty integers), on ``device="cpu"`` or a GPU (``"cuda"``). Torch is imported only when this
engine runs, so the core never needs it.

Per batch of points: the point's columns of ``X`` (float64, gathered from a transposed copy kept on
the device), dense L1 distances to every sample, the covering sample as the lowest index at the
minimum, then the ``k`` nearest other samples of it by ``(distance, index)``: ``topk`` gives the
``k``-th distance ``t``; the neighbours are every sample below ``t`` plus the lowest indices among
those equal to ``t`` (``topk`` alone does not order ties by index). Distances are float64 sums of
float64 absolute differences in the drawn order, exact IEEE operations on any device. The ``k``
distances go back to the CPU, where the weights are computed by numpy with the expressions of
:func:`~zcore.core.engine.penalty_weights` and :func:`~zcore.core.engine.to_fixed` (so they match
the numpy engine to the bit), and added as integers.

Memory: the transposed float32 copy of ``X`` on the device, plus about ``N * (8 * sample_dim + 33)``
bytes per point of a batch; the batch is sized to :data:`BATCH_BYTES` (on a GPU, to a quarter of
its free memory if that is more), at most :data:`MAX_BATCH` points.
"""

import numpy as np

from .engine import to_fixed

#: Largest number of points per batch.
MAX_BATCH = 256
#: Device bytes of per-batch work arrays (distances, columns, masks) to aim for.
BATCH_BYTES = 1 << 30


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
    X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None, device="cpu", batch=None
):
    """Apply the score law to a block of points with torch; same contract and results as
    :func:`zcore.core.engine.accumulate_numpy`.

    Parameters
    ----------
    X, dims, coords, coverage, penalty, k, exp, shift, progress
        As for :func:`zcore.core.engine.accumulate_numpy`.
    device : str or torch.device, default="cpu"
    batch : int, optional
        Points per batch; by default sized from :data:`BATCH_BYTES`.
    """
    torch = require_torch()
    n = X.shape[0]
    n_points, s = dims.shape
    if n_points == 0:
        return
    k = int(min(k, n - 1))
    one = np.int64(1) << shift
    dev = torch.device(device)
    XT = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(dev).T.contiguous()
    dims_t = torch.from_numpy(np.ascontiguousarray(dims, dtype=np.int64)).to(dev)
    coords_t = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float64)).to(dev)
    if batch is None:
        budget = BATCH_BYTES
        if dev.type == "cuda":  # a quarter of the free device memory, at least BATCH_BYTES
            budget = max(budget, torch.cuda.mem_get_info(dev)[0] // 4)
        batch = budget // max(1, n * (8 * s + 33))
    batch = int(max(1, min(MAX_BATCH, batch)))
    arange = torch.arange(n, device=dev)

    for b0 in range(0, n_points, batch):
        d_b = dims_t[b0 : b0 + batch]
        q_b = coords_t[b0 : b0 + batch]
        m = d_b.shape[0]
        cols = XT[d_b.reshape(-1)].reshape(m, s, n).to(torch.float64)

        dist = _l1(cols, q_b)
        best = dist.min(dim=1, keepdim=True).values
        winners = torch.where(dist == best, arange, n).min(dim=1).values
        rows = torch.arange(m, device=dev)

        center = cols[rows, :, winners]  # (m, s): the covering sample's own coordinates
        dist = _l1(cols, center)
        del cols
        dist[rows, winners] = torch.inf
        idx, nd = _k_smallest(torch, dist, k)
        del dist

        winners = winners.cpu().numpy()
        np.add.at(coverage, winners, 1)
        _add_penalties(idx.cpu().numpy(), nd.cpu().numpy(), penalty, exp, shift, one)
        if progress is not None:
            progress(m)


def _l1(cols, ref):
    """``sum_j |cols[:, j, :] - ref[:, j]|`` in the drawn order, float64: shape ``(m, n)``."""
    dist = (cols[:, 0, :] - ref[:, 0:1]).abs()
    for j in range(1, cols.shape[1]):
        dist += (cols[:, j, :] - ref[:, j : j + 1]).abs()
    return dist


def _k_smallest(torch, dist, k):
    """Per row, the ``k`` smallest by ``(distance, index)``: indices ascending, and distances."""
    t = torch.topk(dist, k, dim=1, largest=False, sorted=False).values.max(dim=1, keepdim=True)
    t = t.values
    below = dist < t
    ties = dist == t
    need = k - below.sum(dim=1, keepdim=True)
    if bool((ties.sum(dim=1, keepdim=True) != need).any()):
        ties &= torch.cumsum(ties, dim=1) <= need  # the lowest indices among the ties
    mask = below | ties
    idx = torch.nonzero(mask)[:, 1].reshape(dist.shape[0], k)  # row-major: ascending per row
    return idx, dist.gather(1, idx)


def _add_penalties(idx, nd, penalty, exp, shift, one):
    """Order each row by ``(distance, index)`` and add its fixed-point penalties (numpy)."""
    order = np.argsort(nd, axis=1, kind="stable")  # indices were ascending: ties stay by index
    nd = np.take_along_axis(nd, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    zero = nd[:, 0] == 0.0
    if zero.any():
        np.add.at(penalty, idx[zero, 0], one)
    live = ~zero
    if live.any():
        d = np.ascontiguousarray(nd[live])
        w = (d[:, :1] / d) ** exp
        np.add.at(penalty, idx[live], to_fixed(w / w.sum(axis=1, keepdims=True), shift))
