"""Compiled building blocks shared by the compiled engine's kernels and the Dask merger.

- :func:`jit` / :func:`jit_inline` / :func:`jit_ieee`: numba's ``njit`` with zcore's cache folder
  (a no-op without numba, so that every module still imports);
- :func:`gather`: columns of a row-major matrix made contiguous;
- :func:`compress_at_most` / :func:`compress_pair32`: the indices of the samples of a run of
  :data:`LANES` within a threshold, packed (AVX-512's register ``compress`` where numba compiles
  for a host that has it, else LLVM's portable masked store: the same result);
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
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic
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


def jit_ieee(func):
    """:func:`jit` with numpy's error model: a float division by zero gives the IEEE result (inf,
    nan) instead of raising, so that loops of divisions carry no test per element and vectorise."""
    return _njit(func, error_model="numpy")


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


#: Samples per call of :func:`compress_at_most` and :func:`compress_pair`.
LANES = 16


def _x86_compress():
    """Whether the compiled code may use AVX-512's register ``compress`` (numba compiling for
    this host, which has AVX-512F); else the portable ``llvm.masked.compressstore``, which LLVM
    lowers on every target (a slower loop). Only the speed differs, never the result."""
    if numba is None or numba.config.CPU_NAME:
        return False
    features = numba.config.CPU_FEATURES
    if features:
        return "+avx512f" in features.split(",")
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:  # pragma: no cover - a host llvmlite cannot describe
        return False


def _i32(v):
    return ir.Constant(ir.IntType(32), v)


def _i64(v):
    return ir.Constant(ir.IntType(64), v)


def _vector_of_pointers(lanes, pointee):
    """The suffix naming a vector of pointers in an intrinsic: ``v8p0`` with LLVM's opaque
    pointers (llvmlite >= 0.44 prints ``ptr``), ``v8p0f32`` with typed ones."""
    opaque = str(ir.FloatType().as_pointer()) == "ptr"
    return f"v{lanes}p0" if opaque else f"v{lanes}p0{pointee}"


def _splat(builder, x, lanes):
    vty = ir.VectorType(x.type, lanes)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, _i32(0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), zeros)


def _data(context, builder, aryty, ary, i):
    """Pointer to element ``i`` of a 1-D array."""
    return builder.gep(context.make_array(aryty)(context, builder, ary).data, [i])


def _load(builder, ptr, elty, lanes):
    vty = ir.VectorType(elty, lanes)
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=4)


def _emit_compress(builder, i0, mask, out):
    """Store the indices ``i0 + j`` (int32) of the lanes ``j < 16`` selected by ``mask`` (16 x
    i1), packed in order, at ``out`` (which has 16 free slots); returns how many (int64)."""
    mod = builder.module
    i32 = ir.IntType(32)
    ity = ir.VectorType(i32, LANES)
    iv = builder.add(
        _splat(builder, builder.trunc(i0, i32), LANES), ir.Constant(ity, list(range(LANES)))
    )
    if _x86_compress():
        fn = cgutils.get_or_insert_function(
            mod, ir.FunctionType(ity, [ity, ity, mask.type]), "llvm.x86.avx512.mask.compress.v16i32"
        )
        packed = builder.call(fn, [iv, ir.Constant(ity, ir.Undefined), mask])
        builder.store(packed, builder.bitcast(out, ity.as_pointer()), align=4)
    else:
        fnty = ir.FunctionType(ir.VoidType(), [ity, out.type, mask.type])
        fn = cgutils.get_or_insert_function(mod, fnty, "llvm.masked.compressstore.v16i32")
        builder.call(fn, [iv, out, mask])
    i16 = ir.IntType(16)
    ctpop = cgutils.get_or_insert_function(mod, ir.FunctionType(i16, [i16]), "llvm.ctpop.i16")
    count = builder.call(ctpop, [builder.bitcast(mask, i16)])
    return builder.zext(count, ir.IntType(64))


def _check_1d(*arrays_and_dtypes):
    return all(
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == dt
        for a, dt in arrays_and_dtypes
    )


if numba is not None:

    @intrinsic
    def compress_at_most(typingctx, dist, i0, t, out, w):
        """For ``i`` in ``[i0, i0 + 16)`` with ``dist[i] <= t``: ``out[w + m] = i``, packed in
        order; returns the new ``w``. ``out`` (int32) needs 16 free slots from ``w``."""
        if not _check_1d((dist, types.float64), (out, types.int32)):
            return None
        sig = types.intp(dist, types.intp, types.float64, out, types.intp)

        def codegen(context, builder, signature, args):
            dist_v, i0_v, t_v, out_v, w_v = args
            ptr = _data(context, builder, signature.args[0], dist_v, i0_v)
            tv = _splat(builder, t_v, 8)
            masks = []
            for half in range(2):
                off = [ir.Constant(ir.IntType(64), 8 * half)]
                dv = _load(builder, builder.gep(ptr, off), ir.DoubleType(), 8)
                masks.append(builder.fcmp_ordered("<=", dv, tv))
            lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(range(LANES)))
            mask = builder.shuffle_vector(masks[0], masks[1], lanes)
            count = _emit_compress(
                builder, i0_v, mask, _data(context, builder, signature.args[3], out_v, w_v)
            )
            return builder.add(w_v, count)

        return sig, codegen

    @intrinsic
    def compress_pair32(typingctx, a, b, i0, qa, qb, t, out, w):
        """:func:`compress_at_most` of the float32 distances ``|a[i] - qa| + |b[i] - qb|``
        (float32 columns and references, float32 operations), computed on the fly for ``i`` in
        ``[i0, i0 + 16)``: a fast filter, within a relative ``2**-22`` of the float64 distance
        for float32 references (see :mod:`zcore.core.engine_dense`)."""
        if not _check_1d((a, types.float32), (b, types.float32), (out, types.int32)):
            return None
        f4 = types.float32
        sig = types.intp(a, b, types.intp, f4, f4, f4, out, types.intp)

        def codegen(context, builder, signature, args):
            a_v, b_v, i0_v, qa_v, qb_v, t_v, out_v, w_v = args
            vty = ir.VectorType(ir.FloatType(), LANES)
            fabs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty]), "llvm.fabs.v16f32"
            )
            terms = []
            for aryty, ary, q in ((signature.args[0], a_v, qa_v), (signature.args[1], b_v, qb_v)):
                x = _load(builder, _data(context, builder, aryty, ary, i0_v), ir.FloatType(), LANES)
                terms.append(builder.call(fabs, [builder.fsub(x, _splat(builder, q, LANES))]))
            dv = builder.fadd(terms[0], terms[1])
            mask = builder.fcmp_ordered("<=", dv, _splat(builder, t_v, LANES))
            count = _emit_compress(
                builder, i0_v, mask, _data(context, builder, signature.args[6], out_v, w_v)
            )
            return builder.add(w_v, count)

        return sig, codegen

    @intrinsic
    def distances_at(typingctx, a, b, ci, j0, qa, qb, cd):
        """``cd[j] = |f64(a[ci[j]]) - qa| + |f64(b[ci[j]]) - qb|`` for ``j`` in ``[j0, j0 + 8)``
        (float32 columns gathered at the int32 indices ``ci``; the float64 operations of
        :func:`zcore.core.law.l1_distances`, in that order): exact distances of candidates."""
        if not _check_1d(
            (a, types.float32), (b, types.float32), (ci, types.int32), (cd, types.float64)
        ):
            return None
        f8 = types.float64
        sig = types.none(a, b, ci, types.intp, f8, f8, cd)

        def codegen(context, builder, signature, args):
            a_v, b_v, ci_v, j0_v, qa_v, qb_v, cd_v = args
            lanes = 8
            i64 = ir.IntType(64)
            fty = ir.VectorType(ir.FloatType(), lanes)
            dty = ir.VectorType(ir.DoubleType(), lanes)
            ity = ir.VectorType(i64, lanes)
            idx = _load(
                builder,
                _data(context, builder, signature.args[2], ci_v, j0_v),
                ir.IntType(32),
                lanes,
            )
            offsets = builder.mul(builder.sext(idx, ity), ir.Constant(ity, [4] * lanes))
            fabs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(dty, [dty]), "llvm.fabs.v8f64"
            )
            mask = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * lanes)
            terms = []
            for k, ary, q in ((0, a_v, qa_v), (1, b_v, qb_v)):
                base = builder.ptrtoint(
                    _data(context, builder, signature.args[k], ary, _i64(0)), i64
                )
                ptr_ty = ir.VectorType(ir.FloatType().as_pointer(), lanes)
                ptrs = builder.inttoptr(builder.add(_splat(builder, base, lanes), offsets), ptr_ty)
                fn = cgutils.get_or_insert_function(
                    builder.module,
                    ir.FunctionType(fty, [ptr_ty, ir.IntType(32), mask.type, fty]),
                    "llvm.masked.gather.v8f32." + _vector_of_pointers(lanes, "f32"),
                )
                x = builder.call(fn, [ptrs, _i32(4), mask, ir.Constant(fty, ir.Undefined)])
                x = builder.fpext(x, dty)
                terms.append(builder.call(fabs, [builder.fsub(x, _splat(builder, q, lanes))]))
            out = _data(context, builder, signature.args[6], cd_v, j0_v)
            dv = builder.fadd(terms[0], terms[1])
            builder.store(dv, builder.bitcast(out, dty.as_pointer()), align=8)
            return context.get_dummy_value()

        return sig, codegen

else:  # pragma: no cover - without numba the kernels are never called

    def compress_at_most(dist, i0, t, out, w):
        raise ImportError("numba is needed")

    def compress_pair32(a, b, i0, qa, qb, t, out, w):
        raise ImportError("numba is needed")

    def distances_at(a, b, ci, j0, qa, qb, cd):
        raise ImportError("numba is needed")


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
def power_into(x, m, e, base):
    """``x[:m] = x[:m] ** e`` for a whole ``e >= 0`` with the products of
    :func:`zcore.core.law.power_by_squaring` (the same operations in the same order, so the same
    bits as :func:`~zcore.core.law.law_power`), one vectorised pass over ``x[:m]`` per step of the
    exponent. ``base``: ``m`` floats."""
    if e == 0:
        for j in range(m):
            x[j] = 1.0
        return
    have = False  # x[:m] holds the product so far (else the current square, not yet a factor)
    while True:
        if e & 1:
            if have:
                for j in range(m):
                    x[j] = x[j] * base[j]
            else:
                have = True
                if e > 1:
                    for j in range(m):
                        base[j] = x[j]
        e >>= 1
        if e == 0:
            return
        if have:
            for j in range(m):
                base[j] = base[j] * base[j]
        else:
            for j in range(m):
                x[j] = x[j] * x[j]


@jit
def add_penalties(penalty, dist, idx, kth, w, sums, k, scale, one, ties):
    """Add the fixed-point penalties of each row's ``k`` best candidates by ``(distance, index)``.

    ``kth[r]`` is the ``k``-th smallest distance of row ``r``: the best are those below it, then
    the lowest indices among those equal to it. Each gets ``rint(w / sum * 2**shift)``, the same
    float64 operations as :func:`zcore.core.law.to_fixed` on ``w / w.sum()`` (``ldexp`` by
    ``shift`` is the exact product by ``scale = 2.0**shift``); if the nearest is at distance 0,
    only the lowest-index one at distance 0 gets ``one``.
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
                penalty[idx[r, j]] += np.int64(np.rint((w[r, j] / total) * scale))
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
            penalty[idx[r, j]] += np.int64(np.rint((w[r, j] / total) * scale))


