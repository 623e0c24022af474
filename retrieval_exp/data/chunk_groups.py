"""Revela's training data: groups of text chunks, read from the authors' JSONL or built from any corpus.

A group's chunks attend to each other in the LM, so a group should hold related text: the authors' Wikipedia groups
are a seed chunk with its BM25 neighbours (docs/METHODS.md, section 4), which `CorpusChunkGroups` builds from any
ir_datasets corpus with Lucene BM25 (pyserini).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from transformers import AutoTokenizer

from retrieval_exp.batches import BatchShape
from retrieval_exp.data import irds
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import Sampler
from retrieval_exp.ir_types import Corpus, ranked
from retrieval_exp.retrieval.bm25 import BM25
from retrieval_exp.settings import Positive

log = logging.getLogger(__name__)


class ChunkGroups(Sampler):
    """Groups from a JSONL file, one per line: a list of texts, or {"src": ..., "text": [...]}. As the authors'
    dataset class: the first `group_size` texts of each line, their order shuffled and the lines shuffled (seeded);
    each later epoch reshuffles the lines. Lines with fewer texts are an error.

    The file is read once for its line offsets and each line's shuffle (checking every line), and a group's texts
    when it is read: the authors' 320k Wikipedia groups stay on disk."""

    batch_shape = BatchShape.CHUNK_GROUPS

    def __init__(self, path: str, group_size: Positive = 16, seed: int = 42) -> None:
        super().__init__(seed)
        self.path, self.group_size = Path(path).expanduser(), group_size
        self._lines: GroupLines | None = None

    def lines(self) -> GroupLines:
        """The groups in their first order, read on first use."""
        if self._lines is None:
            self._lines = self._index(self.source())
            self.report["data/groups"] = len(self._lines)
        return self._lines

    def source(self) -> Path:
        """The JSONL file to read."""
        if not self.path.is_file():
            raise UserError(f"chunk groups file {str(self.path)!r} does not exist: set data.train.path to a JSONL file")
        return self.path

    def _index(self, path: Path) -> GroupLines:
        rng = random.Random(self.seed)
        offsets, orders = [], []
        with path.open("rb") as lines:
            for number, line in enumerate(iter(lines.readline, b""), 1):
                if not line.strip():
                    continue
                offsets.append(lines.tell() - len(line))
                count = len(_texts(json.loads(line))[: self.group_size])
                if count < self.group_size:
                    raise UserError(
                        f"{path}:{number} has {count} texts, fewer than data.train.group_size={self.group_size}"
                    )
                order = list(range(self.group_size))
                rng.shuffle(order)  # as shuffling the texts themselves: a shuffle's swaps do not depend on them
                orders.append(tuple(order))
        rows = list(range(len(offsets)))
        rng.shuffle(rows)
        return GroupLines(path, [offsets[row] for row in rows], [orders[row] for row in rows])

    def __len__(self) -> int:
        return len(self.lines())

    def epoch(self, epoch: int) -> GroupLines:
        lines = self.lines()
        if not epoch:
            return lines
        rows = list(range(len(lines)))
        self.epoch_rng(epoch).shuffle(rows)
        return lines.reordered(rows)


def _texts(row: Any) -> list[str]:
    return list(row["text"] if isinstance(row, dict) else row)


class GroupLines(Sequence[tuple[str, ...]]):
    """Groups of a JSONL file in some order, each read at its line's offset and put in its order when it is read."""

    def __init__(self, path: Path, offsets: list[int], orders: list[tuple[int, ...]]) -> None:
        self.path, self.offsets, self.orders = path, offsets, orders

    def __len__(self) -> int:
        return len(self.offsets)

    def reordered(self, rows: Sequence[int]) -> GroupLines:
        """The same groups, `rows` giving the new order."""
        return GroupLines(self.path, [self.offsets[i] for i in rows], [self.orders[i] for i in rows])

    @overload
    def __getitem__(self, index: int) -> tuple[str, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> GroupLines: ...

    def __getitem__(self, index: int | slice) -> tuple[str, ...] | GroupLines:
        if isinstance(index, slice):
            return GroupLines(self.path, self.offsets[index], self.orders[index])
        with self.path.open("rb") as lines:
            lines.seek(self.offsets[index])
            texts = _texts(json.loads(lines.readline()))
        return tuple(texts[i] for i in self.orders[index])


class CorpusChunkGroups(ChunkGroups):
    """Groups built from `dataset`'s documents: each cut into chunks of `chunk_tokens` tokens of `tokenizer` (at
    token boundaries, the last piece shorter); `groups` seed chunks drawn at random (seeded), each grouped with its
    `group_size - 1` best BM25 neighbours among the other chunks, the seed chunk's text as the query.

    The groups are written once to a JSONL file under `cache` (keyed by every setting), then read as ChunkGroups.
    """

    requires = ("docs",)

    def __init__(
        self,
        dataset: str,
        tokenizer: str,
        bm25: BM25,
        cache: str,
        chunk_tokens: Positive = 157,
        group_size: Positive = 16,
        groups: Positive = 1000,
        seed: int = 42,
    ) -> None:
        settings = [dataset, tokenizer, chunk_tokens, group_size, groups, seed, bm25.k1, bm25.b]
        key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:16]
        super().__init__(str(Path(cache).expanduser() / f"{key}.jsonl"), group_size, seed)
        self.dataset, self.tokenizer, self.bm25 = dataset, tokenizer, bm25
        self.chunk_tokens, self.num_groups = chunk_tokens, groups

    def source(self) -> Path:
        if not self.path.is_file():
            self._build()
        return self.path

    def _build(self) -> None:
        chunks = self.chunks(irds.corpus(self.dataset))
        rng = random.Random(self.seed)
        seeds = rng.sample(range(len(chunks)), min(self.num_groups, len(chunks)))
        queries = {chunks.ids[i]: chunks.texts[i] for i in seeds}
        run = self.bm25.search(chunks, queries, self.group_size)
        text_of = dict(zip(chunks.ids, chunks.texts))
        lines = []
        for seed_id in queries:
            neighbours = [d for d, _ in ranked(run.get(seed_id, {})) if d != seed_id][: self.group_size - 1]
            if len(neighbours) == self.group_size - 1:
                lines.append(
                    {
                        "src": self.dataset,
                        "seed": seed_id,
                        "text": [text_of[seed_id]] + [text_of[d] for d in neighbours],
                    }
                )
        log.info("%d chunk groups of %d from %d chunks of %s", len(lines), self.group_size, len(chunks), self.dataset)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
        partial.rename(self.path)

    def chunks(self, corpus: Corpus) -> Corpus:
        """Every document cut into pieces of `chunk_tokens` tokens; chunk ids are <doc id>#<piece>."""
        tokenizer: Any = AutoTokenizer.from_pretrained(self.tokenizer)
        ids, texts = [], []
        for doc_id, text in zip(corpus.ids, corpus.texts):
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            for piece, start in enumerate(range(0, len(offsets), self.chunk_tokens)):
                window = offsets[start : start + self.chunk_tokens]
                ids.append(f"{doc_id}#{piece}")
                texts.append(text[window[0][0] : window[-1][1]])
        return Corpus(f"{corpus.key}|chunks:{self.tokenizer}:{self.chunk_tokens}", ids, texts)
