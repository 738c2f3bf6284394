"""Pairs of rows within a distance: exact all-pairs search, or an approximate index (faiss).

:func:`threshold_pairs` serves :func:`zcore.core.methods.near_duplicates`: every pair ``i < j`` of
L2-normalised rows with cosine similarity at least ``min_cos``.

- ``"exact"``: all pairs, in chunks of rows (a matrix product per chunk): O(N^2 D) time, fine for
  ~10^5 rows, hours at 10^6.
- ``"faiss"``: an inverted-file index (``faiss.IndexIVFFlat``, inner product) with ``nlist`` k-means
  cells trained on a subsample; each row's range search visits the ``nprobe`` cells nearest to it.
  A pair is missed only when the two rows fall in cells that neither one probes; near duplicates
  are close, so they share a cell or sit in neighbouring ones (``benchmarks/bench_neardup.py``
  measures the recall against the exact search). faiss-cpu (``requirements-ann.txt``) is optional.
  Why faiss rather than our own index: it is a well-kept library (Meta, MIT licence, wheels for
  Linux/macOS/Windows on PyPI), its IVF search is SIMD and multi-threaded, and the exact search
  stays as the reference and the fallback.
- ``"auto"``: ``"faiss"`` from :data:`ANN_MIN_ROWS` rows when faiss is importable, else ``"exact"``.

Every candidate pair is re-checked with the same float32 dot product as the exact search, so the
approximate search can miss pairs but never adds one the exact search would not find (up to the
rounding of that dot product).
"""

import math

import numpy as np

#: Rows from which ``search="auto"`` uses the approximate index (when faiss is installed).
ANN_MIN_ROWS = 200_000
#: Cells of the inverted file: ``IVF_CELLS_PER_SQRT * sqrt(N)``, at least 16.
IVF_CELLS_PER_SQRT = 2.0
#: Cells visited per query.
NPROBE = 8
#: Training rows per cell (k-means subsample).
TRAIN_PER_CELL = 32
#: Query rows per range search call (bounds the memory of the results).
QUERY_CHUNK = 65536

SEARCHES = ("auto", "exact", "faiss")


def faiss_available():
    """Whether the approximate search can run here (faiss importable)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_search(search, n):
    """The concrete search (``"exact"`` or ``"faiss"``) that ``search`` stands for, for ``n`` rows."""
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; valid searches: {', '.join(SEARCHES)}")
    if search == "auto":
        return "faiss" if n >= ANN_MIN_ROWS and faiss_available() else "exact"
    if search == "faiss" and not faiss_available():
        raise ImportError(
            "search='faiss' needs faiss-cpu (pip install -r requirements-ann.txt); "
            "search='exact' needs nothing extra"
        )
    return search


def threshold_pairs(Xn, min_cos, *, search="auto", chunk=2048, nprobe=None, seed=0):
    """Pairs ``(i, j)``, ``i < j``, of rows of ``Xn`` (float32, L2-normalised) with
    ``Xn[i] @ Xn[j] >= min_cos``.

    Parameters
    ----------
    Xn : ndarray of shape (N, D), float32
    min_cos : float
    search : {"auto", "exact", "faiss"}, default="auto"
    chunk : int, default=2048
        Rows per block of the exact search.
    nprobe : int, optional
        Cells visited per query by the approximate search (default :data:`NPROBE`).
    seed : int, default=0
        Seed of the approximate index's training subsample and k-means.

    Returns
    -------
    rows, cols : ndarray of shape (P,), int64
    """
    Xn = np.ascontiguousarray(Xn, dtype=np.float32)
    if resolve_search(search, len(Xn)) == "exact":
        return _exact_pairs(Xn, min_cos, chunk)
    return _faiss_pairs(Xn, min_cos, NPROBE if nprobe is None else nprobe, seed)


def _exact_pairs(Xn, min_cos, chunk):
    n = len(Xn)
    rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for start in range(0, n, chunk):
        sim = Xn[start : start + chunk] @ Xn[start:].T
        i, j = np.nonzero(sim >= min_cos)
        j = j + start
        i = i + start
        upper = j > i
        rows.append(i[upper].astype(np.int64))
        cols.append(j[upper].astype(np.int64))
    return np.concatenate(rows), np.concatenate(cols)


def build_ivf(Xn, *, seed=0):
    """An IVF index (inner product) over the rows of ``Xn``, trained on a subsample."""
    import faiss

    n, d = Xn.shape
    nlist = int(max(16, min(n // 8, round(IVF_CELLS_PER_SQRT * math.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, TRAIN_PER_CELL * nlist)
    rng = np.random.default_rng(seed)
    train = Xn[np.sort(rng.choice(n, n_train, replace=False))]
    index.cp.seed = int(seed)
    index.train(train)
    index.add(Xn)
    return index


def _faiss_pairs(Xn, min_cos, nprobe, seed):
    index = build_ivf(Xn, seed=seed)
    index.nprobe = int(min(nprobe, index.nlist))
    # faiss returns inner products strictly above the radius; a hair below min_cos keeps the
    # equal ones, and the exact re-check below applies the threshold as the exact search does
    radius = float(np.nextafter(np.float32(min_cos), np.float32(-np.inf)))
    rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for start in range(0, len(Xn), QUERY_CHUNK):
        q = Xn[start : start + QUERY_CHUNK]
        lims, _, labels = index.range_search(q, radius)
        i = np.repeat(
            np.arange(start, start + len(q), dtype=np.int64), np.diff(lims).astype(np.int64)
        )
        j = labels.astype(np.int64)
        keep = j > i
        i, j = i[keep], j[keep]
        sim = np.einsum("ij,ij->i", Xn[i], Xn[j])
        ok = sim >= min_cos
        rows.append(i[ok])
        cols.append(j[ok])
    return np.concatenate(rows), np.concatenate(cols)
