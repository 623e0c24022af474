"""Hugging Face model folders: checks that one can be loaded here, and as the kind of model the config asks for,
before anything is loaded; loading an encoder with the config's dropout; and writing one with the suite's head and
settings beside the weights."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, try_to_load_from_cache
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import cached_file

from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.models.lean_attention import use_lean_attention

SETTINGS_FILE = "retrieval_exp.json"  # what the suite writes beside the weights of a model it saves


def require_dropout(dropout: Any) -> None:
    """model.dropout is None or a probability."""
    if dropout is not None and (
        isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1
    ):
        raise UserError(f"model.dropout={dropout} is not a probability in [0, 1): e.g. 0.1, or null for the model's")


def load_encoder(name_or_path: str, dropout: float | None = None) -> PreTrainedModel:
    """The Hugging Face encoder, with every dropout probability of its config (hidden, attention, ...) set to
    `dropout`; None keeps the checkpoint's. dropout=0 makes training deterministic (model.dropout). SDPA attention
    becomes lean_attention: the same numbers, without SDPA's (L, L) float tensors when it trains on the CPU."""
    require_dropout(dropout)
    if dropout is None:
        return use_lean_attention(AutoModel.from_pretrained(name_or_path))
    config = AutoConfig.from_pretrained(name_or_path)
    saved = {key: value for key, value in config.to_dict().items() if "dropout" in key and isinstance(value, float)}
    config.update(dict.fromkeys(saved, float(dropout)))
    model = AutoModel.from_pretrained(name_or_path, config=config)
    model.config.update(saved)  # a training setting: the modules have it, a saved folder keeps the checkpoint's
    return use_lean_attention(model)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def require_available(name_or_path: str) -> None:
    """A local folder must hold a config.json naming its model type, and weights; offline, a hub id's config and
    weights must already be in the cache."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        _require_config(local / "config.json")
        if not any((local / name).is_file() for name in WEIGHT_FILES):
            raise UserError(
                f"model folder {str(local)!r} has no weights (none of {', '.join(WEIGHT_FILES)}): save the model "
                "with save_pretrained, or point model.name_or_path at a complete folder"
            )
        return
    if not constants.HF_HUB_OFFLINE:
        return
    cached = [try_to_load_from_cache(name_or_path, name) for name in ("config.json", *WEIGHT_FILES)]
    if not isinstance(cached[0], str) or not any(isinstance(path, str) for path in cached[1:]):
        raise UserError(
            f"model {name_or_path!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1: "
            "fill the cache (README, 'Offline use') or give a local model folder"
        )


def _require_config(path: Path) -> None:
    """A Hugging Face config.json that says which architecture to build."""
    where = f"model folder {str(path.parent)!r}"
    if not path.is_file():
        raise UserError(f"{where} has no config.json: point model.name_or_path at a saved model")
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (ValueError, AttributeError) as err:
        raise UserError(f"{where} has a config.json that is not a JSON object ({err}): save the model again") from None
    if not model_type:
        raise UserError(f"{where} has a config.json without model_type: save the model with save_pretrained")


def read_json(name_or_path: str, file_name: str) -> Any:
    """A JSON file of a local model folder or of a hub id (from the cache when offline); None when it has none."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / file_name
        return json.loads(path.read_text()) if path.is_file() else None
    found = cached_file(name_or_path, file_name, _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(found).read_text()) if found else None


def require_kind(name_or_path: str, kind: ModelKind) -> None:
    """A model folder saved by the suite as another kind (a bi-encoder loaded as a cross-encoder, or the reverse)
    is an error: its head would be dropped or made up."""
    settings = read_json(name_or_path, SETTINGS_FILE)
    saved = kind if settings is None else ModelKind(settings.get("kind", ModelKind.BI_ENCODER))
    if saved != kind:
        raise UserError(
            f"{name_or_path} holds a {saved} but the model config builds a {kind}: choose a {saved} model config "
            "(e.g. model=minilm_cross for a cross_encoder) or another folder"
        )


def save_folder(
    path: Path, encoder: Any, tokenizer: Any, settings: Mapping[str, Any], heads: Mapping[str, torch.nn.Module]
) -> None:
    """The encoder and tokenizer as a Hugging Face folder, each head's weights in its file, the settings (with the
    model kind) in SETTINGS_FILE."""
    encoder.save_pretrained(path)
    tokenizer.save_pretrained(path)
    for file_name, head in heads.items():
        save_file({name: tensor.contiguous() for name, tensor in head.state_dict().items()}, path / file_name)
    (path / SETTINGS_FILE).write_text(json.dumps(dict(settings), indent=2))
