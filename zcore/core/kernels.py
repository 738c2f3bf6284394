"""Compiled building blocks shared by the compiled engine's kernels and the Dask merger.

- :func:`jit` / :func:`jit_inline`: numba's ``njit`` with zcore's cache folder (a no-op without
  numba, so that every module still imports);
- :func:`gather`: columns of a row-major matrix made contiguous;
- :func:`compact`: the exact ``k`` best of a candidate buffer by ``(distance, index)``;
- :func:`apply_penalties` (with its :class:`Workspace`): the fixed-point penalties of a batch of
  candidate lists, bit for bit as :func:`zcore.core.law.penalty_weights` and
  :func:`zcore.core.law.to_fixed` compute them. Used by the windowed and the dense kernels of
  :mod:`zcore.core.engine_numba` / :mod:`zcore.core.engine_dense` and by the Dask driver's merge.
"""

import os

import numpy as np

from .law import integral_exponent, law_power

try:  # numba is optional: without it the module still imports and AVAILABLE is False
    import numba
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

#: Whether the compiled kernels can run (numba importable).
AVAILABLE = numba is not None

#: Columns gathered per pass over the rows of ``X``.
GATHER_CHUNK = 16


def _cache_dir():
    """Where compiled kernels are cached, one folder per module name (or ``None``: no cache).

    numba's cache pickles a reference to the module that compiled a kernel, so a cache written
    under one module name fails to load under another. The plugin imports this package as
    ``zcore`` only (see the plugin's ``__init__.py``); keying the folder by ``__name__`` stays as
    a guard for a copy imported under another name.
    """
    tag = "".join(c if c.isalnum() or c in "._-" else "_" for c in __name__)
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    for base in (here, os.path.join(os.path.expanduser("~"), ".cache", "zcore")):
        path = os.path.join(base, "numba", tag)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return None


_CACHE_DIR = _cache_dir() if numba is not None else None


def compiled_cache_ready():
    """Whether compiled kernels are in the cache already (else the first run compiles them:
    about half a minute, once per installation)."""
    if numba is None or _CACHE_DIR is None:
        return numba is None
    try:
        return any(name.endswith(".nbi") for name in os.listdir(_CACHE_DIR))
    except OSError:
        return False


def _njit(func, **options):
    if numba is None:
        return func
    if _CACHE_DIR is None:
        return numba.njit(cache=False, nogil=True, **options)(func)
    # numba picks a cache folder when a function is decorated: point it at ours for that moment.
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = _CACHE_DIR
    try:
        return numba.njit(cache=True, nogil=True, **options)(func)
    finally:
        numba.config.CACHE_DIR = saved


def jit(func):
    """``numba.njit`` (nogil, cached in zcore's folder); the plain function without numba."""
    return _njit(func)


def jit_inline(func):
    """For small helpers called in hot loops: inlined in numba's IR, so that passing arrays
    costs no reference counting (atomic operations) per call."""
    return _njit(func, inline="always")


@jit
def _gather_columns(X, cidx, out, row0):
    """``out[row0 + j, i] = X[i, cidx[j]]``: columns of row-major ``X`` made contiguous."""
    n = X.shape[0]
    nc = cidx.shape[0]
    rows = 256
    tmp = np.empty((nc, rows), np.float32)
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        for i in range(i0, i1):
            for j in range(nc):
                tmp[j, i - i0] = X[i, cidx[j]]
        for j in range(nc):
            dst = out[row0 + j]
            for i in range(i0, i1):
                dst[i] = tmp[j, i - i0]


def gather(X, cidx, out, row0):
    for j0 in range(0, cidx.size, GATHER_CHUNK):
        part = np.ascontiguousarray(cidx[j0 : j0 + GATHER_CHUNK], dtype=np.int64)
        _gather_columns(X, part, out, row0 + j0)


@jit
def select(a, size, kth):
    """Value of rank ``kth`` (0-based) among ``a[:size]``; reorders ``a[:size]``."""
    lo = 0
    hi = size - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if kth < lt:
            hi = lt - 1
        elif kth > gt:
            lo = gt + 1
        else:
            return pivot
    return a[lo]


@jit
def compact(bd, bi, size, k, sd, si):
    """Keep exactly the ``k`` best of ``bd/bi[:size]`` by ``(distance, index)``.

    Returns the new size (``k``) and the ``k``-th distance (the new admission threshold).
    """
    sd[:size] = bd[:size]
    t = select(sd, size, k - 1)
    w = 0
    nt = 0
    for j in range(size):
        d = bd[j]
        if d < t:
            bd[w] = d
            bi[w] = bi[j]
            w += 1
        elif d == t:
            si[nt] = bi[j]
            nt += 1
    need = k - w
    if nt > need:
        ti = select(si, nt, need - 1)
        for j in range(nt):
            if si[j] <= ti:
                bd[w] = t
                bi[w] = si[j]
                w += 1
    else:
        for j in range(nt):
            bd[w] = t
            bi[w] = si[j]
            w += 1
    return w, t


@jit_inline
def power_int(x, e):
    """``x ** e`` for a whole ``e >= 0`` with the products of :func:`zcore.core.law.power_by_squaring`
    (same operations, same order: the same bits as :func:`~zcore.core.law.law_power`)."""
    result = 1.0
    have = False
    base = x
    while True:
        if e & 1:
            if have:
                result = result * base
            else:
                result = base
                have = True
        e >>= 1
        if e == 0:
            return result
        base = base * base


