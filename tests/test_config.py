"""Every config group option composes; the start-up check turns each impossible config into one clear line."""

from pathlib import Path

import pytest
from hydra.utils import get_object, instantiate

from retrieval_exp.data.local import register_all
from retrieval_exp.errors import UserError
from retrieval_exp.tracking.mlflow_run import DEFAULT_STORE
from retrieval_exp.validation import validate
from tests.conftest import REPO, TEST_CONF, TINY, compose_config

OPTIONS = sorted(  # every option of every group, the tests' own included, presets in sub-folders by their path
    (group.name, str(path.relative_to(group).with_suffix("")))
    for root in (REPO / "conf", TEST_CONF)
    for group in root.iterdir()
    if group.is_dir() and group.name != "hydra"  # Hydra's own groups: the SLURM launcher, in test_cluster_config
    for path in group.rglob("*.yaml")
)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_its_target_imports(group: str, option: str) -> None:
    cfg = compose_config(f"{group}={option}")
    node = cfg if group == "experiment" else cfg[group]
    for key in ("model", "loss", "retriever", "hardware", "optim"):
        target = (node.get(key) if group == "experiment" else node) or {}
        if "_target_" in target:
            assert get_object(target._target_)


def test_default_experiment_is_minilm_infonce_on_scifact() -> None:
    cfg = compose_config()
    assert cfg.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2" and cfg.model.pooling == "mean"
    assert cfg.loss._target_.endswith("InfoNCE") and cfg.train
    assert (cfg.data.train.dataset, cfg.data.test) == ("beir/scifact/train", "beir/scifact/test")
    assert cfg.data.train.negatives == 1 and cfg.data.train.miner._target_.endswith("BM25")
    assert cfg.tracking.uri == DEFAULT_STORE == "sqlite:///results/mlflow.db"  # the tools' --tracking-uri default


def test_bm25_preset_has_no_model_and_does_not_train() -> None:
    cfg = compose_config("experiment=bm25")
    assert cfg.get("model") is None and cfg.get("loss") is None and not cfg.train
    assert (cfg.retriever.k1, cfg.retriever.b) == (0.9, 0.4)


def test_zero_shot_preset_keeps_the_model_and_does_not_train() -> None:
    cfg = compose_config("experiment=zero_shot")
    assert cfg.model.name_or_path.endswith("all-MiniLM-L6-v2") and not cfg.train and cfg.method == "zero_shot"


def test_objects_build_from_their_configs() -> None:
    cfg = compose_config(*TINY)
    assert instantiate(cfg.loss).temperature == 0.05
    assert instantiate(cfg.hardware).precision == "fp32"
    assert instantiate(cfg.data.train).miner.k1 == 0.9


def plan_of(*overrides: str):  # noqa: ANN201
    cfg = compose_config(*TINY, *overrides)
    register_all(cfg.data.register)
    return validate(cfg)


def test_valid_configs_give_a_plan() -> None:
    assert plan_of().trains and plan_of().method == "infonce"
    bm25 = plan_of("experiment=bm25")
    assert (bm25.trains, bm25.needs_model, bm25.method) == (False, False, "bm25")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.test=beir/no-such-dataset/test"], "unknown dataset id 'beir/no-such-dataset/test'"),
        (["data.test=beir/scifact"], "has no qrels"),
        (["model.name_or_path=nobody/no-such-model"], "is not in the Hugging Face cache"),
        (
            ["loss._target_=tests.fakes.CrossEncoderOnlyLoss"],
            "trains cross_encoder models, but the model is a bi_encoder",
        ),
        (["loss._target_=tests.fakes.RankedListLoss"], "needs ranked lists (q, [d]*n, targets) batches"),
        (["eval.measures=[nDCG@ten]"], "ir_measures cannot parse"),
        (["loss=revela"], "loss 'revela' trains revela models, but the model is a bi_encoder"),
        (["model=tiny_revela"], "loss 'infonce' trains bi_encoder models, but the model is a revela"),
        (["model=tiny_revela", "loss=revela"], "needs chunk groups ([c]*16) batches"),
        (["model=tiny_revela", "model.lm=nobody/no-such-lm"], "model 'nobody/no-such-lm' is not in the Hugging Face"),
        (["experiment=zero_shot", "~model"], "needs a model, but model is null"),
        (["loss._target_=retrieval_exp.losses.nothing.Here"], "cannot be imported"),
        (["agreement={ks:[1]}"], "agreement compares a trained student with its teacher's scores"),
        (
            ["data=tiny_pairs", "loss=hybrid_kd", "model@teacher=tiny_bert", "data.train.selection._target_=no.Rule"],
            "data.train.selection._target_='no.Rule' cannot be imported",
        ),
        (
            ["data=tiny_pairs", "loss=hybrid_kd", "model@teacher=tiny_bert", "data.train.selection.percentile=100"],
            "data.train.selection: percentile must be in [0, 100), got 100",
        ),
        (["trainer.batch_size=-4"], "trainer.batch_size=-4 is out of range: it must be >= 1"),
        (["trainer.batch_size=0"], "trainer.batch_size=0 is out of range: it must be >= 1"),
        (["trainer.epochs=-1"], "trainer.epochs=-1 is out of range: it must be >= 1"),
        (["trainer.max_steps=0"], "trainer.max_steps=0 is out of range: it must be >= 1"),
        (["trainer.max_grad_norm=0"], "trainer.max_grad_norm=0 is out of range: it must be > 0"),
        (["trainer.log_every=abc"], "trainer.log_every='abc' is not an integer"),
        (["trainer.grad_accum=1.5"], "trainer.grad_accum=1.5 is not an integer"),
        (["trainer.batch_size=null"], "trainer.batch_size cannot be null: give an integer"),
        (["+trainer.lr=1e-5"], "trainer.lr is not a setting of trainer: the settings are batch_size, cache_chunk,"),
    ],
)
def test_impossible_configs_fail_with_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError) as failure:
        plan_of(*overrides)
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_model_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="has no config.json"):
        plan_of(f"model.name_or_path={tmp_path}")


def test_teacher_losses_need_a_teacher() -> None:
    with pytest.raises(UserError, match="distils a teacher's scores: choose one, e.g. model@teacher=mpnet"):
        plan_of("loss=margin_mse")
    assert plan_of("loss=kl_distill", "model@teacher=tiny_bert").needs_teacher


def test_docpair_data_needs_docpairs() -> None:
    # beir/scifact/train has qrels but no docpairs: fine for mined triples, not for DocpairTriples.
    with pytest.raises(UserError, match="'beir/scifact/train' has no docpairs"):
        plan_of(
            "data.train._target_=retrieval_exp.data.triples.DocpairTriples", "data.train.dataset=beir/scifact/train"
        )
