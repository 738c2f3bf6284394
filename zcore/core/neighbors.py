"""Pairs of rows within a distance: exact all-pairs search, or an approximate index (faiss).

:func:`threshold_pairs` serves :func:`zcore.core.methods.near_duplicates`: every pair ``i < j`` of
L2-normalised rows with cosine similarity at least ``min_cos``.

- ``"exact"``: all pairs, in chunks of rows (a matrix product per chunk): O(N^2 D) time, fine for
  ~10^5 rows, hours at 10^6.
- ``"faiss"``: candidates from an inverted-file index (``faiss.IndexIVFFlat``, squared L2) on the
  rows centred and projected on their top :data:`CANDIDATE_DIMS` principal axes, with
  ``IVF_CELLS_PER_SQRT * sqrt(N)`` k-means cells trained on a subsample; each row's range search
  visits the ``nprobe`` cells nearest to it, and a pair counts when either row finds the other.
  A projection on orthonormal axes never lengthens a difference, so every pair within the
  threshold is within it in the projection: the projection costs no recall, only extra
  candidates (re-checked below); a pair is missed only when neither row probes the other's cell.
  The projection makes the scan 8x cheaper than on 512 dimensions (the search time is the
  quantizer and the scan, both linear in the dimension). ``benchmarks/bench_neardup.py``
  measures the recall against the exact search. faiss-cpu (``requirements-ann.txt``) is optional.
  Why faiss rather than our own index: it is a well-kept library (Meta, MIT licence, wheels for
  Linux/macOS/Windows on PyPI), its k-means, coarse quantizer (BLAS) and list scans (SIMD) are
  multi-threaded, and the exact search stays as the reference and the fallback.
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
IVF_CELLS_PER_SQRT = 4.0
#: Cells visited per query.
NPROBE = 8
#: Training rows per cell (k-means subsample; faiss warns below 39).
TRAIN_PER_CELL = 40
#: Wider rows are searched for candidates on their top principal axes (then re-checked in full).
CANDIDATE_DIMS = 64
#: Rows the principal axes are fitted on (a random subsample).
PCA_FIT_ROWS = 50_000
#: k-means iterations of the index's training (faiss's default is 25).
KMEANS_ITERATIONS = 10
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


def pca_basis(Xn, dims, *, seed=0):
    """Mean and the top ``dims`` principal axes (``(D, dims)``, orthonormal columns) of ``Xn``,
    fitted on at most :data:`PCA_FIT_ROWS` random rows (float64 covariance)."""
    n, d = Xn.shape
    rng = np.random.default_rng(seed)
    fit = Xn[np.sort(rng.choice(n, PCA_FIT_ROWS, replace=False))] if n > PCA_FIT_ROWS else Xn
    mean = fit.mean(axis=0, dtype=np.float64)
    fit = fit.astype(np.float64) - mean
    _, vecs = np.linalg.eigh(fit.T @ fit)  # ascending eigenvalues
    return mean.astype(np.float32), np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)


def _reduce(Xn, seed):
    """``Xn`` centred and projected on its top :data:`CANDIDATE_DIMS` principal axes (``Xn``
    itself when it is not wider), in chunks."""
    n, d = Xn.shape
    if d <= CANDIDATE_DIMS:
        return Xn
    mean, basis = pca_basis(Xn, CANDIDATE_DIMS, seed=seed)
    Z = np.empty((n, CANDIDATE_DIMS), np.float32)
    for start in range(0, n, QUERY_CHUNK):
        Z[start : start + QUERY_CHUNK] = (Xn[start : start + QUERY_CHUNK] - mean) @ basis
    return Z


def build_ivf(Z, *, nprobe=NPROBE, seed=0):
    """An IVF index (squared L2) over the rows of ``Z``, trained on a subsample, and the
    ``nprobe`` nearest cells of every row (``(cells, distances)``, ``(N, nprobe)``), the
    queries' coarse assignment (the queries are the rows themselves)."""
    import faiss

    n, d = Z.shape
    nlist = int(max(16, min(n // 8, round(IVF_CELLS_PER_SQRT * math.sqrt(n)))))
    nprobe = int(min(nprobe, nlist))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    n_train = min(n, TRAIN_PER_CELL * nlist)
    rng = np.random.default_rng(seed)
    train = Z[np.sort(rng.choice(n, n_train, replace=False))]
    index.cp.seed = int(seed)
    index.cp.niter = KMEANS_ITERATIONS
    index.train(train)
    index.nprobe = nprobe
    dist = np.empty((n, nprobe), np.float32)
    cells = np.empty((n, nprobe), np.int64)
    for start in range(0, n, QUERY_CHUNK):
        stop = min(n, start + QUERY_CHUNK)
        dist[start:stop], cells[start:stop] = quantizer.search(Z[start:stop], nprobe)
    index.add(Z)
    return index, cells, dist


def _faiss_pairs(Xn, min_cos, nprobe, seed, progress=None):
    n = len(Xn)
    Z = _reduce(Xn, seed)
    index, cells, dist = build_ivf(Z, nprobe=nprobe, seed=seed)
    # unit rows: |a - b|^2 = 2 - 2 a.b; a projection on orthonormal axes never lengthens a
    # difference, so every pair within the threshold is within it in Z too (the slack covers
    # float32 rounding); faiss keeps distances strictly below the radius
    radius = float(max(0.0, 2.0 - 2.0 * min_cos) * (1.0 + 1e-3) + 1e-5)
    keys = [np.empty(0, np.int64)]
    for start in range(0, n, QUERY_CHUNK):
        q = Z[start : start + QUERY_CHUNK]
        sl = slice(start, start + QUERY_CHUNK)
        lims, _, labels = index.range_search_preassigned(q, radius, cells[sl], dist[sl])
        i = np.repeat(
            np.arange(start, start + len(q), dtype=np.int64), np.diff(lims).astype(np.int64)
        )
        j = labels.astype(np.int64)
        # both directions: a pair is found when either row's probed cells hold the other
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        keep = lo < hi
        keys.append(lo[keep] * n + hi[keep])
        if progress is not None:
            progress(min(n, start + QUERY_CHUNK), n, "near-duplicate search")
    keys = np.unique(np.concatenate(keys))
    i, j = keys // n, keys % n
    ok = np.empty(len(keys), bool)
    for start in range(0, len(keys), QUERY_CHUNK):
        a, b = i[start : start + QUERY_CHUNK], j[start : start + QUERY_CHUNK]
        ok[start : start + QUERY_CHUNK] = np.einsum("ij,ij->i", Xn[a], Xn[b]) >= min_cos
    return i[ok], j[ok]
