"""Re-ranking validation with early stopping, and the weight-decay parameter groups."""

import importlib.util
from pathlib import Path

import pytest
from hydra.utils import instantiate

from retrieval_exp.data.local import register_all
from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.plan import build_plan
from retrieval_exp.training import checkpoint
from retrieval_exp.training.optim import parameter_groups
from retrieval_exp.training.validation import RerankValidation
from tests.conftest import TINY, compose_config
from tests.test_training import run_training

PAPER_TINY = [
    "experiment=self_distill/paper",
    "model=tiny_bert",
    "data=tiny_docpairs",
    "validation.dataset=tiny/test",
    "validation.every=1",
    "validation.depth=10",
    "trainer.batch_size=3",
    "hardware.encode_batch_size=8",
]


def test_patience_counts_validations_without_improvement() -> None:
    validator = RerankValidation("tiny/test", patience=2)
    history = [validator.update(v, step) for step, v in enumerate([0.5, 0.6, 0.6, 0.58], start=1)]
    assert history == [True, True, False, False]
    assert (validator.best, validator.best_step, validator.exhausted) == (0.6, 2, True)


def test_training_ends_with_the_best_validated_weights(tmp_path: Path) -> None:
    validator = RerankValidation("tiny/test", depth=10, every=1, patience=1)
    trained = run_training(tmp_path, max_steps=6, validator=validator, overrides=("optim.lr=1e-3",))
    values = trained.validations
    assert validator.best == max(values) and values[validator.best_step - 1] == validator.best
    assert trained.result.steps == len(values) and (trained.result.steps < 6) == validator.exhausted
    best = checkpoint.load(tmp_path, checkpoint.BEST)["model"]
    assert all((best[name] == value).all() for name, value in trained.model.state_dict().items())
    assert validator.score(trained.model, Hardware())["nDCG@10"] == pytest.approx(validator.best)


def test_training_loss_patience_stops_on_epochs_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    """lr 0.3 makes the tiny model's training loss jump about, so the patience of 1 epoch runs out."""
    overrides = ("trainer.loss_patience=1", "optim.lr=0.3", "scheduler.warmup=0", "scheduler.decay=constant")
    trained = run_training(tmp_path, max_steps=40, overrides=overrides)
    epoch_losses, steps = trained.validations, trained.result.steps
    per_epoch = steps // len(epoch_losses)
    assert steps < 40 and steps % per_epoch == 0  # it stopped, at the end of an epoch
    best = epoch_losses.index(min(epoch_losses))
    assert best == len(epoch_losses) - 2  # the one before the first epoch without improvement (patience 1)
    per_step_means = [sum(trained.losses[i : i + per_epoch]) / per_epoch for i in range(0, steps, per_epoch)]
    assert epoch_losses == pytest.approx(per_step_means, rel=1e-5)  # the mean of the epoch's logged step losses
    kept = checkpoint.load(tmp_path, checkpoint.BEST)
    assert kept["step"] == (best + 1) * per_epoch
    assert all((kept["model"][name] == value).all() for name, value in trained.model.state_dict().items())


def test_loss_patience_and_validation_cannot_both_stop() -> None:
    cfg = compose_config(*PAPER_TINY, "optim=adamw", "trainer.loss_patience=2")
    register_all(cfg.data.register)
    with pytest.raises(UserError, match="trainer.loss_patience and validation both stop early"):
        build_plan(cfg)


def test_bias_and_norm_weights_can_be_exempt_from_weight_decay() -> None:
    model = instantiate(compose_config(*TINY).model)
    decayed, exempt = parameter_groups(model, exclude_bias_and_norm=True)
    names = {id(p): n for n, p in model.named_parameters()}
    assert exempt["weight_decay"] == 0.0 and "weight_decay" not in decayed
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in exempt["params"])
    assert any(names[id(p)].endswith("query.weight") for p in decayed["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(parameter_groups(model, False))


def test_paper_preset_is_the_authors_set_up() -> None:
    cfg = compose_config("experiment=self_distill/paper")
    assert (cfg.model.name_or_path, cfg.model.pooling) == ("microsoft/mpnet-base", "cls")
    assert (cfg.model.query_length, cfg.model.doc_length, cfg.trainer.batch_size) == (20, 200, 128)
    assert (cfg.optim.lr, cfg.scheduler.decay, cfg.scheduler.gamma, cfg.seed) == (
        5e-7,
        "exponential",
        0.99999,
        153201820,
    )
    assert (cfg.data.train.dataset, cfg.data.train.group_size) == ("msmarco-passage/train", 128)
    assert (cfg.validation.dataset, cfg.validation.every, cfg.validation.patience) == (
        "msmarco-passage/trec-dl-2020/judged",
        500,
        16,
    )
    assert compose_config("experiment=self_distill/paper", "model=roberta").model.pooling == "pooler"


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_8bit_adam_without_bitsandbytes_is_one_line() -> None:
    cfg = compose_config(*PAPER_TINY)
    register_all(cfg.data.register)
    with pytest.raises(UserError, match=r"optim adam8bit needs bitsandbytes: pip install -e '.\[adam8bit\]'"):
        build_plan(cfg)
