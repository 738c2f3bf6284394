"""Selection methods from the coreset and active-learning literature (numpy + scikit-learn).

Each is written from its paper and has the signature of :mod:`zcore.core.methods`:
``method(scores, embeddings, n_keep, *, seed=None, **options)`` returning ``n_keep`` **distinct**
row indices, sorted (``NaN`` scores mark rows that may not be selected; the scores are otherwise
unused — none of these methods needs ZCore scores). Embeddings are L2-normalised first: every
method here works with cosine geometry, as the papers do with self-supervised features.

- :func:`kcenter_greedy` — Sener & Savarese (ICLR 2018), *Active learning for convolutional
  neural networks: a core-set approach*: greedy 2-approximation of the k-center problem.
- :func:`facility_location` — the facility-location function
  ``F(S) = sum_i max_{j in S} w_ij`` maximised by lazy greedy (Minoux 1978; as in CRAIG, Mirzasoleiman
  et al. 2020) on a symmetric k-nearest-neighbour similarity graph, so it scales to 10^5 rows.
- :func:`typiclust` — Hacohen, Dekel & Weinshall (ICML 2022), *Active learning on a budget*:
  k-means with as many clusters as the budget (capped), then the most *typical* sample (inverse
  mean distance to its nearest neighbours) of each uncovered cluster, largest clusters first.
- :func:`probcover` — Yehuda, Dekel, Hacohen & Weinshall (NeurIPS 2022), *Active learning
  through a covering lens*: greedy maximum coverage of delta-balls, with delta the largest
  radius whose balls stay >= 95 % pure with respect to k-means pseudo-labels.
- :func:`semdedup` — Abbas et al. (2023), *SemDeDup*: semantic near-duplicates removed inside
  k-means clusters, then uniform sampling of the rest.
- :func:`prototypicality` — Sorscher et al. (NeurIPS 2022), *Beyond neural scaling laws*: the
  self-supervised prototypicality metric (distance to the nearest k-means centroid); keep the
  easy (prototypical) or the hard samples.
"""

import heapq
import math

import numpy as np

from .methods import (
    _as_embeddings,
    _as_scores,
    _check_n_keep,
    _child_seed,
    _eligible,
    _groups,
    _rng,
    _rows,
    kmeans,
    l2_normalize,
)
from .registry import Option, method
from .validation import check_float, check_int

__all__ = [
    "kcenter_greedy",
    "facility_location",
    "typiclust",
    "probcover",
    "semdedup",
    "prototypicality",
    "knn_graph",
]


def _prepare(scores, embeddings, n_keep, method, seed=None):
    """``(candidate rows, their L2-normalised embeddings, n_keep capped)``; checks ``seed``."""
    _rng(seed)
    s = _as_scores(scores)
    X = _as_embeddings(embeddings, required=True, method=method)
    if s is not None and len(s) != len(X):
        raise ValueError(f"scores has {len(s)} entries but embeddings has {len(X)} rows")
    cand = _eligible(s, X)
    n_keep = _check_n_keep(n_keep, cand.size)
    return cand, l2_normalize(_rows(X, cand)), n_keep


