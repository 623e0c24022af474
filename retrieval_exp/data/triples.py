"""Training triples (q, d+, [d-]*k): from qrels with hard negatives mined by a first-stage run, or from an
ir_datasets docpairs file."""

from __future__ import annotations

import logging
import random
import statistics
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from retrieval_exp.batches import BatchShape, Triple, false_negatives
from retrieval_exp.data import irds
from retrieval_exp.data.docpairs import first_pairs
from retrieval_exp.data.examples import EpochDraw, Example
from retrieval_exp.data.negatives import NegativeFilter
from retrieval_exp.data.teacher import TeacherScores
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import Sampler
from retrieval_exp.settings import Positive

log = logging.getLogger(__name__)
COUNTED_BATCHES = 1000  # batches/false_negatives over at most this many of an epoch's first batches


class TripleSampler(Sampler):
    """Examples read once; each epoch shuffles them and draws `negatives` per example from its candidates, the same
    for the same (seed, epoch). The candidates are fixed at load time, so a teacher can score them all beforehand.
    Each triple carries its ids and its query's relevant documents (every positive of the examples), for the
    in-batch losses' false-negative mask."""

    batch_shape = BatchShape.TRIPLES
    requires = ("docs", "queries", "qrels")

    def __init__(
        self, dataset: str, negatives: int, seed: int, unique_queries: bool = False, batch_size: int = 0
    ) -> None:
        if unique_queries and batch_size < 1:
            raise UserError(f"data.train.unique_queries needs the batch size: data.train.batch_size={batch_size}")
        super().__init__(seed)
        self.dataset, self.negatives = dataset, negatives
        self.unique_queries, self.batch_size = unique_queries, batch_size
        self._examples: Sequence[Example] = []
        self._loaded = False
        self._teacher: dict[tuple[str, str], float] | None = None
        self.teacher_file: Path | None = None

    @abstractmethod
    def load(self) -> tuple[dict[str, str], Mapping[str, str], Sequence[Example]]:
        """Query texts, document texts (a dict, or look-ups: irds.DocumentTexts) and the examples."""

    def prepare(self) -> None:
        if not self._loaded:
            self.queries, self.texts, self._examples = self.load()
            positives: dict[str, set[str]] = {}  # before any selection: a dropped pair is still relevant
            for query_id, positive, _ in self._examples:
                positives.setdefault(query_id, set()).add(positive)
            self.relevant = {query_id: frozenset(ids) for query_id, ids in positives.items()}
            self._loaded = True

    def __len__(self) -> int:
        self.prepare()
        return len(self._examples)

    def attach_teacher(self, teacher: TeacherScores) -> None:
        """Have every example carry `teacher`'s scores: all pairs an epoch can draw are scored once (cached)."""
        self.prepare()
        pairs = sorted({(q, d) for q, positive, candidates in self._examples for d in [positive, *candidates]})
        self.teacher_file = teacher.path(self.dataset, pairs)
        cached = self.teacher_file.is_file()
        self._teacher = teacher.scores(self.teacher_file, self.queries, self.texts, pairs)
        positives = [score for _, score in self.scored_positives()]
        self.report |= {
            "teacher/cached": float(cached),
            "teacher/pairs": len(pairs),
            "teacher/positive_mean": statistics.fmean(positives),
            "teacher/positive_std": statistics.pstdev(positives),
            "teacher/positive_median": statistics.median(positives),
        }

    def scored_positives(self) -> list[tuple[tuple[str, str], float]]:
        """Each example's (query id, positive doc id) pair with the teacher's score for it."""
        assert self._teacher is not None, "attach_teacher() first"
        return [((q, positive), self._teacher[(q, positive)]) for q, positive, _ in self._examples]

    def epoch(self, epoch: int) -> EpochTriples:
        """The examples of `epoch`, shuffled, with their negatives drawn; with `unique_queries`, arranged in batches
        of `batch_size` in which no query and no document repeats (without_repeats). Each triple's texts are looked
        up when it is read."""
        self.prepare()
        drawn = EpochDraw.drawn(self._examples, self.negatives, self.epoch_rng(epoch))
        if self.unique_queries:
            keys = [{f"q:{q}", f"d:{pos}", *(f"d:{d}" for d in negatives)} for q, pos, negatives in drawn]
            drawn = drawn.taken(arrangement_without_repeats(keys, self.batch_size))
        triples = EpochTriples(self, drawn)
        if self.batch_size:
            self.report["batches/false_negatives"] = in_batch_false_negatives(triples, self.batch_size)
        return triples

    def triple(self, query_id: str, positive: str, negatives: list[str]) -> Triple:
        """One example with its texts (and its teacher's scores)."""
        texts = tuple(self.texts[d] for d in negatives)
        scores = None if self._teacher is None else tuple(self._teacher[(query_id, d)] for d in [positive, *negatives])
        query, ids, relevant = self.queries[query_id], (positive, *negatives), self.relevant[query_id]
        return Triple(query, self.texts[positive], texts, scores, query_id, ids, relevant)


