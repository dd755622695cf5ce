"""Statistics of a comparison between runs: sample spread and differences paired by seed.

A seed fixes the images, the noise draw and the validation split of every method alike, so two
methods are compared seed by seed: the mean ± sample std (n − 1) of the per-seed differences, and
how many seeds gain. Values are taken as given (callers scale to points or % first).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (n − 1; 0 for one value) and n of the finite values; (nan, nan, 0) if none."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if not array.size:
        return math.nan, math.nan, 0
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0, int(array.size)


def paired_differences(values: Mapping[int, float], reference: Mapping[int, float]) -> dict[int, float]:
    """``values[seed] − reference[seed]`` on the seeds both hold (and both have a value for)."""
    return {seed: values[seed] - reference[seed] for seed in sorted(set(values) & set(reference))
            if values[seed] is not None and reference[seed] is not None}


@dataclasses.dataclass(frozen=True)
class Paired:
    """Summary of per-seed differences."""

    mean: float
    std: float
    n: int
    gains: int  # seeds with a positive difference

    @classmethod
    def of(cls, differences: Mapping[int, float] | Sequence[float]) -> "Paired":
        values = list(differences.values()) if isinstance(differences, Mapping) else list(differences)
        mean, std, n = mean_std(values)
        return cls(mean, std, n, int(sum(v > 0 for v in values)))

    def text(self, digits: int = 1) -> str:
        """``+1.1 ± 1.9 (4/5 > 0)``; one seed: ``+1.1``; none: ``–``."""
        if self.n == 0:
            return "–"
        if self.n == 1:
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} ± {self.std:.{digits}f} ({self.gains}/{self.n} > 0)"