def knn_graph(Xn, k, *, chunk=2048):
    """The ``k`` most similar other rows of every row of L2-normalised ``Xn`` (exact, cosine).

    Returns ``(indices (N, k) int64, similarities (N, k) float32)``, most similar first; ties go
    to the lower index. Chunked matrix products: O(N^2 D) time, O(chunk N) memory.
    """
    n = len(Xn)
    k = int(min(k, n - 1))
    idx = np.empty((n, k), dtype=np.int64)
    sim = np.empty((n, k), dtype=np.float32)
    if k <= 0:
        return idx, sim
    for start in range(0, n, chunk):
        block = Xn[start : start + chunk] @ Xn.T
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = -np.inf  # not its own neighbour
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)
        idx[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        sim[start : start + chunk] = np.take_along_axis(ps, order, axis=1)
    return idx, sim


def _result(cand, picked):
    return np.sort(cand[np.asarray(picked, dtype=np.int64)]).astype(np.int64)


# --- k-center greedy --------------------------------------------------------------------------


def kcenter_greedy(scores, embeddings, n_keep, *, seed=None):
    """k-center greedy (Sener & Savarese, ICLR 2018).

    Starts from a random sample (``seed``) and repeatedly adds the sample farthest (L2 between
    normalised embeddings) from every sample chosen so far: a 2-approximation of the minimax
    facility location (k-center) problem. O(N K D) time. Ties go to the lower index.
    """
    cand, Xn, n_keep = _prepare(scores, embeddings, n_keep, "kcenter_greedy", seed)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    rng = _rng(seed)
    sq = np.einsum("ij,ij->i", Xn, Xn)
    first = int(rng.integers(len(Xn)))
    picked = [first]
    mind = np.maximum(sq + sq[first] - 2.0 * (Xn @ Xn[first]), 0.0)
    mind[first] = -1.0
    for _ in range(n_keep - 1):
        nxt = int(np.argmax(mind))
        picked.append(nxt)
        d = np.maximum(sq + sq[nxt] - 2.0 * (Xn @ Xn[nxt]), 0.0)
        np.minimum(mind, d, out=mind)
        mind[picked[-1]] = -1.0
    return _result(cand, picked)


# --- facility location (lazy greedy on a kNN graph) ---------------------------------------


def facility_location(scores, embeddings, n_keep, *, seed=None, n_neighbors=20, graph=None):
    """Facility location ``F(S) = sum_i max_{j in S} w_ij`` by lazy greedy on a kNN graph.

    ``w_ij`` is the cosine similarity (clipped at 0) on the symmetrised ``n_neighbors``-nearest
    neighbour graph, and ``w_ii = 1``: a chosen sample represents itself and its neighbours. Each
    step adds the sample of largest marginal gain; stale gains are upper bounds (submodularity),
    so only the top of a heap is re-evaluated (Minoux's lazy greedy). Ties -> lower index; when
    every gain is 0 (all samples represented), the rest is filled at random (``seed``).

    ``graph``: a precomputed ``(indices, similarities)`` from :func:`knn_graph` of the
    *eligible* rows (for repeated calls on the same embeddings).
    """
    from scipy import sparse

    cand, Xn, n_keep = _prepare(scores, embeddings, n_keep, "facility_location", seed)
    n_neighbors = check_int(n_neighbors, "n_neighbors", min_value=1)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    n = len(Xn)
    nbr, sim = graph if graph is not None else knn_graph(Xn, n_neighbors)
    nbr, sim = nbr[:, :n_neighbors], np.maximum(sim[:, :n_neighbors], 0.0)
    rows = np.repeat(np.arange(n), nbr.shape[1])
    W = sparse.csr_matrix((sim.ravel(), (rows, nbr.ravel())), shape=(n, n))
    W = W.maximum(W.T).tolil()
    W.setdiag(1.0)
    W = W.tocsc()  # column j: the samples j would represent, with their similarity
    indptr, indices, data = W.indptr, W.indices, W.data.astype(np.float64)
    cur = np.zeros(n)

    def gain(j):
        a, b = indptr[j], indptr[j + 1]
        return float(np.maximum(data[a:b] - cur[indices[a:b]], 0.0).sum())

    heap = [(-gain(j), j) for j in range(n)]
    heapq.heapify(heap)
    chosen = np.zeros(n, dtype=bool)
    picked = []
    while len(picked) < n_keep and heap:
        neg, j = heapq.heappop(heap)
        g = gain(j)
        if heap and g < -heap[0][0] - 1e-12 and not (g == -neg):
            heapq.heappush(heap, (-g, j))
            continue
        if g <= 0.0:
            break
        picked.append(j)
        chosen[j] = True
        a, b = indptr[j], indptr[j + 1]
        np.maximum.at(cur, indices[a:b], data[a:b])
    if len(picked) < n_keep:  # everything is represented: fill at random
        rest = np.flatnonzero(~chosen)
        picked += list(_rng(seed).choice(rest, size=n_keep - len(picked), replace=False))
    return _result(cand, picked)


# --- TypiClust --------------------------------------------------------------------------------

TYPICLUST_MAX_CLUSTERS = 1000
TYPICLUST_K = 20
TYPICLUST_MIN_CLUSTER = 5


def _typicality(Xc, k):
    """``1 / mean L2 distance to the k nearest other members`` (k capped at size - 1)."""
    m = len(Xc)
    if m == 1:
        return np.ones(1)
    k = min(k, m - 1)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Xc @ Xc.T), 0.0)
    np.fill_diagonal(d2, np.inf)
    near = np.partition(d2, k - 1, axis=1)[:, :k]
    return 1.0 / (np.sqrt(near).mean(axis=1) + 1e-12)


