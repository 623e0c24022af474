"""Distillation from a teacher's scores: the teacher-based baselines of Method 1 (the formulas as lightning-ir
implements them: docs/METHODS.md, section 1) and Method 3's hybrid loss. Scores are the model's own similarity (dot
product of its embeddings: cosine for normalised encoders); the batches carry the teacher's scores for the positive
and each negative."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrieval_exp.batches import BatchShape, TripleBatch, TripleEmbeddings
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.losses.base import Loss
from retrieval_exp.losses.contrastive import InfoNCE
from retrieval_exp.settings import NonNegativeFloat, PositiveFloat


def student_scores(output: TripleEmbeddings) -> torch.Tensor:
    """(B, 1 + k): each query's score for its positive, then its negatives."""
    documents = torch.cat([output.positives.unsqueeze(1), output.negatives], dim=1)
    return torch.einsum("bh,bnh->bn", output.queries, documents)


class MarginMSE(Loss):
    """Margin-MSE (Hofstatter et al., 2020): MSE between the student's margin s(q,d+) - s(q,d-) and the teacher's
    t(q,d+) - t(q,d-), one margin per negative."""

    name = "margin_mse"
    batch_shape = BatchShape.TRIPLES
    model_kinds = (ModelKind.BI_ENCODER,)
    needs_teacher = True

    def compute_loss(self, output: TripleEmbeddings, batch: TripleBatch) -> torch.Tensor:
        scores, teacher = student_scores(output), batch.teacher()
        return F.mse_loss(scores[:, :1] - scores[:, 1:], teacher[:, :1] - teacher[:, 1:])


class KLDistill(Loss):
    """Listwise KL divergence from the teacher's distribution over each query's [d+, d-...] to the student's:
    KL(softmax(t / teacher_temperature) || softmax(s / temperature)), averaged over queries. Both default to 0.05
    because both scores are cosines when the teacher is a normalised bi-encoder; use 1.0 for a logit-scored teacher."""

    name = "kl_distill"
    batch_shape = BatchShape.TRIPLES
    model_kinds = (ModelKind.BI_ENCODER,)
    needs_teacher = True

    def __init__(self, temperature: PositiveFloat = 0.05, teacher_temperature: PositiveFloat = 0.05) -> None:
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def compute_loss(self, output: TripleEmbeddings, batch: TripleBatch) -> torch.Tensor:
        student = F.log_softmax(student_scores(output) / self.temperature, dim=-1)
        teacher = F.log_softmax(batch.teacher() / self.teacher_temperature, dim=-1)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


class HybridKD(Loss):
    """Method 3's hybrid loss (docs/METHODS.md, section 3) over in-batch similarities S = Q D^T of scored pairs:
    InfoNCE(S / temperature, diagonal) + weight * MSE(S_ii, t_i), t_i the teacher's score of pair i. Only the
    diagonal meets the teacher; weight 0 is plain in-batch InfoNCE at `temperature`. `mask_false_negatives` as
    InfoNCE's: a pair of the same query (SciFact judges several documents per query) is no negative."""

    name = "hybrid_kd"
    batch_shape = BatchShape.SCORED_PAIRS
    model_kinds = (ModelKind.BI_ENCODER,)
    needs_teacher = True

    def __init__(
        self, temperature: PositiveFloat = 0.1, weight: NonNegativeFloat = 0.1, mask_false_negatives: bool = True
    ) -> None:
        self.contrastive, self.weight = InfoNCE(temperature, True, mask_false_negatives), weight

    def compute_loss(self, output: TripleEmbeddings, batch: TripleBatch) -> torch.Tensor:
        regression = F.mse_loss(student_scores(output)[:, 0], batch.teacher()[:, 0])
        contrastive = self.contrastive.compute_loss(output, batch)
        self.terms = {"contrastive": contrastive.detach(), "regression": regression.detach()}
        return contrastive + self.weight * regression
