"""One progress adapter for every long loop: a tqdm bar, a callback, or nothing."""

import contextlib


@contextlib.contextmanager
def make_progress(progress, total, *, desc=None):
    """Yield ``report(n)``, to be called with the number of units finished since the last call.

    ``progress`` is ``False``/``None`` (silent), ``True`` (a tqdm bar) or a callable invoked as
    ``progress(done, total)``.
    """
    if not progress:
        yield None
        return
    if progress is True:
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit="pt", smoothing=0.1) as bar:
            yield bar.update
        return
    if not callable(progress):
        raise ValueError(f"progress must be a bool or a callable(done, total), got {progress!r}")
    state = {"done": 0}

    def report(n):
        state["done"] += n
        progress(state["done"], total)

    yield report