@method(
    label="TypiClust",
    help="The most typical sample of each k-means cluster, the least covered cluster first "
    "(Hacohen et al., 2022); no scores needed",
    needs_embeddings=True,
    scores="unused",
    include="quota",
    options=(
        Option("max_clusters", "int", "k-means clusters at most", minimum=1),
        Option("n_neighbors", "int", "neighbours of the typicality estimate", minimum=1),
        Option("min_cluster_size", "int", "smaller clusters are used last", minimum=1),
        Option("labels", "array", "precomputed cluster labels (skips k-means)"),
        Option("include", "array", "rows already in the coreset (see select(include=...))"),
    ),
)
def typiclust(
    scores,
    embeddings,
    n_keep,
    *,
    seed=None,
    max_clusters=TYPICLUST_MAX_CLUSTERS,
    n_neighbors=TYPICLUST_K,
    min_cluster_size=TYPICLUST_MIN_CLUSTER,
    labels=None,
    include=None,
):
    """TypiClust (Hacohen et al., ICML 2022).

    k-means with ``min(n_keep, max_clusters)`` clusters; then, one sample at a time, the cluster
    with the fewest samples chosen so far (ties: the largest cluster) gives its most typical
    sample not yet chosen. Typicality = 1 / mean distance to the ``n_neighbors`` nearest members
    of the same cluster (the paper's density estimate). Clusters smaller than
    ``min_cluster_size`` are used only when the others are exhausted (the paper drops them).
    ``labels``: precomputed cluster labels of every row (skips k-means). ``include``: rows
    already in the coreset (the paper's labelled set; ``len(include) <= n_keep``): they come
    back first, are clustered with the others (k from the whole budget) and count as chosen in
    their cluster, so the least covered clusters give the rest.
    """
    from .methods import check_include_budget

    requested = n_keep
    cand, Xn, n_keep = _prepare(scores, embeddings, n_keep, "typiclust", seed)
    inc, requested = check_include_budget(include, len(embeddings), requested)
    inc_pos = np.empty(0, dtype=np.int64)
    if inc.size:
        cand = np.union1d(cand, inc)
        Xn = l2_normalize(_as_embeddings(embeddings)[cand])
        n_keep = min(requested, cand.size)
        inc_pos = np.searchsorted(cand, inc)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    rng = _rng(seed)
    if labels is None:
        labels, _ = kmeans(Xn, min(n_keep, max_clusters), seed=rng)
    else:
        labels = np.asarray(labels)[cand]
    _, members = _groups(labels)
    is_inc = np.zeros(len(cand), dtype=bool)
    is_inc[inc_pos] = True
    orders, have = [], []  # each cluster's members not included, most typical first
    for m in members:
        t = _typicality(Xn[m], n_neighbors)
        o = m[np.lexsort((m, -t))]
        orders.append(o[~is_inc[o]])
        have.append(int(is_inc[m].sum()))
    sizes = np.array([len(m) for m in members])
    small = sizes < min_cluster_size
    left = np.array([len(o) for o in orders])
    taken = np.zeros(len(orders), dtype=np.int64)
    # priority: (small cluster?, chosen so far (included ones too), -size, cluster id)
    heap = [(bool(small[c]), have[c], -int(sizes[c]), c) for c in range(len(orders)) if left[c]]
    heapq.heapify(heap)
    picked = []
    while len(picked) < n_keep - inc.size:
        sm, cnt, neg, c = heapq.heappop(heap)
        picked.append(orders[c][taken[c]])
        taken[c] += 1
        if taken[c] < left[c]:
            heapq.heappush(heap, (sm, cnt + 1, neg, c))
    return np.concatenate([inc, _result(cand, picked)]).astype(np.int64)


# --- ProbCover --------------------------------------------------------------------------------

PROBCOVER_PURITY = 0.95


def _radius_graph(Xn, delta, chunk=2048):
    """CSR adjacency of ``||x_i - x_j|| <= delta`` (cosine geometry), self-loops included."""
    from scipy import sparse

    min_cos = 1.0 - delta**2 / 2.0
    n = len(Xn)
    rows, cols = [], []
    for start in range(0, n, chunk):
        block = Xn[start : start + chunk] @ Xn.T
        i, j = np.nonzero(block >= min_cos)
        rows.append(i + start)
        cols.append(j)
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = sparse.csr_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    g.setdiag(1)
    return g.tocsr()


