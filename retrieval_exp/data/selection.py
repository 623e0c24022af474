"""Selective distillation: which teacher-scored pairs a student trains on (docs/METHODS.md, section 3).

A rule sees every pair's teacher score and returns the positions it keeps, with the threshold it applied.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from retrieval_exp.settings import AtLeast, AtMost


@dataclass(frozen=True)
class Kept:
    """The positions a rule keeps, best score first, and the lowest score it kept."""

    positions: list[int]
    threshold: float


class TopPercentile:
    """Keep the pairs at or above the teacher's `percentile`-th percentile: exactly ceil(n * (100 - p) / 100) pairs,
    the best-scored first. Ties at the threshold are broken by position (the sampler orders pairs by query id, then
    doc id), so the kept share is exact and the same on every run. On distinct scores this keeps the same pairs as
    `scores >= numpy.percentile(scores, p)` (the authors' rule) for p = 80; for other p the two can differ by the one
    pair that sits on numpy's interpolated threshold. percentile 0 keeps everything."""

    def __init__(self, percentile: Annotated[float, AtLeast(0), AtMost(100, exclusive=True)] = 80.0) -> None:
        self.percentile = percentile

    def keep(self, scores: Sequence[float]) -> Kept:
        count = math.ceil(len(scores) * (100 - self.percentile) / 100 - 1e-9)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:count]
        return Kept(order, scores[order[-1]] if order else math.inf)


class AboveMeanSigma:
    """Keep the pairs whose teacher score is at least mean + k * std (population std), the paper's alternative rule
    (k = 0.5 keeps 33% of QReCC, k = 1 keeps 16%). Every pair tied at the threshold is kept."""

    def __init__(self, k: float = 0.5) -> None:
        self.k = k

    def keep(self, scores: Sequence[float]) -> Kept:
        threshold = statistics.fmean(scores) + self.k * statistics.pstdev(scores)
        order = sorted((i for i, s in enumerate(scores) if s >= threshold), key=lambda i: (-scores[i], i))
        return Kept(order, threshold)