class EpochTriples(Sequence[Triple]):
    """An epoch's triples in order, each built from its ids when it is read: an epoch of MS MARCO's grouped docpairs
    holds 33M, whose texts stay in the docstore until their batch."""

    def __init__(self, sampler: TripleSampler, drawn: EpochDraw) -> None:
        self.sampler, self.drawn = sampler, drawn

    def __len__(self) -> int:
        return len(self.drawn)

    @overload
    def __getitem__(self, index: int) -> Triple: ...

    @overload
    def __getitem__(self, index: slice) -> EpochTriples: ...

    def __getitem__(self, index: int | slice) -> Triple | EpochTriples:
        if isinstance(index, slice):
            return EpochTriples(self.sampler, self.drawn[index])
        return self.sampler.triple(*self.drawn[index])


def in_batch_false_negatives(triples: Sequence[Triple], size: int, batches: int = COUNTED_BATCHES) -> float:
    """The mean number, per triple, of candidates the in-batch losses' mask (batches.false_negatives) takes out of
    its batch of `size` consecutive triples, over the first `batches` batches (a shuffled epoch's sample: counting
    all 400k batches of MS MARCO's grouped docpairs would look up 100M texts before the first step)."""
    counted = triples[: size * batches]
    found = sum(int(false_negatives(counted[i : i + size]).sum()) for i in range(0, len(counted), size))
    return found / len(counted) if counted else 0.0


def without_repeats(triples: list[Triple], size: int) -> list[Triple]:
    """`triples` in batches of `size` in which no query and no document appears twice (arrangement_without_repeats),
    queries and documents known by id where the triples have ids, else by text."""
    keys = [{f"q:{t.query_id or t.query}", *(f"d:{key}" for key in t.document_keys())} for t in triples]
    return [triples[i] for i in arrangement_without_repeats(keys, size)]


def arrangement_without_repeats(keys: list[set[str]], size: int) -> list[int]:
    """The order of examples (each known by its `keys`: its query's, its documents') in batches of `size` in which no
    key appears twice (sentence-transformers' NO_DUPLICATES): each batch takes the first pending examples that clash
    with nothing in it. A batch the pending ones cannot fill (the last few of one query, say) is topped up with other
    examples of the epoch, seen twice then, so that the epoch keeps at least its number of examples and every example
    is in some batch."""
    distinct = len({key for example in keys for key in example if key.startswith("q:")})
    if distinct < size:
        raise UserError(
            f"data.train.unique_queries: the training data has {distinct} distinct queries, fewer than a batch "
            f"of {size}: lower trainer.batch_size"
        )
    pending, arranged = list(range(len(keys))), []
    while pending:
        batch: list[int] = []
        seen: set[str] = set()
        skipped: list[int] = []
        for index, candidate in enumerate(pending):
            if len(batch) == size:
                skipped += pending[index:]
                break
            if keys[candidate] & seen:
                skipped.append(candidate)
            else:
                batch.append(candidate)
                seen |= keys[candidate]
        for candidate in range(len(keys)):  # top up a batch the pending ones could not fill
            if len(batch) == size:
                break
            if not keys[candidate] & seen:
                batch.append(candidate)
                seen |= keys[candidate]
        arranged += batch
        pending = skipped
    return arranged


