"""Training examples and an epoch's draw from them, held as integer arrays where there are millions.

MS MARCO's grouped docpairs are ~51M examples. As Python tuples of (query id, positive id, [negative id]) they cost
~330 B each with their epoch's draw (~17 GB); `CompactExamples` keeps each id once and an example as three codes
(~20 B), and `EpochDraw` keeps an epoch as positions (12 B per example with one negative).
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

Example = tuple[str, str, list[str]]  # query id, positive doc id, the doc ids its negatives are drawn from


class CompactExamples(Sequence[Example]):
    """Examples as codes into one table of ids, read back as `Example` tuples."""

    def __init__(self, examples: Iterable[Example] = ()) -> None:
        self._codes: dict[str, int] = {}
        self._ids: list[str] = []
        self._queries, self._positives, self._candidates = array("i"), array("i"), array("i")
        self._ends = array("q")
        for example in examples:
            self.append(*example)

    def _code(self, id_: str) -> int:
        code = self._codes.get(id_)
        if code is None:
            code = self._codes[id_] = len(self._ids)
            self._ids.append(id_)
        return code

    def append(self, query_id: str, positive: str, candidates: Iterable[str]) -> None:
        self._queries.append(self._code(query_id))
        self._positives.append(self._code(positive))
        self._candidates.extend(self._code(candidate) for candidate in candidates)
        self._ends.append(len(self._candidates))

    def __len__(self) -> int:
        return len(self._queries)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...

    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # an IndexError past the end; negative indices count from it
        ids, start = self._ids, self._ends[index - 1] if index else 0
        candidates = [ids[code] for code in self._candidates[start : self._ends[index]]]
        return ids[self._queries[index]], ids[self._positives[index]], candidates

    def __iter__(self) -> Iterator[Example]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True)
class EpochDraw(Sequence[Example]):
    """An epoch of `examples`: the example at each position (`order`) and the candidates drawn as its negatives
    (`picks`: `negatives` candidate positions per example). Reads as the examples with their drawn negatives."""

    examples: Sequence[Example]
    order: array[int]
    picks: array[int]
    negatives: int

    @classmethod
    def drawn(cls, examples: Sequence[Example], negatives: int, rng: random.Random) -> EpochDraw:
        """The examples shuffled, then `negatives` candidates drawn for each: the calls (and the draws) that
        shuffling the examples themselves and `rng.sample(candidates, negatives)` make."""
        order = array("q", range(len(examples)))
        rng.shuffle(order)
        picks = array("i")
        for index in order:
            picks.extend(rng.sample(range(len(examples[index][2])), negatives))
        return cls(examples, order, picks, negatives)

    def __len__(self) -> int:
        return len(self.order)

    @overload
    def __getitem__(self, position: int) -> Example: ...

    @overload
    def __getitem__(self, position: slice) -> EpochDraw: ...

    def __getitem__(self, position: int | slice) -> Example | EpochDraw:
        k = self.negatives
        if isinstance(position, slice):
            start, stop, step = position.indices(len(self))
            if step != 1:
                return self.taken(range(start, stop, step))
            return EpochDraw(self.examples, self.order[start:stop], self.picks[start * k : stop * k], k)
        position = range(len(self))[position]
        query_id, positive, candidates = self.examples[self.order[position]]
        return query_id, positive, [candidates[pick] for pick in self.picks[position * k : (position + 1) * k]]

    def taken(self, positions: Iterable[int]) -> EpochDraw:
        """The draw at `positions` (in that order, repeats allowed)."""
        order, picks, k = array("q"), array("i"), self.negatives
        for position in positions:
            order.append(self.order[position])
            picks.extend(self.picks[position * k : (position + 1) * k])
        return EpochDraw(self.examples, order, picks, k)
