"""Coreset selection methods on arrays: which rows to keep (numpy + scikit-learn, no FiftyOne).

Every method has the signature ``method(scores, embeddings, n_keep, *, seed=None, **options)``
and returns an ``int64`` array of **distinct** row indices, sorted increasingly (``topk`` returns
them best first). ``scores`` is an ``(N,)`` array (higher = keep, ``NaN`` = missing: such rows are
never selected) or ``None`` for methods that do not need it; ``embeddings`` an ``(N, D)`` array or
``None``. Exactly ``n_keep`` indices come back, except when fewer rows are eligible (then all of
them) and for ``target`` when its stopping rule fires first (documented there). All randomness
comes from ``seed`` (an int, ``None`` or a ``numpy.random.Generator``).

Methods (each registered with its spec, :mod:`zcore.core.registry`):

- ``auto``: the documented default, :data:`AUTO` (chosen by the quality benchmark's protocol on
  validation splits; see the README's quality section);
- ``topk``: the ``n_keep`` highest scores (the plugin's original behaviour);
- ``cluster_balanced``: k-means, a quota per cluster, the best scores (or random, or the most
  typical samples) inside each; its defaults switch to one prototype per cluster when keeping
  less than 15 %;
- ``stratified``: coverage-centric coreset selection (CCS, Zheng et al., ICLR 2023);
- ``hierarchical_kmeans``: multi-level k-means with resampling and hierarchical balanced sampling
  (after Vo et al., 2024, *Automatic data curation for self-supervised learning*);
- ``target``: SimCore (Kim et al., CVPR 2023): the pool samples nearest to a target set;
- ``typiclust``, ``semdedup``, ``prototypicality``: the peers of :mod:`zcore.core.peers` that
  scale to a million rows (k-center greedy, facility location and ProbCover are quadratic and
  stay in the benchmark).

:func:`near_duplicates` finds groups of near-identical embeddings; :func:`select` can remove them
(one representative per group) before any method.
"""

import dataclasses
import math
import warnings

import numpy as np

from . import budget
from .registry import DEFAULT_METHOD, Option, alias, get_spec, method
from .validation import check_float, check_int, check_seed

_KMEANS_EXACT_MAX = 20_000  # above this many rows, MiniBatchKMeans fitted on a subsample
_KMEANS_EXACT_MAX_K = 100  # ... or above this many clusters (exact Lloyd costs N k D per step)
_KMEANS_FIT_PER_CLUSTER = 256  # MiniBatchKMeans fit sample: this many points per cluster ...
_KMEANS_FIT_MAX = 200_000  # ... at most this many


# --- helpers ------------------------------------------------------------------------------------


def _rng(seed):
    return check_seed(seed)


def _child_seed(rng):
    return int(rng.integers(2**31 - 1))


def _as_scores(scores, n=None, required=False, method=""):
    if scores is None:
        if required:
            raise ValueError(f"method {method!r} needs scores (e.g. ZCore scores); got None")
        return None
    s = budget.as_scores(scores)
    if n is not None and len(s) != n:
        raise ValueError(f"scores has {len(s)} entries but embeddings has {n} rows")
    if np.isinf(s).any():
        raise ValueError("scores contain infinite values")
    return s


def _as_embeddings(embeddings, required=False, method="", name="embeddings"):
    if embeddings is None:
        if required:
            raise ValueError(f"method {method!r} needs {name} (an (N, D) array); got None")
        return None
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-d array (N, D); got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return np.ascontiguousarray(X)


def _eligible(scores, X):
    """Rows that may be selected: those with a (non-NaN) score, or all rows."""
    if scores is not None:
        return np.flatnonzero(~np.isnan(scores))
    if X is not None:
        return np.arange(len(X))
    raise ValueError("pass scores and/or embeddings")


def _rows(X, rows):
    """``X[rows]``, without a copy when ``rows`` is every row."""
    return X if len(rows) == len(X) else X[rows]


def _check_n_keep(n_keep, n_eligible):
    n_keep = check_int(n_keep, "n_keep", min_value=0)
    return min(n_keep, n_eligible)


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def _all_identical(X):
    return bool(np.all(X.max(axis=0) == X.min(axis=0)))


def l2_normalize(X):
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _assign(X, centers, chunk=65_536):
    """Index of the nearest center (squared L2) of every row, in chunks."""
    c2 = np.einsum("ij,ij->i", centers, centers)
    out = np.empty(len(X), dtype=np.int64)
    for start in range(0, len(X), chunk):
        xb = X[start : start + chunk]
        out[start : start + chunk] = np.argmin(c2[None, :] - 2.0 * (xb @ centers.T), axis=1)
    return out


def kmeans(X, n_clusters, seed=None):
    """``(labels, centers)`` of k-means on ``X``.

    Rows with more than 128 features are clustered on their top 128 principal components (PCA
    fitted on at most 20,000 random rows): k-means costs N k D per step, and the leading
    components carry the cluster structure of an embedding. Exact :class:`sklearn.cluster.KMeans`
    (k-means++, one init) up to 20,000 rows and 100 clusters; otherwise
    :class:`sklearn.cluster.MiniBatchKMeans` (20 epochs) fitted on a random subsample of
    ``min(200,000, 256 k)`` rows, then every row assigned to its nearest center (chunked matrix
    products, so memory stays bounded). ``centers`` are the mean of each cluster's rows in the
    original space. ``k`` is capped at the number of rows; all-identical rows give one cluster.
    """
    rng = _rng(seed)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    k = max(1, min(int(n_clusters), n))
    if k == 1 or _all_identical(X):
        return np.zeros(n, dtype=np.int64), X.mean(axis=0, keepdims=True, dtype=np.float64).astype(
            np.float32
        )
    labels = _kmeans_labels(_project(X, rng), k, rng)
    return labels, _means(X, labels, k)


