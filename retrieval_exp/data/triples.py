"""Training triples from qrels, with hard negatives mined from a first-stage run."""

from __future__ import annotations

import logging
import random
from typing import Any

from retrieval_exp.batches import BatchShape, Triple
from retrieval_exp.data import irds
from retrieval_exp.retrieval.run import ranked

log = logging.getLogger(__name__)


class MinedTriples:
    """One example per relevant (query, document) pair of the qrels; its negatives are drawn uniformly from the
    miner's top `depth` for that query, judged-relevant documents excluded, anew each epoch from (seed, epoch).

    Where the top `depth` holds too few non-relevant documents, the rest are drawn from the whole corpus.
    """

    batch_shape = BatchShape.TRIPLES

    def __init__(
        self, dataset: str, miner: Any, negatives: int = 1, depth: int = 50, min_relevance: int = 1, seed: int = 0
    ) -> None:
        self.dataset, self.miner, self.negatives, self.depth = dataset, miner, negatives, depth
        self.min_relevance, self.seed = min_relevance, seed
        self._pairs: list[tuple[str, str]] = []
        self._candidates: dict[str, list[str]] = {}

    def prepare(self) -> None:
        """Read the data and mine the candidates (once)."""
        if self._pairs:
            return
        self.corpus = irds.corpus(self.dataset)
        self.queries = irds.queries(self.dataset)
        qrels = irds.qrels(self.dataset)
        self.texts = dict(zip(self.corpus.ids, self.corpus.texts))
        self._relevant = {
            q: {d for d, rel in docs.items() if rel >= self.min_relevance}
            for q, docs in qrels.items()
            if q in self.queries
        }
        self._pairs = sorted((q, d) for q, docs in self._relevant.items() for d in docs if d in self.texts)
        mined_for = {q: self.queries[q] for q in sorted({q for q, _ in self._pairs})}
        run = self.miner.search(self.corpus, mined_for, self.depth)
        for query_id in mined_for:
            best_first = ranked(run.get(query_id, {}))
            self._candidates[query_id] = [d for d, _ in best_first if d not in self._relevant[query_id]]
        short = sum(len(c) < self.negatives for c in self._candidates.values())
        log.info(
            "%d training pairs from %d queries of %s; negatives from %s top-%d (%d queries topped up from the corpus)",
            len(self._pairs),
            len(mined_for),
            self.dataset,
            getattr(self.miner, "name", "miner"),
            self.depth,
            short,
        )

    def __len__(self) -> int:
        self.prepare()
        return len(self._pairs)

    def epoch(self, epoch: int) -> list[Triple]:
        """The examples of `epoch`, shuffled, with their negatives drawn; the same for the same (seed, epoch)."""
        self.prepare()
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(self._pairs)
        rng.shuffle(order)
        return [Triple(self.queries[q], self.texts[d], self._draw(q, rng)) for q, d in order]

    def _draw(self, query_id: str, rng: random.Random) -> tuple[str, ...]:
        candidates = self._candidates[query_id]
        chosen = rng.sample(candidates, min(self.negatives, len(candidates)))
        while len(chosen) < self.negatives:
            doc_id = self.corpus.ids[rng.randrange(len(self.corpus))]
            if doc_id not in self._relevant[query_id] and doc_id not in chosen:
                chosen.append(doc_id)
        return tuple(self.texts[d] for d in chosen)
