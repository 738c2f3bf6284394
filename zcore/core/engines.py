"""Choice of scoring engine: every engine applies the same law with the same contract.

An engine is a callable ``accumulate(X, dims, coords, coverage, penalty, *, k, exp, shift,
progress=None)`` (see :func:`zcore.core.engine.accumulate_numpy`); all of them give bit-identical
``coverage`` and ``penalty`` integers, so the choice changes the time, never the scores.

- ``"numpy"``: the straightforward reference, O(N) numpy work per point;
- ``"numba"``: compiled, sorted scans over the point's dimensions (needs ``numba``);
- ``"torch"``: batched dense distances on a torch device (needs ``torch``; ``device="cuda"`` for
  a GPU).
- ``"auto"``: ``"numba"`` when numba is importable, else ``"numpy"`` (torch only when asked for,
  by name or by passing ``device``).
"""

import functools

from .engine import accumulate_numpy


def _numpy(device):
    if device not in (None, "cpu"):
        raise ValueError(f"the numpy engine runs on the CPU only, not device={device!r}")
    return accumulate_numpy


def _numba(device):
    if device not in (None, "cpu"):
        raise ValueError(f"the numba engine runs on the CPU only, not device={device!r}")
    from . import engine_numba

    if not engine_numba.AVAILABLE:
        raise ImportError(
            "engine='numba' needs numba (pip install numba); engine='numpy' needs nothing extra"
        )
    engine_numba.warmup()
    return engine_numba.accumulate_numba


def _torch(device):
    from . import engine_torch

    engine_torch.require_torch()
    return functools.partial(engine_torch.accumulate_torch, device=device or "cpu")


_ENGINES = {"numpy": _numpy, "numba": _numba, "torch": _torch}

#: Names accepted by :func:`get_engine`.
ENGINE_NAMES = ("auto", *_ENGINES)


def numba_available():
    """Whether the compiled engine can run here."""
    from . import engine_numba

    return engine_numba.AVAILABLE


def get_engine(name="auto", *, device=None):
    """The accumulate callable of engine ``name``.

    Parameters
    ----------
    name : {"auto", "numpy", "numba", "torch"}, default="auto"
        ``"auto"`` picks ``"torch"`` when ``device`` is given, else ``"numba"`` when numba is
        importable, else ``"numpy"``.
    device : str, optional
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...), for the torch engine. The numpy and
        numba engines accept only ``None`` or ``"cpu"``.

    Returns
    -------
    callable
        ``accumulate(X, dims, coords, coverage, penalty, *, k, exp, shift, progress=None)``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a device the engine cannot use.
    ImportError
        When the engine's package (numba, torch) is not installed.
    """
    return _ENGINES[resolve_engine_name(name, device=device)](device)


def resolve_engine_name(name="auto", *, device=None):
    """The concrete engine (``"numpy"``, ``"numba"`` or ``"torch"``) that ``name`` stands for."""
    if not isinstance(name, str) or name.lower() not in ENGINE_NAMES:
        valid = ", ".join(repr(n) for n in ENGINE_NAMES)
        raise ValueError(f"unknown engine {name!r}; valid engines: {valid}")
    name = name.lower()
    if name == "auto":
        if device is not None:
            return "torch"
        return "numba" if numba_available() else "numpy"
    return name