def _kmeans_labels(Z, k, rng):
    """Cluster index of every row of ``Z`` (rows already projected by :func:`_project`) under
    the k-means of :func:`kmeans`: exact or, above the size limits, MiniBatchKMeans fitted on a
    subsample, then every row assigned to its nearest center."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    n = len(Z)
    with warnings.catch_warnings():
        # duplicate rows can leave fewer distinct clusters than k: fine, some stay empty
        warnings.simplefilter("ignore", ConvergenceWarning)
        if n <= _KMEANS_EXACT_MAX and k <= _KMEANS_EXACT_MAX_K:
            km = KMeans(n_clusters=k, n_init=1, random_state=_child_seed(rng)).fit(Z)
            return km.labels_.astype(np.int64)
        m = min(n, max(_KMEANS_FIT_PER_CLUSTER * k, 10 * k), _KMEANS_FIT_MAX)
        sub = Z[np.sort(rng.choice(n, size=m, replace=False))] if m < n else Z
        # float64: scikit-learn's float32 distances go through a slow chunked upcast
        km = MiniBatchKMeans(
            n_clusters=k,
            batch_size=4096,
            n_init=1,
            max_iter=20,
            random_state=_child_seed(rng),
        ).fit(sub.astype(np.float64))
        return _assign(Z, km.cluster_centers_.astype(np.float32))


_KMEANS_MAX_DIM = 128  # k-means runs on at most this many principal components
_PCA_FIT_MAX = 20_000


def _project(X, rng):
    """``X`` on its top :data:`_KMEANS_MAX_DIM` principal components (``X`` itself if narrower)."""
    if X.shape[1] <= _KMEANS_MAX_DIM:
        return X
    from sklearn.decomposition import PCA

    n = len(X)
    fit = X[np.sort(rng.choice(n, size=_PCA_FIT_MAX, replace=False))] if n > _PCA_FIT_MAX else X
    pca = PCA(
        n_components=min(_KMEANS_MAX_DIM, len(fit)),
        svd_solver="randomized",
        random_state=_child_seed(rng),
    ).fit(fit)
    out = np.empty((n, pca.n_components_), dtype=np.float32)
    for start in range(0, n, 65_536):
        out[start : start + 65_536] = pca.transform(X[start : start + 65_536])
    return out


def _means(X, labels, k, chunk=65_536):
    """Mean row of every cluster ``0..k-1`` (float32; an empty cluster's mean is 0). Sums in
    float64 as sparse one-hot products over chunks of rows (``np.add.at`` is ~15x slower)."""
    from scipy import sparse

    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    for start in range(0, len(X), chunk):
        lab = labels[start : start + chunk]
        onehot = sparse.csr_matrix(
            (np.ones(len(lab)), (lab, np.arange(len(lab)))), shape=(k, len(lab))
        )
        sums += onehot @ X[start : start + chunk].astype(np.float64)
    counts = np.bincount(labels, minlength=k)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def fill_quotas(capacity, n_keep, rng, weights=None):
    """Split ``n_keep`` into integer quotas ``<= capacity``, proportional to ``weights``.

    ``weights=None`` gives equal shares. Quota a group cannot use (its capacity is reached) goes
    to the other groups, again in proportion to their weights; remainders go to groups drawn at
    random (largest fractional part first). ``sum(quotas) == min(n_keep, sum(capacity))``.
    """
    capacity = np.asarray(capacity, dtype=np.int64)
    w = np.ones(len(capacity)) if weights is None else np.asarray(weights, dtype=np.float64)
    quota = np.zeros(len(capacity), dtype=np.int64)
    left = int(min(n_keep, capacity.sum()))
    while left > 0:
        open_ = np.flatnonzero((quota < capacity) & (w > 0))
        if open_.size == 0:  # only zero-weight groups have room left: use them equally
            open_ = np.flatnonzero(quota < capacity)
            wo = np.ones(open_.size)
        else:
            wo = w[open_]
        share = left * wo / wo.sum()
        give = np.floor(share).astype(np.int64)
        extra = left - int(give.sum())
        if extra:
            # the largest fractional parts, ties broken at random
            frac = share - give
            order = np.lexsort((rng.random(open_.size), -frac))
            give[order[:extra]] += 1
        give = np.minimum(give, capacity[open_] - quota[open_])
        quota[open_] += give
        left -= int(give.sum())
    return quota


def _mask(rows, n):
    """A boolean mask of length ``n``, true at ``rows``."""
    out = np.zeros(n, dtype=bool)
    out[rows] = True
    return out


def _quotas_after_include(members, quotas, is_inc, n_new, rng):
    """``(members, quotas)`` of the groups once included rows (``is_inc``, a mask over the
    index space of ``members``) are in: each included row fills a place of its group's quota,
    the groups keep only their other rows, and the ``n_new`` places left go to the groups in
    proportion to what each still lacks (quota minus included, at least 0; :func:`fill_quotas`)."""
    have = np.array([int(is_inc[m].sum()) for m in members])
    members = [m[~is_inc[m]] for m in members]
    avail = np.array([len(m) for m in members])
    return members, fill_quotas(avail, n_new, rng, weights=np.maximum(quotas - have, 0))


def _pick_inside(members, q, scores, keep, rng):
    """``q`` of ``members``: the highest / lowest scores, or at random."""
    if q >= len(members):
        return members
    if keep == "random" or scores is None:
        return rng.choice(members, size=q, replace=False)
    s = scores[members] if keep == "high" else -scores[members]
    order = np.lexsort((members, -s))  # best first, ties -> lower index
    return members[order[:q]]


def _closest(X, members, center, q):
    """The ``q`` members closest (L2) to ``center``; ties -> lower index."""
    if q >= len(members):
        return members
    diff = X[members] - center
    d = np.einsum("ij,ij->i", diff, diff)
    return members[np.lexsort((members, d))[:q]]


def _groups(labels):
    """``(group ids, list of member arrays)`` of an integer label array."""
    order = np.argsort(labels, kind="stable")
    ids, starts = np.unique(labels[order], return_index=True)
    return ids, np.split(order, starts[1:])


# --- methods ------------------------------------------------------------------------------------


@method(
    label="Top scores",
    help="The highest scores (the original ZCore selection); loses to random at 80-95% pruning "
    "on the quality benchmark",
    needs_embeddings=False,
    scores="required",
    ordered=True,
    ranking="exact",
    options=(
        Option("keep", "choice", "keep the highest or the lowest scores", choices=("high", "low")),
    ),
)
def topk(scores, embeddings, n_keep, *, seed=None, keep="high"):
    """The ``n_keep`` highest (``keep="low"``: lowest) scores, best first; ties -> lower index.

    Deterministic (``seed`` is accepted and unused). ``embeddings`` is ignored.
    """
    s = _as_scores(scores, required=True, method="topk")
    n_keep = _check_n_keep(n_keep, int(np.count_nonzero(~np.isnan(s))))
    return budget.top_order(s, keep=keep)[:n_keep]


BUDGET_FRACTION = 0.15  # cluster_balanced "auto": below this kept fraction, prototype mode
MAX_BUDGET_CLUSTERS = 1000  # prototype mode: one cluster per kept sample, up to this many
_N_CLUSTERS_RULES = ("auto", "sqrt", "budget")


def small_budget(n_eligible, n_keep, budget_fraction=BUDGET_FRACTION):
    """Whether ``n_keep`` of ``n_eligible`` samples is a *small budget* for ``cluster_balanced``:
    ``n_keep < budget_fraction * n_eligible`` (with the default 0.15: pruning more than 85 %)."""
    return int(n_keep) < budget_fraction * int(n_eligible)


def default_n_clusters(n_eligible, n_keep, rule="auto", budget_fraction=BUDGET_FRACTION):
    """Default k of ``cluster_balanced`` for ``n_keep`` of ``n_eligible`` samples.

    Parameters
    ----------
    n_eligible : int
        Samples that may be selected (N).
    n_keep : int
        Budget (K).
    rule : {"auto", "sqrt", "budget"}, default="auto"
        ``"sqrt"``: ``clip(round(sqrt(K)), 2, 100)`` clusters (several samples per cluster);
        ``"budget"``: ``min(K, 1000)`` clusters, i.e. one cluster per kept sample up to 1,000
        clusters; ``"auto"``: ``"budget"`` for a small budget (:func:`small_budget`: ``K`` below
        ``budget_fraction * N``), ``"sqrt"`` otherwise.
    budget_fraction : float, default=0.15
        Where ``"auto"`` switches (``docs/selection.md`` has the measurements behind 0.15).

    Returns
    -------
    int
        k, at least 1 and at most ``n_eligible``.
    """
    _check_choice(rule, "n_clusters", _N_CLUSTERS_RULES)
    n_eligible = max(int(n_eligible), 1)
    n_keep = max(int(n_keep), 1)
    if rule == "auto":
        rule = "budget" if small_budget(n_eligible, n_keep, budget_fraction) else "sqrt"
    if rule == "budget":
        k = min(n_keep, MAX_BUDGET_CLUSTERS)
    else:
        k = max(2, min(100, round(math.sqrt(n_keep))))
    return int(min(n_eligible, k))


_N_CLUSTERS_HELP = (
    "Number of clusters. Empty: automatic, which depends on how much you keep: keeping at least "
    "15% of the samples, about the square root of the number kept; keeping less, one cluster per "
    "kept sample (up to 1,000)"
)


@method(
    label="Cluster-balanced",
    help="k-means clusters and a quota per cluster: the best scores inside each, or the most "
    "typical samples when keeping under 15% (with its default options this is 'Default')",
    needs_embeddings=True,
    scores="optional",
    needs_scores_if=lambda o: o.get("keep", "auto") not in ("random", "closest"),
    include="quota",
    options=(
        Option(
            "n_clusters",
            "int",
            _N_CLUSTERS_HELP,
            label="Clusters (k)",
            choices=_N_CLUSTERS_RULES,
            minimum=1,
            allow_none=True,
            form=True,
        ),
        Option(
            "quota",
            "choice",
            "How the budget is shared: equally per cluster, or proportionally to cluster sizes. "
            "auto: equal when keeping under 15%, else proportional",
            label="Quota per cluster",
            choices=("auto", "equal", "proportional"),
            form=True,
        ),
        Option(
            "keep",
            "choice",
            "Inside a cluster: the highest scores, the lowest, at random, or the samples closest "
            "to its centre (the most typical). auto: closest when keeping under 15%, else high",
            label="Inside a cluster keep",
            choices=("auto", "high", "low", "random", "closest"),
            form=True,
        ),
        Option("labels", "array", "precomputed cluster labels (skips k-means)"),
        Option(
            "budget_fraction",
            "float",
            "kept fraction below which the budget is small (what the auto options switch on)",
            minimum=0.0,
            maximum=1.0,
        ),
        Option("include", "array", "rows already in the coreset (see select(include=...))"),
    ),
)
def cluster_balanced(
    scores,
    embeddings,
    n_keep,
    *,
    seed=None,
    n_clusters="auto",
    quota="auto",
    keep="auto",
    labels=None,
    budget_fraction=BUDGET_FRACTION,
    include=None,
):
    """k-means clusters of the embeddings, a quota of the budget per cluster, then the best
    samples of each cluster.

    The defaults (``"auto"``) depend on the kept fraction ``K / N`` (``N``: eligible samples),
    after Sorscher et al. (NeurIPS 2022, *Beyond neural scaling laws*: with much data keep the
    hard examples, with little data the easy, typical ones):

    - **K >= 15 % of N** (pruning up to 85 %): ``round(sqrt(K))`` clusters (2 to 100), quotas
      proportional to cluster sizes, the **highest scores** inside each cluster (the rare, hard
      samples of every region, without top-K's over-selection of a few regions);
    - **K < 15 % of N** (*small budget*, :func:`small_budget`): ``min(K, 1000)`` clusters, equal
      quotas — one sample per cluster when ``K <= 1000`` — and the sample **closest to each
      centroid** (a prototype of every region, TypiClust-like; the scores are not used).

    Each option set explicitly overrides only itself. These defaults are ``method="auto"``, chosen
    by the quality benchmark on validation splits; on its test splits they beat random in 6 of 32
    (pool, prune rate) cells, lose in 2 (a 50k pool at 90-95 %) and are level in the rest (README,
    quality section).

    Parameters
    ----------
    scores : (N,) array or None
        Used inside clusters when ``keep`` is ``"high"``/``"low"`` (or ``"auto"`` with K >= 15 %
        of N); ``NaN`` rows are never kept. Without scores, ``keep`` must be ``"random"`` or
        ``"closest"`` (``"auto"`` then needs a small budget).
    embeddings : (N, D) array
        Clustered (not needed when ``labels`` are given, except for ``keep="closest"``).
    n_keep : int
    seed : int, Generator or None
        Seeds k-means, the random split of quota remainders and ``keep="random"``.
    n_clusters : int or {"auto", "sqrt", "budget"}, default="auto"
        k, or the rule of :func:`default_n_clusters` that sets it: ``"sqrt"`` ->
        ``clip(round(sqrt(K)), 2, 100)``; ``"budget"`` -> ``min(K, 1000)`` (one cluster per kept
        sample); ``"auto"`` (or ``None``) -> ``"budget"`` for a small budget, else ``"sqrt"``.
    quota : {"auto", "equal", "proportional"}, default="auto"
        ``"equal"``: the same quota for every cluster, and quota a small cluster cannot use is
        redistributed equally to the others; ``"proportional"``: quotas proportional to cluster
        sizes (the same rule for leftovers); ``"auto"``: ``"equal"`` for a small budget, else
        ``"proportional"``.
    keep : {"auto", "high", "low", "random", "closest"}, default="auto"
        Inside a cluster: the highest scores, the lowest, uniform at random, or the samples
        closest to the cluster's centroid (the most typical; needs no scores); ``"auto"``:
        ``"closest"`` for a small budget, else ``"high"``.
    labels : (N,) int array, default=None
        Precomputed cluster labels (skips k-means; with ``keep="closest"``, pass the embeddings
        too: each centroid is then its members' mean).
    budget_fraction : float in [0, 1], default=0.15
        Kept fraction below which the budget is small (what the ``"auto"`` options switch on);
        0 never switches (the behaviour before the switch was added: ``"sqrt"``,
        ``"proportional"``, ``"high"``).
    include : (M,) int array, default=None
        Rows already in the coreset (distinct, ``M <= n_keep``; kept even without a score). The
        clusters and quotas are those of the whole budget over all rows; each included row
        counts toward its cluster's quota, and the other ``n_keep - M`` are shared in
        proportion to what each cluster still lacks (quota minus included, at least 0;
        :func:`fill_quotas`), so regions already covered get less. They come back first.

    Returns
    -------
    (K,) int64 array
        The kept row indices, sorted.

    All-identical embeddings form a single cluster, so the method reduces to ``topk`` (or random,
    or the first rows for ``"closest"``).
    """
    s = _as_scores(scores)
    X = None
    if labels is None or embeddings is not None:
        X = _as_embeddings(embeddings, required=True, method="cluster_balanced")
        if s is not None and len(s) != len(X):
            raise ValueError(f"scores has {len(s)} entries but embeddings has {len(X)} rows")
    rule = "auto" if n_clusters is None else n_clusters
    if not isinstance(rule, str):
        rule = None
    rng = _rng(seed)
    n = len(X) if X is not None else len(np.asarray(labels))
    cand = _eligible(s, X) if X is not None else _eligible(s, np.empty((n, 0)))
    inc, n_keep = check_include_budget(include, n, n_keep)
    if inc.size:
        cand = np.union1d(cand, inc)
    n_keep = _check_n_keep(n_keep, cand.size)
    small = small_budget(cand.size, n_keep, budget_fraction)
    if quota == "auto":
        quota = "equal" if small else "proportional"
    if keep == "auto":
        keep = "closest" if small else "high"
    if keep == "closest" and X is None:
        raise ValueError(
            "keep='closest' needs embeddings"
            + (" (keep='auto' picks it when keeping few samples)" if small else "")
        )
    if s is None and keep not in ("random", "closest"):
        raise ValueError(
            f"cluster_balanced without scores needs keep='random' or 'closest' (keep={keep!r}"
            + (", from keep='auto' for this budget" if not small else "")
            + ")"
        )
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    if labels is None:
        k = default_n_clusters(cand.size, n_keep, rule, budget_fraction) if rule else n_clusters
        k = check_int(k, "n_clusters", min_value=1)
        lab, centers = kmeans(_rows(X, cand), k, seed=rng)
    else:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape ({n},); got {lab.shape}")
        lab = lab[cand]
    _, members = _groups(lab)
    members = [cand[m] for m in members]
    sizes = np.array([len(m) for m in members])
    q = fill_quotas(sizes, n_keep, rng, weights=None if quota == "equal" else sizes)
    if inc.size:  # included rows fill their cluster's quota; the rest goes where it is lacking
        members, q = _quotas_after_include(members, q, _mask(inc, n), n_keep - inc.size, rng)
    if keep == "closest":
        if labels is None:
            ids, _ = _groups(lab)
            cents = [centers[c] for c in ids]
        else:  # precomputed labels: the centroid is the members' mean
            cents = [X[m].mean(axis=0) for m in members]
        picked = [_closest(X, m, c, int(qi)) for c, m, qi in zip(cents, members, q) if qi]
    else:
        picked = [_pick_inside(m, int(qi), s, keep, rng) for m, qi in zip(members, q) if qi]
    out = np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    return np.concatenate([inc, out]).astype(np.int64)


@method(
    label="Score-stratified (CCS)",
    help="Equal-width score strata, the budget spread evenly over them",
    needs_embeddings=False,
    scores="required",
    options=(
        Option(
            "beta",
            "float",
            "Fraction of the samples dropped first, at one end of the scores",
            label="Drop this fraction first",
            minimum=0.0,
            maximum=1.0,
            form=True,
        ),
        Option(
            "drop",
            "choice",
            "Which end of the scores the first cut drops",
            label="Drop which end of the scores",
            choices=("low", "high"),
            form=True,
        ),
        Option("n_strata", "int", "number of equal-width score strata", minimum=1),
        Option("include", "array", "rows already in the coreset (see select(include=...))"),
    ),
    include="quota",
    region="score stratum",
)
def stratified(
    scores,
    embeddings,
    n_keep,
    *,
    seed=None,
    beta=0.0,
    drop="low",
    n_strata=50,
    include=None,
):
    """Coverage-centric coreset selection (CCS; Zheng et al., ICLR 2023) on any score.

    1. Drop the ``beta`` fraction of the eligible samples at the ``drop`` end of the score range
       (``"low"``: the lowest scores; ``"high"``: the highest). The cut is reduced when fewer than
       ``n_keep`` samples would remain.
    2. Split the remaining score range into ``n_strata`` strata of equal width.
    3. Fill the budget stratum by stratum, smallest stratum first, each getting
       ``min(its size, budget left / strata left)``: what a small stratum cannot use goes to the
       larger ones.
    4. Sample uniformly at random inside each stratum.

    ``embeddings`` is ignored. Equal scores everywhere give one stratum (uniform sampling).

    ``include``: rows already in the coreset. They are kept (first, in the given order) and count
    against ``n_keep``; steps 1-3 run as without them (an included row is never dropped), each
    included row then fills a place of its stratum's quota, and the places left go to the
    strata in proportion to what each still lacks (:func:`fill_quotas`), sampled at random among
    their other rows. An included row without a score counts against the budget only.
    """
    s = _as_scores(scores, required=True, method="stratified")
    rng = _rng(seed)
    inc, n_keep = check_include_budget(include, len(s), n_keep)
    cand = np.flatnonzero(~np.isnan(s))
    n_keep = _check_n_keep(n_keep, np.union1d(cand, inc).size)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    n_drop = min(int(math.floor(beta * cand.size)), max(cand.size - n_keep, 0))
    if n_drop:
        key = s[cand] if drop == "low" else -s[cand]
        order = np.lexsort((cand, key))
        cand = np.sort(cand[order[n_drop:]])
    if inc.size:  # an included row is never dropped
        cand = np.union1d(cand, inc[~np.isnan(s[inc])])
    v = s[cand]
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        stratum = np.minimum(((v - lo) / (hi - lo) * n_strata).astype(np.int64), n_strata - 1)
    else:
        stratum = np.zeros(len(v), dtype=np.int64)
    _, members = _groups(stratum)
    members = [cand[m] for m in members]
    left = n_keep
    quotas = np.zeros(len(members), dtype=np.int64)
    order = np.argsort([len(m) for m in members], kind="stable")  # smallest stratum first
    for i, j in enumerate(order):
        quotas[j] = min(len(members[j]), left // (len(members) - i))
        left -= quotas[j]
    if inc.size:  # included rows fill their stratum's quota; the rest goes where it is lacking
        members, quotas = _quotas_after_include(
            members, quotas, _mask(inc, len(s)), n_keep - inc.size, rng
        )
    picked = [rng.choice(members[j], size=quotas[j], replace=False) for j in order if quotas[j]]
    out = np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    return np.concatenate([inc, out]).astype(np.int64)


def default_hierarchy(n):
    """Default cluster counts of ``hierarchical_kmeans``, finest first: ``k1 = round(sqrt(N))``
    (at least 2, at most 10,000), then ``k_{l+1} = round(sqrt(k_l))`` while that is >= 4."""
    k = int(min(10_000, max(2, round(math.sqrt(n)))))
    levels = [k]
    while round(math.sqrt(levels[-1])) >= 4:
        levels.append(int(round(math.sqrt(levels[-1]))))
    return tuple(levels)


_RESAMPLE_MAX_ITER = 50  # Lloyd iterations of a resampling-clustering step, at most


def _resampled_kmeans(X, k, steps, resample_size, rng):
    """k-means on ``X`` (:func:`kmeans`), then ``steps`` resampling-clustering steps: k-means on
    the union of the ``resample_size`` points closest to each current centroid (started from the
    current centroids, at most :data:`_RESAMPLE_MAX_ITER` Lloyd iterations), and every point
    re-assigned to the new centroids. Dense concepts then hold no more weight than sparse ones
    when the centroids are re-estimated, so the centroids spread over concepts rather than
    concentrate where the data are dense.

    Like :func:`kmeans`, every step runs on the top principal components of ``X``
    (:func:`_project`); the returned ``centers`` are the mean of each cluster's rows of ``X``."""
    from sklearn.cluster import KMeans

    X = np.ascontiguousarray(X, dtype=np.float32)
    k = max(1, min(int(k), len(X)))
    if k < 2 or steps == 0 or _all_identical(X):
        return kmeans(X, k, seed=rng)
    Z = _project(X, rng)
    labels = _kmeans_labels(Z, k, rng)
    centers = _means(Z, labels, k)
    centers_x = None  # the centroids in the space of X (None: the means of the clusters)
    for _ in range(steps):
        ids, members = _groups(labels)
        d = _sq_dist_to_own(Z, centers, labels)
        rows = np.concatenate(
            [
                m
                if len(m) <= resample_size
                else m[np.argpartition(d[m], resample_size - 1)[:resample_size]]
                for m in members
            ]
        )
        used = centers[ids]
        if len(rows) <= len(used):
            break
        if len(rows) > _KMEANS_FIT_MAX:  # fitted on a random subsample, as in kmeans()
            rows = rows[np.sort(rng.choice(len(rows), size=_KMEANS_FIT_MAX, replace=False))]
        km = KMeans(n_clusters=len(used), init=used, n_init=1, max_iter=_RESAMPLE_MAX_ITER)
        km.fit(Z[rows])
        centers = km.cluster_centers_.astype(np.float32)
        # chunks of 8,192 rows: the (rows x k) distance block stays in cache (2x faster at k=1,000)
        labels = _assign(Z, centers, chunk=8192)
        # a centroid in the space of X: the mean of the re-fitted points of its cluster
        centers_x = centers if Z is X else _means(X[rows], km.labels_, len(centers))
    return labels, _means(X, labels, len(centers)) if centers_x is None else centers_x


def _sq_dist_to_own(Z, centers, labels, chunk=65_536):
    """Squared L2 distance of every row of ``Z`` to its own center ``centers[labels]``."""
    out = np.empty(len(Z), dtype=np.float32)
    for start in range(0, len(Z), chunk):
        diff = Z[start : start + chunk] - centers[labels[start : start + chunk]]
        out[start : start + chunk] = np.einsum("ij,ij->i", diff, diff)
    return out


@method(
    label="Hierarchical k-means",
    help="Balanced sampling over multi-level k-means clusters (concepts)",
    needs_embeddings=True,
    scores="optional",
    needs_scores_if=lambda o: o.get("inside") == "score",
    options=(
        Option("levels", "ints", "clusters per level, finest first", minimum=1),
        Option("resample_steps", "int", "resampling-clustering steps per level", minimum=0),
        Option("resample_size", "int", "points re-fitted per centroid", minimum=1),
        Option(
            "inside",
            "choice",
            "Inside a leaf cluster: samples at random, the closest to its centre, or the highest "
            "scores",
            label="Inside a leaf",
            choices=("random", "closest", "score"),
            form=True,
        ),
        Option("include", "array", "rows already in the coreset (see select(include=...))"),
    ),
    include="quota",
    region="leaf cluster",
)
def hierarchical_kmeans(
    scores,
    embeddings,
    n_keep,
    *,
    seed=None,
    levels=None,
    resample_steps=3,
    resample_size=None,
    inside="random",
    include=None,
):
    """Hierarchical k-means curation (after Vo et al., 2024): balanced sampling over concepts.

    Clustering: level 1 runs k-means with ``levels[0]`` clusters on the embeddings; level ``l+1``
    runs k-means with ``levels[l]`` clusters on the centroids of level ``l``. At every level,
    ``resample_steps`` resampling-clustering steps re-fit the centroids on the ``resample_size``
    points closest to each centroid (default: half the mean cluster size, at least 1), which moves
    centroids away from dense regions and spreads them over concepts. As in :func:`kmeans`, the
    clustering runs on the top 128 principal components of wider embeddings, and a step fits on
    at most 200,000 of its points (drawn at random) before every point is re-assigned.

    Sampling: the budget is split equally over the top-level clusters (a cluster that holds fewer
    samples than its share gives the rest to the others), then equally over the children of each
    cluster, level by level down to the leaf clusters, where ``inside`` picks ``"random"``
    samples, the ``"closest"`` to the leaf centroid, or the highest ``"score"``.

    Parameters
    ----------
    levels : tuple of int, default=None
        Clusters per level, finest first; ``None`` -> :func:`default_hierarchy`.
    resample_steps : int, default=3
    resample_size : int, default=None
    inside : {"random", "closest", "score"}, default="random"
    include : (M,) int array, default=None
        Rows already in the coreset (``M <= n_keep``), returned first. They are clustered with
        the others, and the quotas are those of the whole budget; each included row then fills a
        place of its leaf cluster's quota, and the places left go to the leaves in proportion to
        what each still lacks (:func:`fill_quotas`), picked by ``inside`` among their other rows.
    """
    s = _as_scores(scores)
    X = _as_embeddings(embeddings, required=True, method="hierarchical_kmeans")
    if s is not None and len(s) != len(X):
        raise ValueError(f"scores has {len(s)} entries but embeddings has {len(X)} rows")
    if inside == "score" and s is None:
        raise ValueError("inside='score' needs scores")
    rng = _rng(seed)
    inc, n_keep = check_include_budget(include, len(X), n_keep)
    cand = _eligible(s, X)
    if inc.size:
        cand = np.union1d(cand, inc)
    n_keep = _check_n_keep(n_keep, cand.size)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    Xc = _rows(X, cand)
    levels = default_hierarchy(len(Xc)) if levels is None else levels
    # parents[l][i]: cluster at level l+1 of the cluster i of level l (level 0 = the samples)
    parents, points, leaf_centers = [], Xc, None
    for k in levels:
        if len(points) <= 1:
            break
        rs = resample_size
        if rs is None:
            rs = max(1, len(points) // (2 * min(k, len(points))))
        lab, centers = _resampled_kmeans(points, k, resample_steps, rs, rng)
        # drop empty clusters, renumber 0..m-1
        used, lab = np.unique(lab, return_inverse=True)
        centers = centers[used]
        parents.append(lab)
        if leaf_centers is None:
            leaf_centers = centers
        points = centers
    # capacity of every cluster at every level (in samples)
    caps = [np.ones(len(Xc), dtype=np.int64)]
    for lab in parents:
        caps.append(np.bincount(lab, weights=caps[-1], minlength=lab.max() + 1).astype(np.int64))
    # top-down: the quota of each cluster of level L, split equally across its children
    quota = fill_quotas(caps[-1], n_keep, rng)
    for lv in range(len(parents) - 1, 0, -1):
        lab, cap = parents[lv], caps[lv]
        child_q = np.zeros(len(lab), dtype=np.int64)
        ids, members = _groups(lab)
        for c, m in zip(ids, members):
            if quota[c]:
                child_q[m] = fill_quotas(cap[m], int(quota[c]), rng)
        quota = child_q
    # leaves: pick samples inside each level-1 cluster
    picked = []
    ids, members = _groups(parents[0])
    if inc.size:  # included rows fill their leaf's quota; the rest goes where it is lacking
        is_inc = np.isin(cand, inc)
        members, leaf_q = _quotas_after_include(members, quota[ids], is_inc, n_keep - inc.size, rng)
        quota = np.zeros_like(quota)
        quota[ids] = leaf_q
    for c, m in zip(ids, members):
        q = int(quota[c])
        if not q:
            continue
        if inside == "closest":
            picked.append(_closest(Xc, m, leaf_centers[c], q))
        else:
            picked.append(
                _pick_inside(m, q, None if s is None else s[cand], _inside_keep(inside), rng)
            )
    out = np.sort(cand[np.concatenate(picked)]) if picked else np.empty(0, dtype=np.int64)
    return np.concatenate([inc, out]).astype(np.int64)


def _inside_keep(inside):
    return "high" if inside == "score" else "random"


@method(
    label="Near a target (SimCore)",
    help="The samples most similar to a saved view",
    needs_embeddings=True,
    scores="unused",
    options=(
        Option("target_embeddings", "array", "(M, D) embeddings of the target samples"),
        Option("n_centroids", "int", "k-means centroids of the target", minimum=1),
        Option(
            "min_similarity",
            "float",
            "stop when a round's mean cosine similarity falls below this",
            minimum=-1.0,
            maximum=1.0,
        ),
    ),
)
def target(
    scores,
    embeddings,
    n_keep,
    *,
    seed=None,
    target_embeddings=None,
    n_centroids=None,
    min_similarity=None,
):
    """SimCore (Kim et al., CVPR 2023): the pool samples most similar to a target set.

    k-means (``n_centroids``, default ``min(100, len(target))``) on the L2-normalised target
    embeddings; then rounds: in each round every target centroid, in turn, takes its most similar
    (cosine) pool sample not taken yet. Stops when ``n_keep`` samples are taken or — the stopping
    rule — when the mean similarity of a round's picks falls below ``min_similarity`` (that
    round's picks below the threshold are not kept), so fewer than ``n_keep`` may come back.
    ``scores`` only mark missing rows (``NaN``). Raises ``ValueError`` on an empty target.
    """
    s = _as_scores(scores)
    X = _as_embeddings(embeddings, required=True, method="target")
    if target_embeddings is None or len(np.asarray(target_embeddings)) == 0:
        raise ValueError(
            "method 'target' needs target_embeddings: a non-empty (M, D) array of the samples "
            "the coreset should resemble"
        )
    T = _as_embeddings(target_embeddings, required=True, method="target", name="target_embeddings")
    if T.shape[1] != X.shape[1]:
        raise ValueError(
            f"target_embeddings have {T.shape[1]} features but embeddings have {X.shape[1]}"
        )
    if s is not None and len(s) != len(X):
        raise ValueError(f"scores has {len(s)} entries but embeddings has {len(X)} rows")
    rng = _rng(seed)
    cand = _eligible(s, X)
    n_keep = _check_n_keep(n_keep, cand.size)
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    Tn = l2_normalize(T)
    k = min(100, len(T)) if n_centroids is None else n_centroids
    _, centers = kmeans(Tn, k, seed=rng)
    centers = l2_normalize(centers)
    Xn = l2_normalize(_rows(X, cand))
    k = len(centers)
    # each centroid's pool candidates, most similar first (a prefix; extended when exhausted)
    depth = min(len(Xn), 4 * math.ceil(n_keep / k) + 8)
    sims = Xn @ centers.T  # (n, k)
    lists = [_top_order(sims[:, j], depth) for j in range(k)]
    pos = np.zeros(k, dtype=np.int64)
    taken = np.zeros(len(Xn), dtype=bool)
    picked = []
    while len(picked) < n_keep:
        round_picks, round_sims = [], []
        for j in range(k):
            if len(picked) + len(round_picks) >= n_keep:
                break
            while True:
                if pos[j] >= len(lists[j]):
                    lists[j] = _top_order(sims[:, j], len(Xn))
                i = lists[j][pos[j]]
                pos[j] += 1
                if not taken[i]:
                    break
            taken[i] = True
            round_picks.append(i)
            round_sims.append(sims[i, j])
        if min_similarity is not None and np.mean(round_sims) < min_similarity:
            picked += [i for i, v in zip(round_picks, round_sims) if v >= min_similarity]
            break
        picked += round_picks
    return np.sort(cand[np.asarray(picked, dtype=np.int64)]).astype(np.int64)


def _top_order(v, depth):
    if depth >= len(v):
        return np.argsort(-v, kind="stable")
    part = np.argpartition(-v, depth - 1)[:depth]
    return part[np.argsort(-v[part], kind="stable")]


# --- near-duplicates ----------------------------------------------------------------------------


@dataclasses.dataclass
class DuplicateGroups:
    """Result of :func:`near_duplicates`.

    keep : int64 array, sorted
        Rows to keep: every row that is in no group, and the representative of each group.
    groups : list of int64 arrays
        Each group of >= 2 near-duplicates, its representative first.
    """

    keep: np.ndarray
    groups: list

    @property
    def n_groups(self):
        return len(self.groups)

    @property
    def n_removed(self):
        return int(sum(len(g) - 1 for g in self.groups))

    @property
    def removed(self):
        """Rows removed (every group member but its representative), sorted."""
        if not self.groups:
            return np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate([g[1:] for g in self.groups]))


def near_duplicates(embeddings, threshold, *, scores=None, chunk=2048):
    """Groups of near-duplicate rows: L2 distance ``<= threshold`` between L2-normalised
    embeddings (``threshold`` in [0, 2]; 0.1 is about cosine similarity >= 0.995).

    Groups are the connected components of the "within threshold" graph (single linkage: A~B and
    B~C put A, B, C together even if A and C are farther apart). Each group keeps one
    representative: the highest score (ties and ``scores=None``: the lowest index); rows whose
    score is ``NaN`` are never representatives unless the whole group is missing. Below
    ``zcore.core.neighbors.ANN_MIN_ROWS`` rows (or without faiss-cpu), exact all-pairs search in
    chunks of ``chunk`` rows: O(N^2 D) time, O(chunk N) memory; from there, an approximate
    inverted-file index (faiss) that may miss a few pairs (recall measured by
    ``benchmarks/bench_neardup.py``), see :mod:`zcore.core.neighbors`.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .neighbors import threshold_pairs

    X = _as_embeddings(embeddings, required=True, method="near_duplicates")
    threshold = check_float(threshold, "threshold", min_value=0.0, max_value=2.0)
    s = _as_scores(scores, n=len(X))
    n = len(X)
    Xn = np.asarray(l2_normalize(X), dtype=np.float32)
    min_cos = 1.0 - threshold**2 / 2.0 - 1e-6
    r, c = threshold_pairs(Xn, min_cos, search="auto", chunk=chunk)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    _, members = _groups(comp)
    groups = []
    keep = np.ones(n, dtype=bool)
    for m in members:
        if len(m) < 2:
            continue
        if s is None:
            order = np.sort(m)
        else:
            v = np.where(np.isnan(s[m]), -np.inf, s[m])
            order = m[np.lexsort((m, -v))]
        groups.append(order.astype(np.int64))
        keep[order[1:]] = False
    groups.sort(key=lambda g: int(g[0]))
    return DuplicateGroups(keep=np.flatnonzero(keep).astype(np.int64), groups=groups)


# --- the default ----------------------------------------------------------------------------

#: What ``method="auto"`` runs: chosen by the quality benchmark's protocol on validation splits
#: of seven pools (``benchmarks/quality.py``; README, *Does the coreset beat random?*).
#: ``cluster_balanced`` with its own defaults: ZCore's highest scores inside round(sqrt(K))
#: k-means clusters when keeping >= 15 % of the samples, one prototype per cluster below.
AUTO = {"method": "cluster_balanced", "options": {}}

auto = alias(
    DEFAULT_METHOD,
    target=AUTO["method"],
    target_options=AUTO["options"],
    label="Default (benchmarked)",
    help="Cluster-balanced with its defaults, chosen on held-out labelled data: better than "
    "random in some settings, as good as random when keeping 20-30% or on imbalanced data, and "
    "worse on a 50,000-sample pool cut to 5-10%",
)

# --- dispatch -----------------------------------------------------------------------------------

from . import peers  # noqa: E402,F401  (registers typiclust, semdedup, prototypicality)


def needs_scores(method, options=None):
    """Whether ``method`` with ``options`` cannot run without scores (see its spec)."""
    return get_spec(method).needs_scores(options)


def get_method(name):
    """The (validating) function of method ``name``; ``ValueError`` listing the valid names."""
    return get_spec(name).function


def select(
    method,
    n_keep,
    *,
    scores=None,
    embeddings=None,
    seed=None,
    dedup_threshold=None,
    return_duplicates=False,
    include=None,
    ranked=False,
    **options,
):
    """Run selection ``method`` (a registered name, :func:`zcore.core.registry.method_names`) and
    return the kept row indices (best first for an ordered method such as ``topk``, else sorted).

    With ``dedup_threshold``, near-duplicates (:func:`near_duplicates` on ``embeddings``) are
    removed first — one representative per group, the highest score — and the method selects
    among the rest. ``options`` go to the method (e.g. ``n_clusters``, ``beta``,
    ``target_embeddings``) and are checked by its spec. ``return_duplicates``: return
    ``(indices, DuplicateGroups or None)``.

    ``include``: row indices already in the coreset (e.g. the samples labelled so far); they
    count against ``n_keep`` and the method completes them as its spec's ``include`` says
    (:data:`zcore.core.registry.INCLUDE_MODES`). With ``dedup_threshold``, the near-duplicates
    of an included row are removed (the other groups keep their representative). They come
    back first. ``ranked``: return the rows in the order they enter the coreset as the budget grows
    (:func:`select_ranked`).
    """
    spec = get_spec(method)
    if ranked:
        out, dups = select_ranked(
            method,
            n_keep,
            scores=scores,
            embeddings=embeddings,
            seed=seed,
            dedup_threshold=dedup_threshold,
            include=include,
            **options,
        )
        return (out, dups) if return_duplicates else out
    n_rows = _n_rows(scores, embeddings)
    inc = check_include(include, n_rows)
    if inc.size and spec.include != "fill":
        return _select_quota_include(
            spec, n_keep, inc, scores, embeddings, seed, dedup_threshold, return_duplicates, options
        )
    if inc.size:
        inc, n_keep = check_include_budget(inc, n_rows, n_keep)
        s = _as_scores(scores)
        X = _as_embeddings(embeddings)
        dups, pool = _dedup_pool(X, s, inc, dedup_threshold, n_rows)
        rest = np.setdiff1d(pool, inc)
        sub = np.empty(0, dtype=np.int64)
        if n_keep > inc.size:
            sub = select(
                method,
                n_keep - inc.size,
                scores=None if s is None else s[rest],
                embeddings=None if X is None else X[rest],
                seed=seed,
                **options,
            )
        out = np.concatenate([inc, rest[sub]]).astype(np.int64)
        return (out, dups) if return_duplicates else out
    fn = spec.function
    dups = None
    if dedup_threshold is None:
        out = fn(scores, embeddings, n_keep, seed=seed, **options)
    else:
        X = _as_embeddings(embeddings, required=True, method="near-duplicate removal")
        s = _as_scores(scores, n=len(X))
        dups = near_duplicates(X, dedup_threshold, scores=s)
        keep = dups.keep
        sub = fn(None if s is None else s[keep], X[keep], n_keep, seed=seed, **options)
        out = keep[sub]
        if not spec.ordered:
            out = np.sort(out)
    return (out, dups) if return_duplicates else out


def _select_quota_include(
    spec, n_keep, inc, scores, embeddings, seed, dedup_threshold, return_duplicates, options
):
    """:func:`select` with ``include`` for a method whose spec's ``include`` is not ``"fill"``: the
    method takes ``include`` itself (near-duplicates removed first; included rows stay)."""
    dups = None
    if dedup_threshold is None:
        out = spec.function(scores, embeddings, n_keep, seed=seed, include=inc, **options)
    else:
        X = _as_embeddings(embeddings, required=True, method="near-duplicate removal")
        s = _as_scores(scores, n=len(X))
        dups, keep = _dedup_pool(X, s, inc, dedup_threshold, len(X))
        pos = np.searchsorted(keep, inc)
        sub = spec.function(
            None if s is None else s[keep], X[keep], n_keep, seed=seed, include=pos, **options
        )
        out = keep[sub]
    return (out, dups) if return_duplicates else out


def _dedup_pool(X, s, inc, dedup_threshold, n):
    """``(DuplicateGroups or None, rows that may be kept)`` with ``inc`` included: every row
    without ``dedup_threshold``; else each group's representative, except that a group holding
    an included row keeps only its included rows (its other near-duplicates are removed)."""
    if dedup_threshold is None:
        return None, np.arange(n)
    X = _as_embeddings(X, required=True, method="near-duplicate removal")
    dups = near_duplicates(X, dedup_threshold, scores=_as_scores(s, n=len(X)))
    pool = np.zeros(n, dtype=bool)
    pool[dups.keep] = True
    for g in dups.groups:
        if np.isin(g, inc).any():
            pool[g] = False
    pool[inc] = True
    return dups, np.flatnonzero(pool)


def _n_rows(scores, embeddings):
    if embeddings is not None:
        return len(embeddings)
    if scores is not None:
        return len(scores)
    raise ValueError("pass scores and/or embeddings")


def check_include(include, n, n_keep=None):
    """``include`` as an int64 array of distinct row indices in ``[0, n)``, in the given order;
    ``ValueError`` saying which are out of range or repeated, or (with a budget ``n_keep``)
    that there are more than the budget."""
    if include is None:
        return np.empty(0, dtype=np.int64)
    inc = np.asarray(include)
    if inc.size == 0:
        return np.empty(0, dtype=np.int64)
    if n_keep is not None and inc.size > n_keep:
        raise ValueError(
            f"{inc.size} samples to include but the budget is {n_keep}: raise the budget to "
            f"at least {inc.size} or include fewer samples"
        )
    if inc.ndim != 1 or not np.issubdtype(inc.dtype, np.integer):
        raise ValueError(f"include must be a 1-d array of row indices; got {inc.dtype} {inc.shape}")
    bad = inc[(inc < 0) | (inc >= n)]
    if bad.size:
        raise ValueError(f"include has rows outside 0..{n - 1}: {bad[:5].tolist()}")
    u, counts = np.unique(inc, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"include repeats rows {u[counts > 1][:5].tolist()}: pass each once")
    return inc.astype(np.int64)


def check_include_budget(include, n, n_keep):
    """``(rows, n_keep)``: :func:`check_include` against the budget ``n_keep``, which is
    checked as a non-negative int when there are rows to include (returned as given if none)."""
    if include is not None and np.size(include):
        n_keep = check_int(n_keep, "n_keep", min_value=0)
    return check_include(include, n, n_keep), n_keep


def rank_sizes(n_keep, n_included=0):
    """The coreset sizes at which :func:`select_ranked` grows a ``"nested"`` method: ``n_keep``
    halved (rounding up) down to 1, increasing, those above ``n_included``."""
    sizes = []
    m = int(n_keep)
    while m >= 1:
        sizes.append(m)
        if m == 1:
            break
        m = math.ceil(m / 2)
    return [m for m in reversed(sizes) if m > n_included]


def select_ranked(
    method,
    n_keep,
    *,
    scores=None,
    embeddings=None,
    seed=None,
    dedup_threshold=None,
    include=None,
    **options,
):
    """The coreset in the order its rows enter it as the budget grows, and the near-duplicate
    groups (or ``None``): ``(indices, DuplicateGroups or None)``.

    The ``include`` rows come first (in the given order). Then, by the method's spec
    ``ranking`` (:data:`zcore.core.registry.RANKING_MODES`):

    - ``"exact"`` (``topk``): the method's own order, best first; every prefix of length ``m``
      is the method's coreset of size ``m``;
    - ``"nested"`` (all others): for each size ``m`` of :func:`rank_sizes` (``n_keep`` halved
      down to 1), the rows that :func:`select` with ``include=<the previous prefix>`` and
      the same seed adds, best score first (ties and no scores: lower index). The prefix of
      length ``m`` is then the method's coreset of size ``m`` grown from the prefix before;
      the first is its plain coreset of that size. Runs the method once per size (about log2(K) + 1 runs).

    ``seed``: every step runs with the same int seed (``None`` or a generator: one drawn).
    """
    spec = get_spec(method)
    n = _n_rows(scores, embeddings)
    inc = check_include(include, n)
    n_keep = check_int(n_keep, "n_keep", min_value=0)
    kw = dict(dedup_threshold=dedup_threshold, scores=scores, embeddings=embeddings, **options)
    if spec.ranking == "exact":
        out, dups = select(method, n_keep, seed=seed, include=inc, return_duplicates=True, **kw)
        return out, dups
    check_include(inc, n, n_keep)
    if not isinstance(seed, (int, np.integer)):
        seed = _child_seed(_rng(seed))
    s = _as_scores(scores)
    prefix, dups = inc, None
    for m in rank_sizes(n_keep, inc.size):
        got, dups = select(method, m, seed=int(seed), include=prefix, return_duplicates=True, **kw)
        new = np.setdiff1d(got, prefix)
        if s is not None:
            v = np.where(np.isnan(s[new]), -np.inf, s[new])
            new = new[np.lexsort((new, -v))]
        prefix = np.concatenate([prefix, new]).astype(np.int64)
        if len(got) < m:  # fewer rows eligible (or target's stopping rule): the order ends
            break
    return prefix, dups


#: How :func:`select_balanced` shares the budget between groups.
BALANCE_QUOTAS = ("proportional", "equal")


def select_balanced(
    method,
    n_keep,
    groups,
    *,
    quota="proportional",
    scores=None,
    embeddings=None,
    seed=None,
    dedup_threshold=None,
    **options,
):
    """A selection balanced over groups (e.g. the values of a label or metadata field).

    Each group gets a quota of the budget — ``"proportional"`` to its eligible rows or
    ``"equal"`` — and quota a group cannot use (it has fewer rows) goes to the others
    (:func:`fill_quotas`); then ``method`` (with ``options``, and ``dedup_threshold``) selects
    the group's quota among its rows (:func:`select`). A group whose quota is all its rows keeps
    them all. Rows whose group is missing (``-1``), or whose score is ``NaN`` when scores are
    given, are never kept.

    Parameters
    ----------
    method : str
        A registered selection method.
    n_keep : int
        The budget, over all groups.
    groups : (N,) int array
        Group code of every row, ``-1`` for none.
    quota : {"proportional", "equal"}, default="proportional"
    scores, embeddings, seed, dedup_threshold, **options
        As for :func:`select`; every group draws from one generator seeded by ``seed``.

    Returns
    -------
    (K,) int64 array
        Sorted row indices (for an ordered method such as ``topk``: by decreasing score).

    Raises
    ------
    ValueError
        When the budget is smaller than the number of groups that have rows (each group needs
        at least one kept sample to be balanced), or for bad ``quota``/``groups``.
    """
    spec = get_spec(method)
    options = spec.check_options(options)
    if quota not in BALANCE_QUOTAS:
        raise ValueError(f"quota must be one of {list(BALANCE_QUOTAS)}; got {quota!r}")
    g = np.asarray(groups)
    if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must be a 1-d int array (-1: no group); got {g.dtype} {g.shape}")
    s = _as_scores(scores, n=len(g))
    X = _as_embeddings(embeddings)
    if X is not None and len(X) != len(g):
        raise ValueError(f"embeddings has {len(X)} rows but groups has {len(g)}")
    eligible = g >= 0
    if s is not None:
        eligible &= ~np.isnan(s)
    rng = _rng(seed)
    ids, members = _groups(np.where(eligible, g, -1))
    members = [m for i, m in zip(ids, members) if i >= 0]
    n_keep = _check_n_keep(n_keep, int(sum(len(m) for m in members)))
    if n_keep < len(members):
        raise ValueError(
            f"balancing over {len(members)} groups needs a budget of at least one sample per "
            f"group; the budget is {n_keep}: keep more, or balance by a field with fewer values"
        )
    sizes = np.array([len(m) for m in members])
    quotas = fill_quotas(sizes, n_keep, rng, weights=None if quota == "equal" else sizes)
    picked = []
    for m, q in zip(members, quotas):
        child = _child_seed(rng)
        if q == 0:
            continue
        if q >= len(m):
            picked.append(m)
            continue
        sub = select(
            method,
            int(q),
            scores=None if s is None else s[m],
            embeddings=None if X is None else X[m],
            seed=child,
            dedup_threshold=dedup_threshold,
            **options,
        )
        picked.append(m[sub])
    out = np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.empty(0, np.int64)
    if spec.ordered and s is not None:
        out = out[np.lexsort((out, -s[out]))]
    return out