@jit
def top_powers(ordered, k, e, out):
    """``out[r, j] = (ordered[r, 0] / ordered[r, j]) ** e`` for ``j < k`` (:func:`power_int`)."""
    for r in range(out.shape[0]):
        d0 = ordered[r, 0]
        for j in range(k):
            out[r, j] = power_int(d0 / ordered[r, j], e)


@jit
def add_penalties(penalty, dist, idx, kth, w, sums, k, scale, one, ties, dmin, e):
    """Add the fixed-point penalties of each row's ``k`` best candidates by ``(distance, index)``.

    ``kth[r]`` is the ``k``-th smallest distance of row ``r``: the best are those below it, then
    the lowest indices among those equal to it. Each gets ``rint(w / sum * 2**shift)``, the same
    float64 operations as :func:`zcore.core.law.to_fixed` on ``w / w.sum()`` (``ldexp`` by
    ``shift`` is the exact product by ``scale = 2.0**shift``); if the nearest is at distance 0,
    only the lowest-index one at distance 0 gets ``one``. With ``e >= 0`` the weights are not
    read from ``w`` but computed as ``power_int(dmin[r] / dist[r, j], e)`` (the same bits).
    """
    rows, width = dist.shape
    for r in range(rows):
        t = kth[r]
        if dist[r].min() == 0.0:
            zero = -1
            for j in range(width):
                if dist[r, j] == 0.0 and (zero < 0 or idx[r, j] < zero):
                    zero = idx[r, j]
            penalty[zero] += one
            continue
        total = sums[r]
        below = 0
        n_ties = 0
        for j in range(width):
            d = dist[r, j]
            if d < t:
                below += 1
                wj = w[r, j] if e < 0 else power_int(dmin[r] / d, e)
                penalty[idx[r, j]] += np.int64(np.rint((wj / total) * scale))
            elif d == t:
                ties[n_ties] = j
                n_ties += 1
        need = k - below
        if n_ties > need:  # keep the lowest indices among the ties
            for a in range(1, n_ties):
                v = ties[a]
                b = a - 1
                while b >= 0 and idx[r, ties[b]] > idx[r, v]:
                    ties[b + 1] = ties[b]
                    b -= 1
                ties[b + 1] = v
        for a in range(need):
            j = ties[a]
            wj = w[r, j] if e < 0 else power_int(dmin[r] / dist[r, j], e)
            penalty[idx[r, j]] += np.int64(np.rint((wj / total) * scale))


class Workspace:
    """Buffers of the penalty computation, reused across batches (fresh multi-MB temporaries
    would cost page faults and page zeroing at every batch)."""

    def __init__(self, rows, width, k):
        self.ordered = np.empty((rows, width))
        self.top = np.empty((rows, k))
        self.top_w = np.empty((rows, k))
        self.ratio = np.empty((rows, width))
        self.w = np.empty((rows, width))
        self.ties = np.empty(width, np.int64)


def apply_penalties(dist, idx, penalty, k, exp, shift, one, ws):
    """Add the fixed-point penalties of a batch of redundancy searches.

    Row ``r`` of ``dist``/``idx`` holds a superset of search ``r``'s ``k`` best neighbours, in any
    order (padded with ``inf``). The weights follow :func:`zcore.core.law.penalty_weights` to the
    bit: the elementwise ``(d_min / d) ** exp`` is computed by numpy (whose ``**`` may use SIMD math
    that a compiled ``pow`` does not reproduce), and its normalising sum is numpy's sum over the
    ``k`` best in increasing distance (the order of the numpy engine: the sum depends on the order,
    each weight does not).
    """
    rows = dist.shape[0]
    ordered = ws.ordered[:rows]
    np.copyto(ordered, dist)
    ordered.sort(axis=1)
    kth = np.ascontiguousarray(ordered[:, k - 1])
    dmin = ordered[:, :1]
    live = dmin[:, 0] > 0.0
    e = integral_exponent(exp)
    scale = np.ldexp(1.0, shift)
    if e is not None and live.all():  # compiled weights, in cache (the same bits)
        top = ws.top[:rows]
        top_powers(ordered, k, e, top)
        sums = top.sum(axis=1)
        d0 = np.ascontiguousarray(ordered[:, 0])
        add_penalties(penalty, dist, idx, kth, dist, sums, k, scale, one, ws.ties, d0, e)
        return
    if live.all():
        top = ws.top[:rows]
        np.copyto(top, ordered[:, :k])
        ratio = np.divide(top[:, :1], top, out=ws.top_w[:rows])
        sums = law_power(ratio, exp, out=ws.top[:rows]).sum(axis=1)
        w = law_power(np.divide(dmin, dist, out=ws.ratio[:rows]), exp, out=ws.w[:rows])
    else:
        w = np.zeros(dist.shape)
        sums = np.ones(rows)
        if live.any():
            top = np.ascontiguousarray(ordered[live, :k])
            sums[live] = ((top[:, :1] / top) ** exp).sum(axis=1)
            w[live] = (dmin[live] / dist[live]) ** exp
    add_penalties(penalty, dist, idx, kth, w, sums, k, scale, one, ws.ties, kth, -1)
