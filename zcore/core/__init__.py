"""Numpy-only core of zcore: validation, the random draws, scoring engines and selection.

Nothing in this package imports FiftyOne; everything here works on plain arrays.
"""

from .budget import select_top_indices
from .scoring import zcore_scores

__all__ = ["zcore_scores", "select_top_indices"]
