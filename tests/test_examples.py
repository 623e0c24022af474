"""Examples held as integer codes and an epoch held as positions give the tuples, the shuffles and the draws that
lists of tuples gave."""

from __future__ import annotations

import random

import pytest

from retrieval_exp.data.examples import CompactExamples, EpochDraw, Example
from retrieval_exp.data.triples import TripleSampler, arrangement_without_repeats


def some_examples(count: int, seed: int = 5) -> list[Example]:
    rng = random.Random(seed)
    return [
        (f"q{rng.randrange(count // 3)}", f"d{rng.randrange(40)}", [f"d{rng.randrange(40)}" for _ in range(k)])
        for k in (rng.choice([1, 2, 3, 30]) for _ in range(count))
    ]


def drawn_as_first_written(examples: list[Example], negatives: int, rng: random.Random) -> list[Example]:
    """TripleSampler's draw before EpochDraw: the example tuples shuffled, then each one's negatives sampled."""
    order = list(examples)
    rng.shuffle(order)
    return [(q, positive, rng.sample(candidates, negatives)) for q, positive, candidates in order]


def test_compact_examples_read_back_as_tuples() -> None:
    examples = some_examples(60)
    compact = CompactExamples(examples)
    assert list(compact) == examples and len(compact) == 60
    assert compact[-1] == examples[-1] and compact[3:9:2] == examples[3:9:2]
    assert len(compact._ids) == len({i for q, d, c in examples for i in (q, d, *c)})  # each id held once
    with pytest.raises(IndexError):
        compact[60]


@pytest.mark.parametrize("negatives", [1, 2])
@pytest.mark.parametrize("compact", [False, True])
def test_the_draw_is_the_one_of_shuffled_tuples(negatives: int, compact: bool) -> None:
    examples = [e for e in some_examples(80) if len(e[2]) >= negatives]
    stored = CompactExamples(examples) if compact else examples
    ours, rng = random.Random(11), random.Random(11)
    draw = EpochDraw.drawn(stored, negatives, ours)
    expected = drawn_as_first_written(examples, negatives, rng)
    assert list(draw) == expected
    assert ours.random() == rng.random()  # as many calls made: what follows the draw is the same too
    sliced = draw[7:30]
    assert list(sliced) == expected[7:30]
    stepped = draw[1::3]
    assert list(stepped) == expected[1::3]
    taken = draw.taken([5, 2, 5])
    assert list(taken) == [expected[5], expected[2], expected[5]] and draw[-1] == expected[-1]


class Listed(TripleSampler):
    """A sampler over fixed examples, stored compact or as the list."""

    def __init__(self, examples: list[Example], compact: bool, unique: bool) -> None:
        super().__init__("none", 1, seed=3, unique_queries=unique, batch_size=4 if unique else 0)
        self.examples, self.compact = examples, compact

    def load(self) -> tuple[dict[str, str], dict[str, str], CompactExamples | list[Example]]:
        ids = {i for q, d, c in self.examples for i in (q, d, *c)}
        texts = {i: f"text of {i}" for i in ids}
        return texts, texts, CompactExamples(self.examples) if self.compact else list(self.examples)


@pytest.mark.parametrize("unique", [False, True])
def test_a_sampler_gives_the_same_epochs_from_compact_examples(unique: bool) -> None:
    examples = some_examples(90)
    listed, compact = Listed(examples, False, unique), Listed(examples, True, unique)
    for epoch in (0, 1):
        ours = compact.epoch(epoch)
        expected = drawn_as_first_written(examples, 1, compact.epoch_rng(epoch))
        if unique:
            keys = [{f"q:{q}", f"d:{d}", *(f"d:{n}" for n in negatives)} for q, d, negatives in expected]
            expected = [expected[i] for i in arrangement_without_repeats(keys, 4)]
        assert [(t.query_id, t.doc_ids[0], list(t.doc_ids[1:])) for t in ours] == expected  # type: ignore[index]
        assert list(ours) == list(listed.epoch(epoch)) and list(ours[4:12]) == list(ours)[4:12]
