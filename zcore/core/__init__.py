"""Numpy-only core of zcore: validation, the random draws, scoring engines and selection.

Nothing in this package imports FiftyOne; everything here works on plain arrays. The options of
scoring are defined once, in :mod:`zcore.core.config`; progress follows one contract,
:mod:`zcore.core.progress`.
"""

from .budget import select_top_indices
from .config import Execution, OptionSpec, ScoreConfig, default_n_samples
from .progress import make_progress
from .scoring import Components, combine_components, score_components, zcore_scores

__all__ = [
    "Components",
    "Execution",
    "OptionSpec",
    "ScoreConfig",
    "combine_components",
    "default_n_samples",
    "make_progress",
    "score_components",
    "select_top_indices",
    "zcore_scores",
]
