"""Threshold pairs for near-duplicates: the exact search, and the optional faiss index."""

import sys

import numpy as np
import pytest

from zcore.core import neighbors
from zcore.core.methods import near_duplicates


def _planted(n=3000, d=32, dups=300, seed=0):
    """Unit rows with ``dups`` near copies (cosine >= ~0.999) of earlier rows."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.integers(0, n // 2, dups)
    dst = rng.choice(np.arange(n // 2, n), dups, replace=False)
    X[dst] = X[src] + 0.02 * rng.normal(size=(dups, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _brute(Xn, min_cos):
    sim = Xn @ Xn.T
    i, j = np.nonzero(np.triu(sim >= min_cos, k=1))
    return set(zip(i.tolist(), j.tolist()))


def test_exact_pairs_are_all_pairs_within_the_threshold():
    Xn = _planted()
    r, c = neighbors.threshold_pairs(Xn, 0.99, search="exact", chunk=257)
    got = set(zip(r.tolist(), c.tolist()))
    assert got == _brute(Xn, 0.99)
    assert len(got) >= 300
    assert (r < c).all()


def test_faiss_pairs_are_exact_pairs_with_high_recall():
    pytest.importorskip("faiss")
    Xn = _planted()
    exact = _brute(Xn, 0.99)
    r, c = neighbors.threshold_pairs(Xn, 0.99, search="faiss", nprobe=4)
    got = set(zip(r.tolist(), c.tolist()))
    assert got <= exact  # never a pair the exact search rejects
    assert len(got) >= 0.97 * len(exact)
    # visiting every cell is the exact search
    r, c = neighbors.threshold_pairs(Xn, 0.99, search="faiss", nprobe=10**6)
    assert set(zip(r.tolist(), c.tolist())) == exact


def test_faiss_candidates_on_principal_axes_lose_no_pair(monkeypatch):
    # a projection never lengthens a difference: searching 8 of 32 axes, every cell visited,
    # finds every exact pair (and the re-check removes the extra candidates)
    pytest.importorskip("faiss")
    monkeypatch.setattr(neighbors, "CANDIDATE_DIMS", 8)
    Xn = _planted()
    r, c = neighbors.threshold_pairs(Xn, 0.99, search="faiss", nprobe=10**6)
    assert set(zip(r.tolist(), c.tolist())) == _brute(Xn, 0.99)
    assert (r < c).all()


def test_near_duplicates_with_the_index_groups_as_the_exact_search(monkeypatch):
    pytest.importorskip("faiss")
    X = _planted()
    exact = near_duplicates(X, 0.1)
    monkeypatch.setattr(neighbors, "ANN_MIN_ROWS", 0)
    monkeypatch.setattr(neighbors, "NPROBE", 10**6)  # every cell: the same pairs
    approx = near_duplicates(X, 0.1)
    np.testing.assert_array_equal(approx.keep, exact.keep)
    assert [g.tolist() for g in approx.groups] == [g.tolist() for g in exact.groups]


def test_search_choice_and_errors(monkeypatch):
    assert neighbors.resolve_search("exact", 10**9) == "exact"
    assert neighbors.resolve_search("auto", neighbors.ANN_MIN_ROWS - 1) == "exact"
    with pytest.raises(ValueError, match="auto, exact, faiss"):
        neighbors.resolve_search("hnsw", 10)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    assert not neighbors.faiss_available()
    assert neighbors.resolve_search("auto", 10**9) == "exact"
    with pytest.raises(ImportError, match="pip install"):
        neighbors.resolve_search("faiss", 10)
    # near_duplicates still works without faiss, above the index's size too
    monkeypatch.setattr(neighbors, "ANN_MIN_ROWS", 0)
    groups = near_duplicates(_planted(n=400, dups=40), 0.1)
    assert len(groups.groups) >= 30
