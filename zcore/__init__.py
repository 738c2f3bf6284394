"""zcore: zero-shot coreset selection (ZCore) for FiftyOne.

Public API
----------
zcore_scores(embeddings, ...)
    Scores from an embedding matrix (numpy only).
compute_zcore(samples, ...)
    Scores a FiftyOne collection, writes a score field and records the run.
select_coreset(samples, ...)
    A view of the top-scoring samples.
evaluate_coreset(samples, *, label_field, ...)
    Does the coreset beat random on your labels? Linear-probe accuracy vs random subsets.
load_evaluation(samples, run_key=...)
    A recorded evaluation again (its table, ``to_markdown()``, and plot, ``plot()``).
"""

from .core.budget import select_top_indices
from .core.scoring import zcore_scores

__all__ = [
    "zcore_scores",
    "select_top_indices",
    "compute_zcore",
    "select_coreset",
    "evaluate_coreset",
    "load_evaluation",
]


def __getattr__(name):
    # The FiftyOne layer is imported lazily, so that the numpy core works without FiftyOne.
    if name in ("compute_zcore", "select_coreset"):
        from . import collection

        return getattr(collection, name)
    if name in ("evaluate_coreset", "load_evaluation"):
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