def choose_delta(Xn, pseudo_labels, purity=PROBCOVER_PURITY, sample=2000, rng=None):
    """The largest ball radius whose balls are ``>= purity`` pure (ProbCover's rule).

    A ball around ``x`` is pure when every sample within ``delta`` has ``x``'s pseudo-label.
    Estimated on ``sample`` random centres against all rows: the purity of radius ``delta`` is
    the fraction of centres whose nearest sample of another pseudo-label is farther than
    ``delta``, so the answer is the ``1 - purity`` quantile of those distances.
    """
    rng = _rng(rng)
    n = len(Xn)
    centres = rng.choice(n, size=min(sample, n), replace=False)
    far = np.empty(len(centres))
    for a in range(0, len(centres), 512):
        cc = centres[a : a + 512]
        cos = Xn[cc] @ Xn.T
        other = pseudo_labels[None, :] != pseudo_labels[cc, None]
        best = np.where(other, cos, -np.inf).max(axis=1)
        far[a : a + 512] = np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0))
    if not np.isfinite(far).any():  # one pseudo-class: every ball is pure
        return 2.0
    far = far[np.isfinite(far)]
    return float(np.quantile(far, 1.0 - purity) * (1 - 1e-6))


def probcover(
    scores,
    embeddings,
    n_keep,
    *,
    seed=None,
    delta=None,
    purity=PROBCOVER_PURITY,
    n_pseudo_classes=None,
):
    """ProbCover (Yehuda et al., NeurIPS 2022): greedy maximum coverage of delta-balls.

    Each step adds the sample whose ball (``||x_i - x_j|| <= delta`` on normalised embeddings)
    covers the most samples not covered yet (ties -> lower index); once every sample is covered,
    the rest of the budget is drawn at random (``seed``). ``delta=None`` chooses the largest
    radius at which ``purity`` (0.95) of the balls hold one k-means pseudo-label
    (:func:`choose_delta`; ``n_pseudo_classes`` clusters, default ``clip(round(sqrt(N) / 3), 2,
    100)``: the paper uses as many as there are classes, which a label-free tool does not know).
    """
    cand, Xn, n_keep = _prepare(scores, embeddings, n_keep, "probcover", seed)
    purity = check_float(purity, "purity", min_value=0.0, max_value=1.0)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    rng = _rng(seed)
    n = len(Xn)
    if delta is None:
        k = n_pseudo_classes or int(min(100, max(2, round(math.sqrt(n) / 3))))
        pseudo, _ = kmeans(Xn, k, seed=rng)
        delta = choose_delta(Xn, pseudo, purity, rng=_child_seed(rng))
    delta = check_float(delta, "delta", min_value=0.0)
    G = _radius_graph(Xn, delta)
    indptr, indices = G.indptr, G.indices
    covered = np.zeros(n, dtype=bool)
    # uncovered samples in each ball: kept exact by decrementing on every new coverage
    count = np.diff(indptr).astype(np.int64)
    Gt = G.T.tocsr()  # balls containing each sample (the graph is symmetric up to rounding)
    picked = []
    chosen = np.zeros(n, dtype=bool)
    while len(picked) < n_keep:
        j = int(np.argmax(np.where(chosen, -1, count)))
        if count[j] <= 0:
            break
        picked.append(j)
        chosen[j] = True
        ball = indices[indptr[j] : indptr[j + 1]]
        newly = ball[~covered[ball]]
        covered[newly] = True
        for i in newly:  # every ball that holds i loses one uncovered sample
            count[Gt.indices[Gt.indptr[i] : Gt.indptr[i + 1]]] -= 1
    if len(picked) < n_keep:
        rest = np.flatnonzero(~chosen)
        picked += list(rng.choice(rest, size=n_keep - len(picked), replace=False))
    return _result(cand, picked)


# --- SemDeDup ---------------------------------------------------------------------------------

SEMDEDUP_EPS = 0.05


