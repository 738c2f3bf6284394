"""The scoring engines: one registry, one interface; every engine applies the same law.

An engine (:class:`Engine`) is a registry entry with a name, an availability test and a device
rule. ``engine.prepare(X, device=..., knobs=...)`` builds its per-matrix data once and returns a
:class:`PreparedEngine`, whose ``accumulate(dims, coords, coverage, penalty, *, k, exp, shift,
progress=None)`` applies the law to a block of drawn points (``progress(n)``: ``n`` more points
finished). All engines give bit-identical ``coverage`` and ``penalty`` integers, so the choice
changes the time, never the scores.

- ``"numpy"``: the straightforward reference (:func:`zcore.core.law.accumulate_numpy`), O(N) numpy
  work per point;
- ``"numba"``: compiled, sorted scans over the point's dimensions (needs ``numba``;
  :mod:`zcore.core.engine_numba`, tuned by :class:`~zcore.core.engine_numba.NumbaKnobs`);
- ``"torch"``: batched windowed searches in sorted columns on a torch device (needs ``torch``;
  ``device="cuda"`` for a GPU; :mod:`zcore.core.engine_torch`, tuned by :class:`~zcore.core.engine_torch.TorchKnobs`);
- ``"auto"``: ``"numba"`` when numba is importable, else ``"numpy"`` (torch only when asked for,
  by name or by passing ``device``).

Adding an engine: a module with ``accumulate(X, dims, coords, coverage, penalty, *, k, exp,
shift, progress=None)`` (or a per-matrix preparation), an :class:`Engine` subclass here, its name
in :data:`ENGINES` and in :data:`zcore.core.config.ENGINE_CHOICES`.
"""

from .law import accumulate_numpy


class PreparedEngine:
    """An engine bound to one matrix ``X``: :meth:`accumulate` applies the law to blocks of its
    points. Forked workers share it (its data is read in place, never copied)."""

    def __init__(self, name, X, run):
        self.name = name
        self.X = X
        self._run = run

    def accumulate(self, dims, coords, coverage, penalty, *, k, exp, shift, progress=None):
        """Add the coverage and fixed-point penalties of the points ``dims``/``coords``.

        The parameters are those of :func:`zcore.core.law.accumulate_numpy` without ``X`` (bound
        here); ``progress(n)`` is called with the number of points finished since the last call.
        """
        self._run(
            self.X, dims, coords, coverage, penalty, k=k, exp=exp, shift=shift, progress=progress
        )


class Engine:
    """A registry entry: name, availability, device rule, and :meth:`prepare`."""

    name = ""
    #: Whether only ``device=None``/``"cpu"`` is accepted.
    cpu_only = True
    #: What to install when :meth:`available` is false.
    install_hint = ""

    def available(self):
        """Whether this engine's package is importable here."""
        return True

    def check(self, device=None):
        """``ValueError`` for a device this engine cannot use, ``ImportError`` (saying what to
        install) when its package is missing."""
        if self.cpu_only and device not in (None, "cpu"):
            raise ValueError(f"the {self.name} engine runs on the CPU only, not device={device!r}")
        if not self.available():
            raise ImportError(self.install_hint)

    def load(self):
        """Get ready to run (the compiled engine compiles or loads its kernels); returns self."""
        return self

    def prepare(self, X, *, device=None, knobs=None):
        """A :class:`PreparedEngine` for the validated float32 matrix ``X``."""
        raise NotImplementedError


class NumpyEngine(Engine):
    name = "numpy"

    def prepare(self, X, *, device=None, knobs=None):
        self.check(device)
        return PreparedEngine(self.name, X, accumulate_numpy)


class NumbaEngine(Engine):
    name = "numba"
    install_hint = (
        "engine='numba' needs numba (pip install numba); engine='numpy' needs nothing extra"
    )

    def available(self):
        from . import engine_numba

        return engine_numba.AVAILABLE

    def load(self):
        from . import engine_numba

        self.check()
        engine_numba.warmup()
        return self

    def prepare(self, X, *, device=None, knobs=None):
        from . import engine_numba

        self.check(device)
        return PreparedEngine(self.name, X, engine_numba.prepare(X, knobs=knobs).accumulate)


class TorchEngine(Engine):
    name = "torch"
    cpu_only = False
    install_hint = (
        "engine='torch' needs PyTorch (pip install torch); engine='numpy' needs nothing extra"
    )

    def available(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    def prepare(self, X, *, device=None, knobs=None):
        from . import engine_torch

        self.check(device)
        prepared = engine_torch.prepare_torch(X, device=device or "cpu", knobs=knobs)
        run = prepared.accumulate
        return PreparedEngine(self.name, X, run)


#: The engines by name.
ENGINES = {e.name: e for e in (NumpyEngine(), NumbaEngine(), TorchEngine())}

#: Names accepted by :func:`get_engine` (the same as ``zcore.core.config.ENGINE_CHOICES``).
ENGINE_NAMES = ("auto", *ENGINES)


def numba_available():
    """Whether the compiled engine can run here."""
    return ENGINES["numba"].available()


def get_engine(name="auto", *, device=None):
    """The :class:`Engine` that ``name`` stands for, checked for ``device``.

    Parameters
    ----------
    name : {"auto", "numpy", "numba", "torch"}, default="auto"
        ``"auto"`` picks ``"torch"`` when ``device`` is given, else ``"numba"`` when numba is
        importable, else ``"numpy"``.
    device : str, optional
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...), for the torch engine. The numpy and
        numba engines accept only ``None`` or ``"cpu"``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a device the engine cannot use.
    ImportError
        When the engine's package (numba, torch) is not installed.
    """
    engine = ENGINES[resolve_engine_name(name, device=device)]
    engine.check(device)
    return engine


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
