"""No false in-batch negatives: the mask a batch carries (by hand, on a batch with a repeated query and a document
twice), the in-batch losses with it against hand-computed values, across ranks, and batches without repeats."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from retrieval_exp.batches import Triple, TripleBatch, TripleEmbeddings, block_diagonal
from retrieval_exp.data.triples import in_batch_false_negatives, without_repeats
from retrieval_exp.errors import UserError
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.losses.distillation import HybridKD
from retrieval_exp.losses.margin import StaticMargin
from retrieval_exp.models.bi_encoder import BiEncoder
from tests.conftest import launch
from tests.test_launch import runs

# q1 twice (d1 and d2 both judged relevant), q2 whose positive is d1 too; one hard negative each.
TRIPLES = [
    Triple("sleep and memory", "d1 text", ("n1 text",), None, "q1", ("d1", "n1"), frozenset({"d1", "d2"})),
    Triple("sleep and memory", "d2 text", ("n2 text",), None, "q1", ("d2", "n2"), frozenset({"d1", "d2"})),
    Triple("vaccines", "d1 text", ("n3 text",), None, "q2", ("d1", "n3"), frozenset({"d1"})),
]
# columns: d1 (row 0's positive), d2, d1 (row 2's positive), n1, n2, n3
MASK = [
    [False, True, True, False, False, False],  # q1: d2 is relevant, d1 of row 2 is its own positive
    [True, False, True, False, False, False],  # q1: both d1 columns are relevant
    [True, False, False, False, False, False],  # q2: row 0's d1 is its positive twice; d2 is not judged for q2
]


def test_collate_marks_relevant_and_identical_documents_of_other_rows(tiny_bert: Path) -> None:
    batch = BiEncoder(str(tiny_bert)).collate(TRIPLES)
    assert batch.false_negatives.tolist() == MASK
    assert batch.not_negatives(in_batch=False).tolist() == [[False, False], [False, False], [False, False]]
    without_ids = [Triple(t.query, t.positive, t.negatives) for t in TRIPLES]
    by_text = BiEncoder(str(tiny_bert)).collate(without_ids).false_negatives  # no qrels: identical texts only
    assert by_text.tolist() == [[False, False, True, False, False, False], [False] * 6, [True] + [False] * 5]


def test_the_sampler_counts_what_the_mask_takes_out(tiny_bert: Path) -> None:
    mask = BiEncoder(str(tiny_bert)).collate(TRIPLES).false_negatives
    assert in_batch_false_negatives(TRIPLES, 3) == mask.sum().item() / 3 == 5 / 3
    assert in_batch_false_negatives(TRIPLES, 2) == 2 / 3  # [q1, q1] share d1 and d2; q2 alone
    without_ids = [Triple(t.query, t.positive, t.negatives) for t in TRIPLES]
    assert in_batch_false_negatives(without_ids, 3) == 2 / 3  # no qrels: rows 0 and 2 share the text of d1
    assert in_batch_false_negatives(TRIPLES, 2, batches=1) == 2 / 2  # the first batch only: [q1, q1]


def output() -> TripleEmbeddings:
    queries = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    positives = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.6, 0.8]])
    negatives = torch.tensor([[[0.0, 1.0]], [[-1.0, 0.0]], [[0.8, -0.6]]])
    return TripleEmbeddings(queries, positives, negatives)


def masked_batch() -> TripleBatch:
    return TripleBatch(None, None, 1, torch.tensor([[0.9], [0.8], [0.7]]), torch.tensor(MASK))  # type: ignore[arg-type]


def test_infonce_leaves_false_negatives_out_of_the_softmax() -> None:
    scores = (output().queries @ torch.cat([output().positives, output().negatives.flatten(0, 1)]).T).tolist()
    expected = 0.0
    for row, (values, mask) in enumerate(zip(scores, MASK)):
        kept = [v / 0.5 for v, masked in zip(values, mask) if not masked]  # the target column is never masked
        expected += math.log(sum(math.exp(v) for v in kept)) - values[row] / 0.5
    value = InfoNCE(temperature=0.5).compute_loss(output(), masked_batch())
    assert value.item() == pytest.approx(expected / 3, abs=1e-6)
    unmasked = InfoNCE(temperature=0.5, mask_false_negatives=False).compute_loss(output(), masked_batch())
    assert unmasked.item() > value.item()  # the positives counted as negatives raised the loss


def test_hybrid_kd_masks_its_contrastive_part() -> None:
    batch = masked_batch()
    pairs = TripleEmbeddings(output().queries, output().positives, output().positives[:, None][:, :0])
    pair_batch = TripleBatch(None, None, 0, batch.teacher_scores, batch.false_negatives[:, :3])  # type: ignore[arg-type]
    hybrid = HybridKD(temperature=0.5, weight=0.0).compute_loss(pairs, pair_batch)
    scores = (pairs.queries @ pairs.positives.T / 0.5).tolist()
    expected = sum(
        math.log(sum(math.exp(v) for v, m in zip(values, mask[:3]) if not m)) - values[row]
        for row, (values, mask) in enumerate(zip(scores, MASK))
    )
    assert hybrid.item() == pytest.approx(expected / 3, abs=1e-6)


def test_in_batch_margins_skip_negatives_relevant_to_the_row() -> None:
    mask = [[False, False, True], [False, False, False], [True, False, False]]  # n3 relevant to q1, n1 to q2
    batch = TripleBatch(None, None, 1, None, torch.tensor([[False] * 3 + row for row in mask]))  # type: ignore[arg-type]
    out = output()
    positive = (out.queries * out.positives).sum(1)
    margins = positive[:, None] - out.queries @ out.negatives.flatten(0, 1).T
    kept = [(m - 0.5) ** 2 for row, flags in zip(margins.tolist(), mask) for m, f in zip(row, flags) if not f]
    value = StaticMargin(margin=0.5, in_batch=True).compute_loss(out, batch)
    assert value.item() == pytest.approx(sum(kept) / len(kept), abs=1e-6) and len(kept) == 7


def test_gathered_masks_are_known_within_each_ranks_part() -> None:
    rank0 = torch.tensor([[False, True, False, False], [True, False, False, True]])  # b = 2, k = 1
    rank1 = torch.tensor([[False, False, True, False], [False, False, False, False]])
    combined = block_diagonal([rank0, rank1])
    # columns: positives of rank 0, of rank 1, then negatives of rank 0, of rank 1
    assert combined.int().tolist() == [
        [0, 1, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]


def keys(triple: Triple) -> set[str]:
    return {f"q:{triple.query_id}", *(f"d:{d}" for d in triple.doc_ids or ())}


def test_batches_without_repeats_hold_every_triple_once_and_no_query_twice() -> None:
    triples = [  # 6 queries, q0 with 4 positives; d0 is also q1's positive
        Triple(f"q{q}", f"d{d}", (f"n{q}{d}",), None, f"q{q}", (f"d{d}", f"n{q}{d}"), frozenset())
        for q, d in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (2, 5), (3, 6), (4, 7), (5, 8)]
    ]
    arranged = without_repeats(triples, 3)
    batches = [arranged[i : i + 3] for i in range(0, len(arranged), 3)]
    assert len(arranged) % 3 == 0 and set(triples) <= set(arranged)
    for batch in batches:
        assert len(batch) == 3 and sum(len(keys(t)) for t in batch) == len(set().union(*map(keys, batch)))
    assert len(arranged) == 12  # q0's four rows need four batches; the last ones are topped up from the epoch
    with pytest.raises(UserError, match="6 distinct queries, fewer than a batch of 7"):
        without_repeats(triples, 7)


def test_a_run_with_unique_queries_trains(tmp_path: Path) -> None:
    done = launch(tmp_path / "ok", "data.train.unique_queries=true", "trainer.max_steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs(tmp_path / "ok")
    assert run.info.status == "FINISHED"
    assert "batches/false_negatives" in run.data.metrics  # the sampler's count, by hand above
