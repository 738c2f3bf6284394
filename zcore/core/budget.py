"""The budget of a selection and the score order: how many to keep, which scores come first.

- :func:`as_scores`: scores as a float64 array, ``None`` -> ``NaN`` (missing, never selected);
- :func:`resolve_size`: a ``size`` / ``fraction`` / ``threshold`` request -> the number kept;
- :func:`top_order`: the scored indices best first (ties: lower index), the order of top-k;
- :func:`select_top_indices`: the two together, the public top-k on an array.
"""

import math

import numpy as np

from .validation import check_float, check_int


def select_top_indices(scores, *, size=None, fraction=None, threshold=None):
    """Indices of the highest-scoring samples, best first.

    Exactly one of ``size``, ``fraction`` or ``threshold`` is given. Missing scores (``NaN`` or
    ``None``) are never selected and do not count towards ``fraction``.

    Parameters
    ----------
    scores : array-like of shape (N,)
        Higher = keep.
    size : int, default=None
        Keep this many (all scored samples if fewer are available).
    fraction : float in (0, 1], default=None
        Keep ``round(fraction * n_scored)`` samples, at least one.
    threshold : float, default=None
        Keep every sample whose score is ``>= threshold``.

    Returns
    -------
    indices : ndarray of shape (K,), int64
        Sorted by decreasing score; ties keep the lower index first.

    Examples
    --------
    >>> select_top_indices([0.1, 0.9, None, 0.5], size=2).tolist()
    [1, 3]
    """
    s = as_scores(scores)
    n_keep = resolve_size(s, size=size, fraction=fraction, threshold=threshold)
    return top_order(s)[:n_keep]


def top_order(scores, *, keep="high", ties=None):
    """Indices of the scored (non-``NaN``) entries, highest first (``keep="low"``: lowest first).
    Ties keep the lower index first, or the lower value of ``ties`` (e.g. the sample ids, the
    database's order) when given. ``scores`` is a float array (see :func:`as_scores`)."""
    scored = np.flatnonzero(~np.isnan(scores))
    key = -scores[scored] if keep == "high" else scores[scored]
    second = scored if ties is None else np.asarray(ties)[scored]
    return scored[np.lexsort((second, key))].astype(np.int64)


def resolve_size(scores, *, size=None, fraction=None, threshold=None):
    """How many samples a size / fraction / threshold request keeps (validates the request)."""
    s = as_scores(scores)
    given = [
        name
        for name, v in (("size", size), ("fraction", fraction), ("threshold", threshold))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "pass exactly one of size, fraction or threshold"
            + (f" (got {', '.join(given)})" if given else "")
        )
    n_scored = int(np.count_nonzero(~np.isnan(s)))
    if size is not None:
        size = check_int(size, "size", min_value=0)
        return min(size, n_scored)
    if fraction is not None:
        fraction = check_float(fraction, "fraction", min_value=0.0, max_value=1.0)
        if fraction == 0.0:
            raise ValueError("fraction must be in (0, 1]; got 0")
        return min(n_scored, max(1, math.floor(fraction * n_scored + 0.5)))
    threshold = check_float(threshold, "threshold")
    return int(np.count_nonzero(s >= threshold))


def as_scores(scores, *, n=None):
    """``scores`` as a 1-d float64 array, ``None`` entries as ``NaN`` (missing); with ``n``, it
    must hold one score per sample: ``n`` entries."""
    arr = np.asarray(
        [np.nan if v is None else v for v in scores]
        if not isinstance(scores, np.ndarray)
        else scores,
        dtype=np.float64,
    )
    if arr.ndim != 1:
        raise ValueError(f"scores must be 1-d, got shape {arr.shape}")
    if n is not None and arr.shape != (n,):
        raise ValueError(
            f"scores has shape {arr.shape}; expected ({n},), one per sample of the collection in "
            "order"
        )
    return arr
