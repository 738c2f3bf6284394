"""The one progress contract of zcore, for the core, the glue and the operators alike.

A progress callback is called as ``progress(done, total, label)``:

- ``label``: a short human text naming the current stage (``"checking the embeddings"``,
  ``"dimension statistics"``, ``"preparing the engine"``, ``"scoring"``; the glue adds its own,
  such as ``"reading embeddings"``). Stages follow one another; a new label starts a new stage.
- ``done``, ``total``: numbers (ints or floats) of that stage's units: ``done`` of ``total``
  finished, ``0 <= done <= total``, never decreasing within a stage. A stage whose size is not
  known (a short set-up step) reports ``(0, 1, label)`` when it starts.

What a caller may pass as ``progress`` (:func:`as_progress` turns it into a callback or ``None``):
``False``/``None`` (silent), ``True`` (a tqdm bar per stage) or such a callable.
"""

import contextlib
import inspect


def as_progress(progress):
    """The callback ``progress(done, total, label)`` for a user's ``progress`` (``None``: silent).

    ``True`` gives :class:`TqdmProgress` (a tqdm bar per stage); a callable is returned as is,
    after checking that it accepts three positional arguments.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        return TqdmProgress()
    if not callable(progress):
        raise ValueError(
            f"progress must be a bool or a callable(done, total, label), got {progress!r}"
        )
    try:
        inspect.signature(progress).bind(0, 1, "")
    except TypeError:
        raise ValueError(
            "progress must accept three arguments: progress(done, total, label)"
        ) from None
    except ValueError:  # no signature (some builtins): trust it
        pass
    return progress


class TqdmProgress:
    """A tqdm bar per stage: a new label closes the last bar and opens the next."""

    def __init__(self, desc="zcore"):
        self.desc = desc
        self.bar = None
        self.label = None

    def __call__(self, done, total, label):
        if label != self.label or self.bar is None:
            self.close()
            from tqdm.auto import tqdm

            self.label = label
            self.bar = tqdm(total=total, desc=f"{self.desc}: {label}", smoothing=0.1)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def make_progress(progress, total, label=None):
    """Yield ``advance(n)``, to be called with the number of units finished since the last call;
    each call reports ``progress(done, total, label)``. ``progress`` is a callback of the contract
    (or anything :func:`as_progress` accepts); with none, yields ``None`` (nothing to call).

    """
    callback = as_progress(progress)
    if callback is None:
        yield None
        return
    state = {"done": 0}

    def advance(n):
        state["done"] += n
        callback(state["done"], total, label or "")

    try:
        yield advance
    finally:
        if progress is True:
            callback.close()


def stage(progress, label, done=0, total=1):
    """Report ``progress(done, total, label)`` if there is a callback (``None``: nothing)."""
    if progress is not None:
        progress(done, total, label)
