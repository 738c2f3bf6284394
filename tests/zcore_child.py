"""A compute_zcore run in its own process, for tests of concurrency, signals and kills.

``python tests/zcore_child.py DATASET SEED BLOCK_LABEL MIN_FRACTION [key=value ...]``

When a progress report's label starts with ``BLOCK_LABEL`` at ``fraction >= MIN_FRACTION``, the
run prints ``BLOCKED <pid> <child pids...>`` and waits for a line on stdin (once); the test then
acts (a second run, a signal, SIGKILL) at a known point of the run, without timing. The run's
other options come as ``key=value`` (values parsed as JSON). It ends with ``DONE <seed>``.
Inherits the test session's environment (its private MongoDB, see conftest.py).
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    import fiftyone as fo
    import psutil

    import zcore

    name, seed, block_label, min_fraction = sys.argv[1:5]
    options = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[5:])}
    blocked = []

    def progress(done, total, label):
        fraction = done / total if total else 0.0
        if not blocked and label.startswith(block_label) and fraction >= float(min_fraction):
            blocked.append(1)
            kids = [str(p.pid) for p in psutil.Process().children(recursive=True)]
            print("BLOCKED", os.getpid(), *kids, flush=True)
            sys.stdin.readline()

    ds = fo.load_dataset(name)
    options.setdefault("embeddings", "embeddings")
    zcore.compute_zcore(ds, seed=int(seed), progress=progress, **options)
    print("DONE", seed, flush=True)


if __name__ == "__main__":
    main()
