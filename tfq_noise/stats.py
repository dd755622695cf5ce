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


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Two-sided tests of per-seed differences against zero: Student's paired t-test and the exact sign test.

    ``t_p`` is None with fewer than 2 differences (or all equal: no spread to test against); the sign test
    ignores ties (zero differences). With 3 seeds the sign test cannot go below p = 0.25: it says how
    consistent the sign is, the t-test how large the mean is against the seed spread.
    """

    n: int
    t: float | None
    t_p: float | None
    sign_p: float | None

    @classmethod
    def of(cls, differences: Mapping[int, float] | Sequence[float]) -> "PairedTest":
        values = np.asarray([v for v in (differences.values() if isinstance(differences, Mapping) else differences)
                             if v is not None and math.isfinite(v)], np.float64)
        n = int(values.size)
        t = t_p = None
        if n >= 2 and float(values.std(ddof=1)) > 0:
            t = float(values.mean() / (values.std(ddof=1) / math.sqrt(n)))
            t_p = _student_t_two_sided(t, n - 1)
        nonzero = values[values != 0]
        sign_p = None
        if nonzero.size:
            k, m = int((nonzero > 0).sum()), int(nonzero.size)
            tail = sum(math.comb(m, i) for i in range(0, min(k, m - k) + 1)) / 2 ** m
            sign_p = min(1.0, 2 * tail)
        return cls(n, t, t_p, sign_p)

    def text(self) -> str:
        """``t p = 0.012, sign p = 0.25``; ``–`` where a test cannot be made."""
        t = "–" if self.t_p is None else f"{self.t_p:.2g}"
        sign = "–" if self.sign_p is None else f"{self.sign_p:.2g}"
        return f"t p = {t}, sign p = {sign}"


def _student_t_two_sided(t: float, dof: int) -> float:
    """Two-sided p-value of Student's t with ``dof`` degrees of freedom (regularized incomplete beta)."""
    from scipy import special

    return float(special.betainc(dof / 2.0, 0.5, dof / (dof + t * t)))
