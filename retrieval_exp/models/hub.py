"""Checks that a Hugging Face model can be loaded here, before anything is loaded."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache

from retrieval_exp.errors import UserError


def require_available(name_or_path: str) -> None:
    """A local folder must hold config.json; offline, a hub id must already be in the cache."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(
                f"model folder {str(local)!r} has no config.json: point model.name_or_path at a saved model"
            )
        return
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        raise UserError(
            f"model {name_or_path!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1: "
            "fill the cache (README, 'Offline use') or give a local model folder"
        )
