"""A slow, obviously-correct implementation of the ZCore law, point by point, in plain Python.

Only the random draws are shared with the package (they *define* the points); everything else —
distances, the covering sample, the redundancy neighbours and their penalties — is written out
here directly from the law, with float64 penalty sums (no fixed point).
"""

import numpy as np

from zcore.core.draws import draw_init, draw_points, embedding_stats


def oracle_components(X, *, n_samples, sample_dim=2, redund_nn=1000, redund_exp=4.0, seed=0):
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    stats = embedding_stats(X)
    init = draw_init(rng, n)
    dims, coords = draw_points(rng, stats, n_samples, sample_dim)
    k = min(redund_nn, n - 2)
    coverage = np.zeros(n)
    penalty = np.zeros(n)
    Xd = X.astype(np.float64)
    for p in range(n_samples):
        dp, cp = dims[p], coords[p]

        def l1(i, ref, dp=dp):
            total = 0.0
            for j in range(len(dp)):
                total += abs(Xd[i, dp[j]] - ref[j])
            return total

        dist_to_point = [(l1(i, cp), i) for i in range(n)]
        c = min(dist_to_point)[1]
        coverage[c] += 1
        center = [Xd[c, dp[j]] for j in range(len(dp))]
        neighbours = sorted((l1(i, center), i) for i in range(n) if i != c)[:k]
        if neighbours[0][0] == 0.0:
            penalty[neighbours[0][1]] += 1.0
        else:
            inv = [1.0 / d**redund_exp for d, _ in neighbours]
            total = sum(inv)
            for (_, i), w in zip(neighbours, inv):
                penalty[i] += w / total
    return coverage, penalty, init


def oracle_scores(
    X, *, n_samples, sample_dim=2, redund_nn=1000, redund_exp=4.0, seed=0, rand_init=True
):
    coverage, penalty, init = oracle_components(
        X,
        n_samples=n_samples,
        sample_dim=sample_dim,
        redund_nn=redund_nn,
        redund_exp=redund_exp,
        seed=seed,
    )
    raw = coverage - penalty + (init if rand_init else 0.0)
    lo, hi = raw.min(), raw.max()
    return (raw - lo) / (hi - lo) if hi > lo else np.full(len(raw), 0.5)
