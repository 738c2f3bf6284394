"""Run an engine over the drawn points in worker processes that share memory.

Workers are forked: they read the parent's draws and prepared engine (the embeddings and, e.g., the
compiled engine's per-matrix codes) in place, without a copy or pickling, since nothing writes to
them. Each worker processes a contiguous range of points into its own pair of accumulators and a
progress counter, which live in ``multiprocessing.shared_memory`` blocks created here; the totals
are integer sums, so they equal the one-process result bit for bit.

The shared blocks are closed and unlinked in a ``finally`` clause: after success, after a worker
fails (its traceback is re-raised here as ``RuntimeError``) and after ``KeyboardInterrupt``.
"""

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from multiprocessing import shared_memory

import numpy as np

_POLL_S = 0.05
_PR_SET_PDEATHSIG = 1


def default_num_workers():
    """CPUs available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


class _SharedArrays:
    """Numpy arrays backed by shared memory blocks, all released by :meth:`release`."""

    def __init__(self):
        self.blocks = []

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        shm = shared_memory.SharedMemory(create=True, size=nbytes)
        self.blocks.append(shm)
        return np.ndarray(shape, dtype=dtype, buffer=shm.buf)

    @property
    def names(self):
        return [b.name for b in self.blocks]

    def release(self):
        for shm in self.blocks:
            try:
                shm.close()
            except BufferError:  # a view still exported; unlinking below still frees the name
                pass
            try:
                shm.unlink()
            except FileNotFoundError:
                pass
        self.blocks = []


def _die_with_parent(parent_pid):
    """Make this (forked) worker end when its parent does, even on SIGKILL of the parent: the
    kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``, Linux); elsewhere, or if
    that fails, a daemon thread watches the parent pid."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker(engine, dims, coords, coverage, penalty, counter, errors, params, parent_pid):
    # Leave with os._exit: the parent may have forked from a non-main thread (FiftyOne runs
    # operators in a thread pool), where the child's normal interpreter shutdown fails and turns
    # a finished worker into exit code 1.
    code = 1
    try:
        _die_with_parent(parent_pid)

        def report(n):
            counter[0] += n

        engine.accumulate(dims, coords, coverage, penalty, progress=report, **params)
        code = 0
    except BaseException:
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        errors.put(tb)
    finally:
        try:
            errors.close()
            errors.join_thread()
            sys.stderr.flush()
        finally:
            os._exit(code)


def accumulate_parallel(
    engine, dims, coords, *, num_workers, params, progress=None, _shared_names=None
):
    """Run ``engine.accumulate`` over ``dims``/``coords`` split across ``num_workers`` forked
    processes.

    Parameters
    ----------
    engine : zcore.core.engines.PreparedEngine
        The engine prepared for the embeddings ``engine.X`` (anything with ``.X`` and
        ``.accumulate(dims, coords, coverage, penalty, *, k, exp, shift, progress)``).
    dims, coords : ndarray
        The draws. They and the prepared engine's data are read in place by the forked workers
        (never copied).
    num_workers : int
    params : dict
        Keyword options forwarded to ``accumulate`` (``k``, ``exp``, ``shift``).
    progress : callable, optional
        Called with the number of points finished since the last call.
    _shared_names : list, optional
        If given, receives the names of the shared blocks (for tests of the clean-up).

    Returns
    -------
    coverage, penalty : ndarray of shape (N,), int64
    """
    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError(
            "use_multiprocessing needs the 'fork' start method (Linux or macOS); "
            "run with use_multiprocessing=False on this platform"
        )
    ctx = mp.get_context("fork")
    n, n_points = engine.X.shape[0], len(dims)
    usable = default_num_workers()
    if int(num_workers) > usable:
        warnings.warn(
            f"num_workers={int(num_workers)} is more than the {usable} CPU(s) this process may "
            f"use; using {usable} worker processes",
            RuntimeWarning,
            stacklevel=2,
        )
        num_workers = usable
    num_workers = max(1, min(int(num_workers), n_points))
    bounds = np.linspace(0, n_points, num_workers + 1).astype(np.int64)

    shared = _SharedArrays()
    procs = []
    errors = ctx.Queue()
    try:
        acc = shared.empty((num_workers, 2, n), np.int64)
        acc[...] = 0
        counters = shared.empty((num_workers, 1), np.int64)
        counters[...] = 0
        if _shared_names is not None:
            _shared_names.extend(shared.names)

        for w in range(num_workers):
            lo, hi = bounds[w], bounds[w + 1]
            proc = ctx.Process(
                target=_worker,
                args=(
                    engine,
                    dims[lo:hi],
                    coords[lo:hi],
                    acc[w, 0],
                    acc[w, 1],
                    counters[w],
                    errors,
                    params,
                    os.getpid(),
                ),
                daemon=True,
            )
            proc.start()
            procs.append(proc)

        reported = 0
        while True:
            alive = [p for p in procs if p.exitcode is None]
            failed = [p for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(_worker_error(errors, failed))
            done = int(counters.sum())
            if progress is not None and done > reported:
                progress(done - reported)
                reported = done
            if not alive:
                break
            time.sleep(_POLL_S)
        totals = acc.sum(axis=0)
        return totals[0].copy(), totals[1].copy()
    finally:
        for proc in procs:
            if proc.exitcode is None:
                proc.terminate()
        for proc in procs:
            proc.join()
        errors.close()
        errors.join_thread()
        shared.release()


def _worker_error(errors, failed):
    try:
        detail = errors.get(timeout=1.0)
    except Exception:  # queue empty: the worker was killed without a Python traceback
        codes = ", ".join(str(p.exitcode) for p in failed)
        detail = f"worker exited with code {codes}"
    return f"a zcore worker process failed:\n{detail}"
