"""A slow, obviously-correct implementation of the ZCore law, point by point.

Only the random draws are shared with the package (they *define* the points); everything else —
distances, the covering sample, the redundancy neighbours and their penalties — is written out
here directly from the law, with float64 penalty sums (no fixed point).
"""

import numpy as np

from zcore.core.draws import draw_init, draw_points, embedding_stats


def law_components(X, dims, coords, k, exp):
    """Coverage counts and float64 penalties of the given points, one point at a time."""
    Xd = np.asarray(X, dtype=np.float32).astype(np.float64)
    n = Xd.shape[0]
    coverage = np.zeros(n)
    penalty = np.zeros(n)
    for p in range(len(dims)):
        cols = Xd[:, dims[p]]

        def l1(ref, cols=cols):
            total = np.abs(cols[:, 0] - ref[0])
            for j in range(1, cols.shape[1]):
                total = total + np.abs(cols[:, j] - ref[j])
            return total

        to_point = l1(coords[p])
        c = min(range(n), key=lambda i: (to_point[i], i))
        coverage[c] += 1
        to_c = l1(cols[c])
        neighbours = sorted((to_c[i], i) for i in range(n) if i != c)[:k]
        if neighbours[0][0] == 0.0:
            penalty[neighbours[0][1]] += 1.0
        else:
            inv = [1.0 / d**exp for d, _ in neighbours]
            total = sum(inv)
            for (_, i), w in zip(neighbours, inv):
                penalty[i] += w / total
    return coverage, penalty


def normalise(raw):
    """Min-max to [0, 1]; a constant input gives 0.5."""
    lo, hi = raw.min(), raw.max()
    return np.full(raw.shape, 0.5) if not hi > lo else (raw - lo) / (hi - lo)


def oracle_scores(
    X, *, n_samples, sample_dim=2, redund_nn=1000, redund_exp=4.0, seed=0, rand_init=True
):
    """Scores of ``zcore_scores(X, ...)`` with the same options, from the law."""
    X = np.asarray(X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    init = draw_init(rng, X.shape[0])
    dims, coords = draw_points(rng, embedding_stats(X), n_samples, sample_dim)
    coverage, penalty = law_components(X, dims, coords, min(redund_nn, X.shape[0] - 2), redund_exp)
    return normalise(coverage - penalty + (init if rand_init else 0.0))