@jit
def sort_keys(dist, pos_bits, keys):
    """``keys[r, j]``: the bits of ``dist[r, j]`` (non-negative: they order as the distances),
    the lowest ``pos_bits`` of them replaced by ``j``. Sorted, a row's keys give its candidates
    in increasing distance up to those last bits (:func:`decode_sorted` restores the exact
    order), with each candidate's position."""
    rows, width = dist.shape
    high = ~((np.int64(1) << pos_bits) - 1)
    for r in range(rows):
        bits = dist[r].view(np.int64)
        row = keys[r]
        for j in range(width):
            row[j] = (bits[j] & high) | j


@jit_ieee
def decode_sorted(dist, idx, keys, pos_bits, k, e, od, oi, top, base):
    """From the sorted ``keys`` (:func:`sort_keys`): ``od[r]``/``oi[r]``, row ``r``'s distances
    and indices in increasing distance (an insertion sort repairs the order of distances equal
    in all but the lowest ``pos_bits`` bits); ``top[r, j] = (od[r, 0] / od[r, j]) ** e`` for
    ``j < k`` (:func:`power_into`; rows whose nearest is at distance 0 get nan, unused)."""
    rows, width = dist.shape
    mask = (np.int64(1) << pos_bits) - 1
    for r in range(rows):
        drow = od[r]
        irow = oi[r]
        for j in range(width):
            pos = keys[r, j] & mask
            drow[j] = dist[r, pos]
            irow[j] = idx[r, pos]
        unsorted = 0
        for j in range(1, width):
            unsorted += drow[j] < drow[j - 1]
        if unsorted:
            for j in range(1, width):
                d = drow[j]
                i = irow[j]
                b = j - 1
                while b >= 0 and drow[b] > d:
                    drow[b + 1] = drow[b]
                    irow[b + 1] = irow[b]
                    b -= 1
                drow[b + 1] = d
                irow[b + 1] = i
        d0 = drow[0]
        trow = top[r]
        for j in range(k):
            trow[j] = d0 / drow[j]
        power_into(trow, k, e, base)


