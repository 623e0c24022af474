"""How closely a student's pair scores follow its teacher's: the seed notebook's evaluation of Method 3
(docs/METHODS.md, section 3), over pairs ranked globally, not per query.

Ties are broken by position (the pair order given), so Recall@K and NDCG@K do not depend on a sort's whims; the
authors' Recall@1 flipped between runs for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from retrieval_exp.significance import paired_test

KS = (1, 3, 5, 10, 20, 50)


def _top(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the k best scores, ties broken by position."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def ndcg_at(teacher: np.ndarray, student: np.ndarray, k: int) -> float:
    """The student's top k, each pair gaining k - (its 0-based rank in the teacher's top k), or 0 outside it."""
    gain = {pair: k - rank for rank, pair in enumerate(_top(teacher, k))}
    dcg = sum(gain.get(pair, 0) / math.log2(rank + 2) for rank, pair in enumerate(_top(student, k)))
    ideal = sum((k - rank) / math.log2(rank + 2) for rank in range(min(k, len(teacher))))
    return dcg / ideal


def teacher_agreement(
    teacher_scores: Sequence[float], student_scores: Sequence[float], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Regression, global-ranking, classification (at the median teacher score, applied to both) and paired-test
    measures of student against teacher. Cohen's d = mean(t - s) / std(t - s), population std as in the seed."""
    teacher, student = np.asarray(teacher_scores, dtype=float), np.asarray(student_scores, dtype=float)
    errors = teacher - student
    threshold = float(np.median(teacher))
    truth, predicted = teacher >= threshold, student >= threshold
    hits = int((truth & predicted).sum())
    precision = hits / predicted.sum() if predicted.any() else 0.0
    recall = hits / truth.sum()
    measures = {
        "pairs": float(len(teacher)),
        "pearson": float(stats.pearsonr(teacher, student).statistic),
        "mae": float(np.abs(errors).mean()),
        "mse": float((errors**2).mean()),
        "rmse": float(np.sqrt((errors**2).mean())),
        "threshold": threshold,
        "accuracy": float((truth == predicted).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
    }
    for k in ks:
        overlap = set(_top(teacher, k)) & set(_top(student, k))
        measures[f"recall@{k}"] = len(overlap) / k
        measures[f"ndcg@{k}"] = ndcg_at(teacher, student, k)
    tests = paired_test(teacher, student, resamples=0, ddof=0)
    return measures | {
        "t_statistic": tests.t_statistic,
        "t_pvalue": tests.t_pvalue,
        "wilcoxon_statistic": tests.wilcoxon_statistic,
        "wilcoxon_pvalue": tests.wilcoxon_pvalue,
        "cohens_d": tests.cohens_d,
    }


def write_table(measures: dict[str, float], path: Path) -> None:
    """The measures as a two-column TSV."""
    path.write_text("measure\tvalue\n" + "".join(f"{name}\t{value:.6g}\n" for name, value in measures.items()))
