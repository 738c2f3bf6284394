"""Typed run records: what a zcore run is, which fields and views it owns, and its cleanup.

Two kinds of runs, each a FiftyOne run class (``fiftyone.core.runs``) of its own, so
``samples.list_runs(type=ScoreRun)`` finds them by type and ``samples.delete_run(key)`` cleans up
after them:

- :class:`ScoreRun` (``compute_zcore``): owns the score field and, with ``component_fields``,
  ``<field>_coverage`` and ``<field>_redundancy``. Deleting the run deletes those fields, unless a
  later score run of the same dataset wrote them (the field then belongs to that run).
- :class:`SelectionRun` (``select_coreset`` with a method): owns the saved view of the
  near-duplicates it removed (``duplicates_view``). Deleting the run deletes that view.
- :class:`EvaluationRun` (``evaluate_coreset``): owns no field or view; its results hold the
  evaluation table (``zcore.evaluation.load_evaluation``).

FiftyOne stores a run's config class by its import path (``zcore.runs.ScoreRunConfig``); the
plugin always imports this package as ``zcore`` (see the plugin's ``__init__.py``), so records
load the same way in the App, in delegated workers and in Python. Records written before these
classes existed (plain ``RunConfig`` with ``method="zcore"`` or ``"zcore_selection"``) are still
listed, and are replaced by a typed record when their key is run again.
"""

import fiftyone.core.runs as fors


class _ZcoreRunConfig(fors.RunConfig):
    """A ``RunConfig`` whose ``method`` is fixed by its class."""

    METHOD = None

    def __init__(self, **kwargs):
        kwargs["method"] = self.METHOD
        super().__init__(**kwargs)


class ScoreRunConfig(_ZcoreRunConfig):
    """Config of a ``compute_zcore`` run: the law's options, the seed, where the score went."""

    METHOD = "zcore"


class SelectionRunConfig(_ZcoreRunConfig):
    """Config of a ``select_coreset`` run: the method, its options, the seed, the budget."""

    METHOD = "zcore_selection"


class EvaluationRunConfig(_ZcoreRunConfig):
    """Config of an ``evaluate_coreset`` run: label field, embeddings, methods, prune rates,
    seeds, test size, where the scores came from."""

    METHOD = "zcore_evaluation"


class _ZcoreRun(fors.Run):
    CONFIG = None

    @classmethod
    def keys(cls, samples):
        """Run keys of this kind on the collection's dataset, oldest first (typed records, and
        earlier untyped records of the same method)."""
        out = []
        for key in samples.list_runs():
            try:
                config = samples.get_run_info(key).config
            except Exception:  # a run of another tool that cannot be loaded here
                continue
            if _is_kind(config, cls.CONFIG):
                out.append(key)
        return out

    @classmethod
    def is_legacy(cls, samples, key):
        """Whether ``key`` is an untyped record of this kind (written before the typed classes):
        it must be deleted before a typed record can take its key."""
        if key not in samples.list_runs():
            return False
        try:
            config = samples.get_run_info(key).config
        except Exception:
            return False
        return type(config) is fors.RunConfig and _is_kind(config, cls.CONFIG)


class ScoreRun(_ZcoreRun):
    """A ``compute_zcore`` run (see the module docstring)."""

    CONFIG = ScoreRunConfig

    def get_fields(self, samples, key):
        return owned_fields(self.config)

    def cleanup(self, samples, key):
        claimed = set()
        for other in ScoreRun.keys(samples):
            if other != key:
                claimed.update(owned_fields(samples.get_run_info(other).config))
        dataset = samples._root_dataset
        for path in owned_fields(self.config):
            if path not in claimed:
                _delete_field(dataset, path)


class SelectionRun(_ZcoreRun):
    """A ``select_coreset`` run (see the module docstring)."""

    CONFIG = SelectionRunConfig

    def get_fields(self, samples, key):
        return []

    def cleanup(self, samples, key):
        name = getattr(self.config, "duplicates_view", None)
        dataset = samples._root_dataset
        if name and dataset.has_saved_view(name):
            dataset.delete_saved_view(name)


class EvaluationRun(_ZcoreRun):
    """An ``evaluate_coreset`` run (see the module docstring): writes nothing but its record."""

    CONFIG = EvaluationRunConfig

    def get_fields(self, samples, key):
        return []

    def cleanup(self, samples, key):
        pass


def owned_fields(config):
    """The field paths (on the dataset) that a score run's config says it wrote."""
    fields = getattr(config, "owned_fields", None)
    if fields:
        return list(fields)
    path = getattr(config, "score_path", None) or getattr(config, "score_field", None)
    if not path:
        return []
    out = [path]
    if getattr(config, "component_fields", False):
        out += [path + "_coverage", path + "_redundancy"]
    return out


def _is_kind(config, config_cls):
    return isinstance(config, config_cls) or (
        type(config) is fors.RunConfig and getattr(config, "method", None) == config_cls.METHOD
    )


def _delete_field(dataset, path):
    if path.startswith("frames."):
        name = path[len("frames.") :]
        if dataset.has_frame_field(name):
            dataset.delete_frame_field(name)
    elif dataset.has_field(path):
        dataset.delete_sample_field(path)
