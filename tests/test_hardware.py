"""hardware.compile_inference: the compiled model encodes as the plain one and keeps its weights' names."""

from pathlib import Path

import pytest
import torch

from retrieval_exp.hardware import Hardware
from retrieval_exp.models.bi_encoder import BiEncoder

TEXTS = ["the cat sat on the mat", "a dog", "cells divide and the mat is red and the cat is old"]


@pytest.mark.slow
def test_compiled_model_encodes_as_the_plain_one(tiny_bert: Path, tmp_path: Path) -> None:
    plain = BiEncoder(str(tiny_bert))
    expected = plain.embed(TEXTS, "doc", batch_size=2)
    compiled = Hardware(compile_inference=True).for_inference(BiEncoder(str(tiny_bert)))
    assert compiled._compiled_call_impl is not None
    assert torch.allclose(compiled.embed(TEXTS, "doc", batch_size=2), expected, atol=1e-5)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    compiled.save(tmp_path / "model")
    assert torch.allclose(BiEncoder(str(tmp_path / "model")).embed(TEXTS, "doc", batch_size=2), expected, atol=1e-5)


def test_off_by_default_leaves_the_model_alone(tiny_bert: Path) -> None:
    model = BiEncoder(str(tiny_bert))
    assert Hardware().for_inference(model) is model and model._compiled_call_impl is None
