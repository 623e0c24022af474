"""Every shipped config's `_target_` is what its interface says (retrieval_exp/interfaces.py), so the start-up
checks that read the declarations (kinds, shapes, needs) read real ones."""

import inspect

import pytest
from hydra.utils import get_object

from retrieval_exp.batches import BatchShape
from retrieval_exp.interfaces import ModelKind, Retriever, Sampler
from retrieval_exp.losses.base import Loss
from tests.conftest import REPO, TEST_CONF, compose_config


def options(group: str) -> list[str]:
    return sorted({path.stem for root in (REPO / "conf", TEST_CONF) for path in (root / group).glob("*.yaml")})


MODEL_METHODS = ("collate", "training_output", "save")


@pytest.mark.parametrize("option", options("model"))
def test_every_model_is_a_model_of_its_kind(option: str) -> None:
    model = get_object(compose_config(f"model={option}").model._target_)
    assert isinstance(model.kind, ModelKind) and all(callable(getattr(model, name, None)) for name in MODEL_METHODS)
    assert callable(getattr(model, "embed", None)) or callable(getattr(model, "score_pairs", None))


@pytest.mark.parametrize("option", options("loss"))
def test_every_loss_declares_its_shape_and_kinds(option: str) -> None:
    node = compose_config(f"loss={option}").loss
    loss = get_object(node._target_)
    assert issubclass(loss, Loss) and not inspect.isabstract(loss)
    if "parts" not in node:  # a weighted sum takes its shape and kinds from its parts
        assert isinstance(loss.batch_shape, BatchShape) and all(isinstance(k, ModelKind) for k in loss.model_kinds)


@pytest.mark.parametrize("option", options("data"))
def test_every_training_data_is_a_sampler(option: str) -> None:
    sampler = get_object(compose_config(f"data={option}").data.train._target_)
    assert issubclass(sampler, Sampler) and isinstance(sampler.batch_shape, BatchShape)
    assert set(sampler.requires) <= {"docs", "queries", "qrels", "docpairs", "scoreddocs"}


@pytest.mark.parametrize("option", options("retriever"))
def test_every_retriever_is_a_retriever(option: str) -> None:
    retriever = get_object(compose_config(f"retriever={option}").retriever._target_)
    assert issubclass(retriever, Retriever) and not inspect.isabstract(retriever)
    assert all(isinstance(kind, ModelKind) for kind in retriever.model_kinds)
    assert retriever.needs_encoder == bool(retriever.model_kinds)
