"""Validation at the public boundary: one converter per kind of input.

Every public function converts its inputs here (and reassigns the result), so the private functions
behind it can assume clean data: a C-contiguous float32 matrix, a ``numpy.random.Generator``, and
options already range-checked.
"""

import numbers

import numpy as np

MIN_SAMPLES = 3


def check_embeddings(embeddings, *, input_name="embeddings", min_samples=MIN_SAMPLES):
    """Convert embeddings to a C-contiguous ``float32`` matrix of shape ``(N, D)``.

    Parameters
    ----------
    embeddings : array-like of shape (N, D), or list of array-likes of shape (N, D_i)
        One matrix, or several (e.g. one per model) that are concatenated along the features.
        Lists of per-sample vectors are accepted.
    input_name : str, default="embeddings"
        Name used in error messages.
    min_samples : int, default=3
        Smallest number of rows accepted.

    Returns
    -------
    X : ndarray of shape (N, D), dtype float32, C-contiguous

    Raises
    ------
    ValueError
        If the input is not numeric, not 2-d, ragged, has too few samples or features, or contains
        NaN or infinite values. The message says what is wrong and what to do.
    """
    if embeddings is None:
        raise ValueError(f"{input_name} is None: pass an array of shape (n_samples, n_features)")

    parts = _split_parts(embeddings)
    mats = [
        _to_matrix(p, f"{input_name}[{i}]" if len(parts) > 1 else input_name)
        for i, p in enumerate(parts)
    ]
    n_rows = {m.shape[0] for m in mats}
    if len(n_rows) > 1:
        shapes = ", ".join(str(m.shape) for m in mats)
        raise ValueError(
            f"{input_name}: the per-model matrices have different numbers of samples ({shapes}); "
            "each must hold one row per sample, in the same order"
        )
    X = mats[0] if len(mats) == 1 else np.concatenate(mats, axis=1)
    X = np.ascontiguousarray(X, dtype=np.float32)

    n, d = X.shape
    if n < min_samples:
        raise ValueError(
            f"{input_name} has {n} sample(s); ZCore needs at least {min_samples} "
            "(a covering sample and at least one other to measure redundancy)"
        )
    if d < 1:
        raise ValueError(
            f"{input_name} has shape {X.shape}: each sample needs at least one feature"
        )
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{input_name} contains NaN or infinite values in {bad_rows.size} sample(s) "
            f"(first rows: {bad_rows[:5].tolist()}); remove or recompute those embeddings"
        )
    return X


def _split_parts(embeddings):
    """A list of per-model inputs: a list whose items are themselves matrices, or one input."""
    if isinstance(embeddings, (list, tuple)) and len(embeddings) > 0:
        first = embeddings[0]
        if isinstance(first, np.ndarray) and first.ndim == 2:
            return list(embeddings)
        if (
            isinstance(first, (list, tuple))
            and len(first) > 0
            and isinstance(first[0], (list, tuple, np.ndarray))
        ):
            return list(embeddings)
    return [embeddings]


def _to_matrix(obj, name):
    if isinstance(obj, np.ndarray):
        arr = obj
    else:
        try:
            arr = np.asarray(obj)
        except ValueError as e:  # numpy >= 1.24 refuses ragged nested sequences
            raise ValueError(
                f"{name} is ragged: every sample must have the same number of features ({e})"
            ) from None
    if arr.dtype == object:
        lengths = {np.size(row) for row in obj} if arr.ndim == 1 else set()
        if len(lengths) > 1:
            raise ValueError(
                f"{name} is ragged: samples have {sorted(lengths)[:5]} features; "
                "every sample must have the same number of features"
            )
        raise ValueError(f"{name} is not numeric (dtype object); pass float vectors")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} is not numeric (dtype {arr.dtype}); pass float vectors")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} is complex; pass real-valued float vectors")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-d of shape (n_samples, n_features); got {arr.ndim}-d shape "
            f"{arr.shape}"
            + (" (reshape a single feature column with X.reshape(-1, 1))" if arr.ndim == 1 else "")
        )
    return arr


def check_seed(seed):
    """A ``numpy.random.Generator`` from None, an int, a SeedSequence or a Generator."""
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        if isinstance(seed, bool):
            raise ValueError(f"seed must be an int or numpy.random.Generator, got {seed!r}")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise ValueError(
        f"seed must be None, an int or a numpy.random.Generator, got {type(seed).__name__}"
    )


#: Bits of a fresh seed drawn by :func:`recordable_seed`.
SEED_BITS = 62


def recordable_seed(seed):
    """An int seed that a run can record (so it can be reproduced): ``seed`` itself, checked as
    :func:`check_seed` does, or a fresh one for ``None``. A Generator cannot be recorded."""
    if seed is None:
        return int(np.random.default_rng().integers(2**SEED_BITS))
    if isinstance(seed, np.random.Generator):
        raise ValueError(
            "a recorded run needs an int seed (or None for a fresh one, recorded), not a numpy "
            "Generator"
        )
    check_seed(seed)
    return check_int(seed, "seed", min_value=0)


def check_int(value, name, *, min_value=None, max_value=None, allow_none=False):
    """An int within bounds (bools refused)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if (
            isinstance(value, numbers.Real)
            and float(value).is_integer()
            and not isinstance(value, bool)
        ):
            value = int(value)
        else:
            raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value}")
    return value


def check_float(value, name, *, min_value=None, max_value=None, allow_none=False):
    """A finite float within bounds (bools refused)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value}")
    return value