class MinedTriples(TripleSampler):
    """One example per relevant (query, document) pair of the qrels; its negatives are drawn uniformly from the
    miner's top `depth` for that query, judged-relevant documents excluded, anew each epoch. `negatives_from`,
    `max_relative_score` and `rescorer` denoise them (data/negatives.py).

    Where the filters leave too few candidates, the pool is topped up from the whole corpus (seeded).
    """

    def __init__(
        self,
        dataset: str,
        miner: Any,
        negatives: Positive = 1,
        depth: Positive = 50,
        min_relevance: int = 1,
        seed: int = 0,
        unique_queries: bool = False,
        batch_size: int = 0,
        negatives_from: list[int] | None = None,
        max_relative_score: float | None = None,
        rescorer: Any = None,
    ) -> None:
        super().__init__(dataset, negatives, seed, unique_queries, batch_size)
        self.miner, self.depth, self.min_relevance = miner, depth, min_relevance
        self.filter = NegativeFilter(depth, negatives_from, max_relative_score, rescorer)

    def load(self) -> tuple[dict[str, str], Mapping[str, str], list[Example]]:
        corpus = irds.corpus(self.dataset)
        queries = irds.queries(self.dataset)
        texts = dict(zip(corpus.ids, corpus.texts))
        relevant = {
            q: {d for d, rel in docs.items() if rel >= self.min_relevance and d in texts}
            for q, docs in irds.qrels(self.dataset).items()
            if q in queries
        }
        mined_for = {q: queries[q] for q in sorted(q for q, docs in relevant.items() if docs)}
        run = self.miner.search(corpus, mined_for, self.depth)
        pairs = [(q, d) for q in mined_for for d in sorted(relevant[q])]
        pools, filtered = self.filter.candidates(run, relevant, pairs, queries, texts)
        self.report |= filtered
        rng = random.Random(self.seed)
        topped_up = 0
        for (query_id, _), pool in zip(pairs, pools):
            topped_up += max(0, self.negatives - len(pool))
            while len(pool) < self.negatives:
                doc_id = corpus.ids[rng.randrange(len(corpus))]
                if doc_id not in relevant[query_id] and doc_id not in pool:
                    pool.append(doc_id)
        self.report["negatives/topped_up"] = float(topped_up)
        examples = [(q, d, pool) for (q, d), pool in zip(pairs, pools)]
        log.info(
            "%d training pairs from %d queries of %s; negatives from %s top-%d",
            len(examples),
            len(mined_for),
            self.dataset,
            getattr(self.miner, "name", "miner"),
            self.depth,
        )
        return queries, texts, examples


class DocpairTriples(TripleSampler):
    """Triples from an ir_datasets docpairs file (for msmarco-passage/train, the official qidpidtriples: BM25-sampled
    negatives), selected as the self-distillation paper's "grouped" data: the first `group_size` pairs of each query,
    keeping only queries with exactly that many; `max_queries` stops after that many complete groups. The grouping
    only selects: epochs shuffle across queries, as the authors' data loader does."""

    requires = ("docs", "queries", "docpairs")

    def __init__(
        self,
        dataset: str,
        group_size: Positive = 128,
        max_queries: Positive | None = None,
        seed: int = 0,
        unique_queries: bool = False,
        batch_size: int = 0,
    ) -> None:
        super().__init__(dataset, 1, seed, unique_queries, batch_size)
        self.group_size, self.max_queries = group_size, max_queries

    def load(self) -> tuple[dict[str, str], Mapping[str, str], Sequence[Example]]:
        docpairs = irds.load(self.dataset).docpairs_iter
        found = first_pairs(docpairs, self.group_size, self.max_queries)
        self.report["docpairs/held_at_most"] = found.held_at_most
        all_queries = irds.queries(self.dataset)
        queries = {q: all_queries[q] for q in found.queries}
        log.info(
            "%d docpairs from %d complete groups of %d in %s",
            len(found.examples),
            len(found.queries),
            self.group_size,
            self.dataset,
        )
        return queries, irds.DocumentTexts(self.dataset), found.examples