@jit_ieee
def add_sorted(penalty, od, oi, top, sums, k, scale, one, ties):
    """Add the fixed-point penalties of each row's ``k`` best candidates by ``(distance, index)``,
    from its candidates in increasing distance (``od``/``oi``) and their weights ``top``
    (:func:`decode_sorted`): ``rint((w / sum) * scale)`` each, the float64 operations of
    :func:`zcore.core.law.to_fixed`; among the candidates at the ``k``-th distance, those of
    lowest index (equal distances, equal weights). If the nearest is at distance 0, only the
    lowest-index one at distance 0 gets ``one``."""
    rows, width = od.shape
    for r in range(rows):
        drow = od[r]
        irow = oi[r]
        if drow[0] == 0.0:
            zero = irow[0]
            j = 1
            while j < width and drow[j] == 0.0:
                zero = min(zero, irow[j])
                j += 1
            penalty[zero] += one
            continue
        total = sums[r]
        trow = top[r]
        t = drow[k - 1]
        lo = k - 1  # candidates [lo, hi) are at the k-th distance
        while lo > 0 and drow[lo - 1] == t:
            lo -= 1
        hi = k
        while hi < width and drow[hi] == t:
            hi += 1
        for j in range(lo):
            penalty[irow[j]] += np.int64(np.rint((trow[j] / total) * scale))
        q = np.int64(np.rint((trow[lo] / total) * scale))
        if hi == k:
            for j in range(lo, k):
                penalty[irow[j]] += q
            continue
        n_ties = hi - lo  # more than needed: the lowest indices among them
        for a in range(n_ties):
            ties[a] = irow[lo + a]
        for a in range(1, n_ties):
            v = ties[a]
            b = a - 1
            while b >= 0 and ties[b] > v:
                ties[b + 1] = ties[b]
                b -= 1
            ties[b + 1] = v
        for a in range(k - lo):
            penalty[ties[a]] += q


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
        self.keys = np.empty((rows, width), np.int64)
        self.order_i = np.empty((rows, width), np.int64)
        self.base = np.empty(max(width, k))


