"""The sentence-transformers view of a model folder. Writing: a saved bi-encoder is also a SentenceTransformer
(Transformer with both lengths, Pooling, a Dense for the pooler or the projection head, Normalize, the prefixes as
its "query" and "document" prompts), a saved cross-encoder a sentence_transformers CrossEncoder ([CLS] Pooling and a
Dense score head, raw scores). Reading: the pooling, normalisation, lengths and prompts a sentence-transformers folder
or hub id declares, so that such a model is used as it was trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from retrieval_exp.errors import UserError
from retrieval_exp.models.hub import read_json

ST_POOLING = {"cls": "cls", "mean": "mean", "eos": "lasttoken", "pooler": "cls"}  # the suite's -> Pooling's mode
SUITE_POOLING = {"cls": "cls", "mean": "mean", "lasttoken": "eos"}
LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "eos"}
NO_LIMIT = 10**6  # a tokenizer's model_max_length at or above this means none was set (transformers writes 1e30)
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # the names sentence-transformers' encode_document looks for


def dense(layer: torch.nn.Linear, activation: torch.nn.Module, **names: Any) -> torch.nn.Module:
    """A sentence-transformers Dense holding a copy of `layer`'s weights, followed by `activation`."""
    from sentence_transformers.base.modules import Dense

    bias = None if layer.bias is None else layer.bias.detach().clone()
    return Dense(
        layer.in_features,
        layer.out_features,
        bias=layer.bias is not None,
        activation_function=activation,
        init_weight=layer.weight.detach().clone(),
        init_bias=bias,
        **names,
    )


def write_bi_encoder(
    path: Path,
    pooling: str,
    layers: Sequence[torch.nn.Module],
    normalize: bool,
    lengths: dict[str, int],
    prefixes: dict[str, str],
) -> None:
    """Add sentence-transformers' files to a saved bi-encoder folder: its Transformer (the suite's lengths), the
    Pooling, `layers` (Dense modules, applied in order) and Normalize when the vectors are normalised."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(
        str(path),
        query_length=lengths["query"],
        document_length=lengths["doc"],
        max_seq_length=max(lengths.values()),
    )
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), ST_POOLING[pooling]), *layers]
    if normalize:
        modules.append(Normalize())
    prompts = {"query": prefixes["query"], "document": prefixes["doc"]}
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(path), create_model_card=False)


def write_cross_encoder(path: Path, head: torch.nn.Linear, max_length: int) -> None:
    """Add sentence-transformers' files to a saved cross-encoder folder: Transformer, [CLS] Pooling and the score
    head as a Dense to "scores"; predict() returns the raw score, as the suite ranks by it."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(str(path), max_seq_length=max_length)
    score = dense(head, torch.nn.Identity(), module_output_name="scores")
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), "cls"), score]
    model = CrossEncoder(modules=modules, activation_fn=torch.nn.Identity(), device="cpu")
    model.save(str(path), create_model_card=False)


def declared_settings(name_or_path: str) -> dict[str, Any]:
    """What a sentence-transformers folder or hub id declares, under the BiEncoder's argument names: pooling,
    normalize, query_length, doc_length, query_prefix, doc_prefix. Empty for a plain Hugging Face model."""
    modules = read_json(name_or_path, "modules.json")
    if modules is None:
        return {}
    kinds = {module["type"].rsplit(".", 1)[-1]: module.get("path", "") for module in modules}
    unread = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if unread:
        raise UserError(
            f"{name_or_path} is a sentence-transformers model with {', '.join(unread)} modules, which the suite's "
            "BiEncoder does not have: use a model of Transformer, Pooling and Normalize modules"
        )
    settings: dict[str, Any] = {"normalize": "Normalize" in kinds}
    if "Pooling" in kinds:
        settings["pooling"] = _pooling(name_or_path, read_json(name_or_path, f"{kinds['Pooling']}/config.json") or {})
    transformer = read_json(name_or_path, "sentence_bert_config.json") or {}
    limit = (read_json(name_or_path, "tokenizer_config.json") or {}).get("model_max_length") or NO_LIMIT
    longest = transformer.get("max_seq_length") or (limit if limit < NO_LIMIT else None)  # sentence-transformers' own
    for side, key in (("query", "query_length"), ("doc", "document_length")):
        if transformer.get(key) or longest:
            settings[f"{side}_length"] = transformer.get(key) or longest
    prompts = (read_json(name_or_path, "config_sentence_transformers.json") or {}).get("prompts") or {}
    if "query" in prompts:
        settings["query_prefix"] = prompts["query"]
    document = next((name for name in DOCUMENT_PROMPTS if name in prompts), None)
    if document:
        settings["doc_prefix"] = prompts[document]
    return settings


def _pooling(name_or_path: str, config: dict[str, Any]) -> str:
    mode = config.get("pooling_mode") or [name for key, name in LEGACY_POOLING.items() if config.get(key)]
    modes = [mode] if isinstance(mode, str) else list(mode)
    suite = [SUITE_POOLING.get(mode, mode) for mode in modes]
    if len(suite) != 1 or suite[0] not in SUITE_POOLING.values():
        raise UserError(
            f"{name_or_path} pools with {'+'.join(modes) or 'no mode'}, which the suite does not have: "
            "use a model pooled by cls, mean or lasttoken"
        )
    return suite[0]