@method(
    label="SemDeDup",
    help="Removes semantic duplicates inside k-means clusters, then samples the rest uniformly "
    "(Abbas et al., 2023); no scores needed",
    needs_embeddings=True,
    scores="unused",
    options=(
        Option(
            "eps",
            "float",
            "Two samples whose cosine similarity exceeds 1 - eps are duplicates",
            label="Duplicate if similarity > 1 - eps",
            minimum=0.0,
            maximum=2.0,
            form=True,
        ),
        Option("n_clusters", "int", "k-means clusters", minimum=1),
        Option("include", "array", "rows already in the coreset (see select(include=...))"),
    ),
    include="dedup",
)
def semdedup(
    scores, embeddings, n_keep, *, seed=None, eps=SEMDEDUP_EPS, n_clusters=None, include=None
):
    """SemDeDup (Abbas et al., 2023): remove semantic duplicates inside k-means clusters, then
    sample uniformly.

    k-means (``n_clusters``, default ``clip(round(sqrt(N)), 1, 1000)``) on normalised embeddings.
    Inside a cluster the members are ranked by decreasing distance to the centroid (the paper
    keeps the member *least* similar to the centroid); a member is a duplicate when its cosine
    similarity to a higher-ranked member exceeds ``1 - eps``. ``n_keep`` samples are then drawn
    uniformly from the non-duplicates. If fewer than ``n_keep`` remain, the threshold is relaxed:
    the ``n_keep`` samples with the lowest similarity to a higher-ranked member are kept (what a
    larger ``eps`` would keep).

    ``include``: rows already in the coreset (``len(include) <= n_keep``). They come back first,
    are clustered with the others and rank first in their cluster, so a member that duplicates
    an included row is a duplicate; the rest of the budget is drawn from the other
    non-duplicates (relaxed as above when too few remain).
    """
    from .methods import check_include_budget

    requested = n_keep
    cand, Xn, n_keep = _prepare(scores, embeddings, n_keep, "semdedup", seed)
    inc, requested = check_include_budget(include, len(embeddings), requested)
    if inc.size:
        cand = np.union1d(cand, inc)
        Xn = l2_normalize(_as_embeddings(embeddings)[cand])
        n_keep = min(requested, cand.size)
    is_inc = np.isin(cand, inc)  # positions in cand of the included rows
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    rng = _rng(seed)
    n = len(Xn)
    k = n_clusters or int(min(1000, max(1, round(math.sqrt(n)))))
    labels, centers = kmeans(Xn, k, seed=rng)
    ids, members = _groups(labels)
    maxsim = np.full(n, -np.inf)
    cn = l2_normalize(centers)
    for c, m in zip(ids, members):
        if len(m) < 2:
            continue
        order = m[np.argsort(Xn[m] @ cn[c], kind="stable")]  # least similar to centroid first
        order = order[np.argsort(~is_inc[order], kind="stable")]  # the included ones before
        S = Xn[order] @ Xn[order].T
        S = np.tril(S, -1)  # similarity to higher-ranked members only
        S[np.triu_indices(len(order))] = -np.inf
        maxsim[order] = S.max(axis=1)
    keep = np.flatnonzero((maxsim <= 1.0 - eps) & ~is_inc)
    need = n_keep - inc.size
    if len(keep) >= need:
        picked = rng.choice(keep, size=need, replace=False)
    else:
        picked = np.lexsort((rng.random(n), np.where(is_inc, np.inf, maxsim)))[:need]
    return np.concatenate([inc, _result(cand, picked)]).astype(np.int64)


# --- prototypicality --------------------------------------------------------------------------


@method(
    label="Prototypicality",
    help="The samples closest to their k-means centre (easy) or farthest (hard) "
    "(Sorscher et al., 2022); no scores needed",
    needs_embeddings=True,
    scores="unused",
    options=(
        Option(
            "keep",
            "choice",
            "easy: the most typical samples; hard: the least typical",
            label="Keep",
            choices=("easy", "hard"),
            form=True,
        ),
        Option("n_clusters", "int", "k-means clusters", minimum=1),
    ),
)
def prototypicality(scores, embeddings, n_keep, *, seed=None, keep="easy", n_clusters=None):
    """Self-supervised prototypicality (Sorscher et al., NeurIPS 2022).

    k-means (``n_clusters``, default ``clip(round(sqrt(N)), 2, 100)``) on normalised embeddings;
    a sample's difficulty is its cosine distance to the nearest centroid. ``keep="easy"`` keeps
    the ``n_keep`` most prototypical (closest) samples, ``"hard"`` the farthest: the paper keeps
    hard examples when data are plentiful and easy ones when they are scarce. Ties -> lower index.
    """
    cand, Xn, n_keep = _prepare(scores, embeddings, n_keep, "prototypicality", seed)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    rng = _rng(seed)
    n = len(Xn)
    k = n_clusters or int(min(100, max(2, round(math.sqrt(n)))))
    labels, centers = kmeans(Xn, k, seed=rng)
    cn = l2_normalize(centers)
    d = 1.0 - np.einsum("ij,ij->i", Xn, cn[labels])
    key = d if keep == "easy" else -d
    order = np.lexsort((np.arange(n), key))
    return _result(cand, order[:n_keep])
