"""Denoised hard negatives: which of a miner's candidates may serve as a query's negatives.

The top of a first-stage ranking holds unjudged relevant documents (false negatives) as often as hard negatives.
Two filters, after judged-relevant documents are left out:

* a rank window, `negatives_from: [a, b]`: only ranks a..b (1-based, inclusive) of the miner's list (FlagEmbedding's
  range_for_sampling), skipping the very top;
* a score ceiling relative to the positive, `max_relative_score: r`: a candidate scored at least r times its
  positive's score is dropped (NV-Retriever's positive-aware mining, r = 0.95). Scores are the miner's, or those of a
  `rescorer` (any model config: a bi-encoder or cross-encoder scoring each pair) when one is given. With the miner's
  scores, a positive the miner did not retrieve has no score, and its candidates are not filtered (counted).

What the filters kept and dropped is returned as the sampler's report (logged as `negatives/*` metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from retrieval_exp.errors import UserError
from retrieval_exp.ir_types import Run, ranked

RESCORE_BATCH = 64


class NegativeFilter:
    """The filters of one sampler; `depth` is the miner's, for checking the window."""

    def __init__(
        self,
        depth: int,
        negatives_from: Sequence[int] | None = None,
        max_relative_score: float | None = None,
        rescorer: Any = None,
    ) -> None:
        if negatives_from is not None:
            if len(negatives_from) != 2 or not 1 <= negatives_from[0] <= negatives_from[1] <= depth:
                raise UserError(
                    f"data.train.negatives_from={list(negatives_from)} is not a rank window [a, b] with "
                    f"1 <= a <= b <= data.train.depth={depth}"
                )
        if max_relative_score is not None and not 0 < max_relative_score <= 1:
            raise UserError(f"data.train.max_relative_score={max_relative_score} is not in (0, 1]: e.g. 0.95")
        if rescorer is not None and max_relative_score is None:
            raise UserError("data.train.rescorer scores candidates for the ceiling: set data.train.max_relative_score")
        self.window = tuple(negatives_from) if negatives_from is not None else (1, depth)
        self.max_relative_score, self.rescorer = max_relative_score, rescorer

    def candidates(
        self,
        run: Run,
        relevant: dict[str, set[str]],
        pairs: Sequence[tuple[str, str]],
        queries: dict[str, str],
        texts: dict[str, str],
    ) -> tuple[list[list[str]], dict[str, float]]:
        """For each (query id, positive id) of `pairs`, the candidates that survive the filters, and the report."""
        first, last = self.window
        windowed = {
            q: [d for d, _ in ranked(run.get(q, {}))[first - 1 : last] if d not in relevant[q]]
            for q in dict.fromkeys(q for q, _ in pairs)  # each query once, however many positives it has
        }
        scores = self._scores(run, pairs, windowed, queries, texts)
        kept, unscored, dropped = [], 0, 0
        for query_id, positive in pairs:
            pool = windowed[query_id]
            ceiling = scores.get((query_id, positive))
            if self.max_relative_score is not None:
                if ceiling is None:
                    unscored += 1
                else:
                    survivors = [d for d in pool if scores[(query_id, d)] < self.max_relative_score * ceiling]
                    dropped += len(pool) - len(survivors)
                    pool = survivors
            kept.append(pool)
        report = {
            "negatives/window_first": float(first),
            "negatives/window_last": float(last),
            "negatives/candidates": float(sum(len(windowed[q]) for q, _ in pairs)),
            "negatives/kept": float(sum(len(pool) for pool in kept)),
            "negatives/dropped_by_ceiling": float(dropped),
            "negatives/unscored_positives": float(unscored),
        }
        return kept, report

    def _scores(
        self,
        run: Run,
        pairs: Sequence[tuple[str, str]],
        windowed: dict[str, list[str]],
        queries: dict[str, str],
        texts: dict[str, str],
    ) -> dict[tuple[str, str], float]:
        """The score of every (query, document) the ceiling compares: the rescorer's, or the miner's."""
        if self.max_relative_score is None:
            return {}
        wanted = sorted(set(pairs) | {(q, d) for q, docs in windowed.items() for d in docs})
        if self.rescorer is None:
            return {(q, d): run[q][d] for q, d in wanted if d in run.get(q, {})}
        values = self.rescorer.score_pairs(queries, texts, wanted, RESCORE_BATCH)
        return dict(zip(wanted, values))
