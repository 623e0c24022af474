"""Every config group option composes and validates into a plan (bad input, kind by kind: test_bad_input.py)."""

import pytest
from hydra.utils import get_object, instantiate

from retrieval_exp.data.local import register_all
from retrieval_exp.errors import UserError
from retrieval_exp.plan import build_plan
from retrieval_exp.tracking.mlflow_run import DEFAULT_STORE
from tests.conftest import REPO, TEST_CONF, TINY, compose_config

OPTIONS = sorted(  # every option of every group, the tests' own included, presets in sub-folders by their path
    (group.name, str(path.relative_to(group).with_suffix("")))
    for root in (REPO / "conf", TEST_CONF)
    for group in root.iterdir()
    if group.is_dir() and group.name != "hydra"  # Hydra's own groups: the SLURM launcher, in test_cluster_config
    for path in group.rglob("*.yaml")
)
GLOBAL_GROUPS = ("experiment", "hparams_search")  # options that set keys across the config (`@package _global_`)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_its_target_imports(group: str, option: str) -> None:
    cfg = compose_config(f"{group}={option}")
    whole = group in GLOBAL_GROUPS
    node = cfg if whole else cfg[group]
    for key in ("model", "loss", "retriever", "hardware", "optim"):
        target = (node.get(key) if whole else node) or {}
        if "_target_" in target:
            assert get_object(target._target_)


def test_default_experiment_is_minilm_infonce_on_scifact() -> None:
    cfg = compose_config()
    assert (
        cfg.model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2" and cfg.model.pooling is None
    )  # as the folder declares
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
    return build_plan(cfg)


def test_valid_configs_give_a_plan() -> None:
    assert plan_of().trains and plan_of().method == "infonce"
    bm25 = plan_of("experiment=bm25")
    assert (bm25.trains, bm25.needs_model, bm25.method) == (False, False, "bm25")


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