def apply_penalties(dist, idx, penalty, k, exp, shift, one, ws):
    """Add the fixed-point penalties of a batch of redundancy searches.

    Row ``r`` of ``dist``/``idx`` holds a superset of search ``r``'s ``k`` best neighbours, in any
    order (padded with ``inf``). The weights follow :func:`zcore.core.law.penalty_weights` to the
    bit, and their normalising sum is numpy's sum over the ``k`` best in increasing distance (the
    order of the numpy engine: the sum depends on the order, each weight does not). For a whole
    exponent, the rows are sorted by numpy as integer keys that carry each candidate's position
    (:func:`sort_keys`), the weights are the products of :func:`~zcore.core.law.law_power`
    computed once per neighbour in that order (:func:`decode_sorted`) and added by
    :func:`add_sorted`; for other exponents, ``(d_min / d) ** exp`` is computed by numpy (whose
    ``**`` may use SIMD math that a compiled ``pow`` does not reproduce).
    """
    rows = dist.shape[0]
    e = integral_exponent(exp)
    scale = np.ldexp(1.0, shift)
    if e is not None:  # compiled weights, in cache (the same bits)
        top = ws.top[:rows]
        od = ws.ordered[:rows]
        oi = ws.order_i[:rows]
        keys = ws.keys[:rows]
        pos_bits = max(1, int(dist.shape[1] - 1).bit_length())
        sort_keys(dist, pos_bits, keys)
        keys.sort(axis=1)
        decode_sorted(dist, idx, keys, pos_bits, k, e, od, oi, top, ws.base)
        sums = top.sum(axis=1)
        add_sorted(penalty, od, oi, top, sums, k, scale, one, ws.ties)
        return
    ordered = ws.ordered[:rows]
    np.copyto(ordered, dist)
    ordered.sort(axis=1)
    kth = np.ascontiguousarray(ordered[:, k - 1])
    dmin = ordered[:, :1]
    live = dmin[:, 0] > 0.0
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
    add_penalties(penalty, dist, idx, kth, w, sums, k, scale, one, ws.ties)
