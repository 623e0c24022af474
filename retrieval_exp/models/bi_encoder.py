"""Bi-encoder: one Hugging Face encoder for queries and documents, pooled to one vector per text, optionally
through a projection head (Linear + dropout, Method 3's compact student).

Relevance is the dot product of the two vectors: cosine similarity when `normalize` is on, as for
sentence-transformers' all-MiniLM-L6-v2 and the self-distillation paper's encoders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import processors
from transformers import AutoTokenizer, BatchEncoding

from retrieval_exp.batches import Tokens, Triple, TripleBatch, TripleEmbeddings, false_negatives
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.models.hub import SETTINGS_FILE, load_encoder, read_json, require_kind, save_folder
from retrieval_exp.models.inference import longest_first
from retrieval_exp.models.st_format import declared_settings, dense, write_bi_encoder

log = logging.getLogger(__name__)

Side = Literal["query", "doc"]
POOLINGS = ("cls", "mean", "pooler", "eos")
PLURALS = {"query": "queries", "doc": "docs"}
HEAD_FILE = "projection.safetensors"
TRANSIENT = ("truncation", "padding")  # tokenizer.json entries left out of the fingerprint
DEFAULTS = {"pooling": "mean", "normalize": True, "query_length": 64, "doc_length": 256}
DEFAULTS |= {"query_prefix": "", "doc_prefix": ""}  # what neither the config nor the model folder sets


class BiEncoder(torch.nn.Module):
    """Shared-weight encoder with cls | mean | pooler | eos pooling; queries and documents truncated separately.

    `eos` (decoder LMs as retrievers, RepLLaMA and Revela): every text ends with the tokenizer's EOS token, also when
    truncated, and its last real token's state is the vector.

    `projection`: the pooled vector goes through Linear(hidden, projection) and Dropout(projection_dropout) before
    normalisation. A saved model folder carries its head's weights (projection.safetensors). `dropout` sets the
    encoder's dropout probabilities (None: the checkpoint's).

    A setting left None (pooling, normalize, lengths, prefixes, projection) is what the model folder declares (the
    suite's settings file, or sentence-transformers' configuration), else DEFAULTS (resolve_settings).
    """

    kind = ModelKind.BI_ENCODER

    def __init__(
        self,
        name_or_path: str,
        pooling: str | None = None,
        normalize: bool | None = None,
        query_length: int | None = None,
        doc_length: int | None = None,
        query_prefix: str | None = None,
        doc_prefix: str | None = None,
        projection: int | None = None,
        projection_dropout: float = 0.1,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        require_kind(name_or_path, self.kind)
        given = {"pooling": pooling, "normalize": normalize, "query_length": query_length, "doc_length": doc_length}
        given |= {"query_prefix": query_prefix, "doc_prefix": doc_prefix, "projection": projection}
        settings = resolve_settings(name_or_path, given)
        if settings["pooling"] not in POOLINGS:
            raise UserError(f"model.pooling={settings['pooling']!r} is not one of {', '.join(POOLINGS)}")
        self.encoder: Any = load_encoder(name_or_path, dropout)  # a PreTrainedModel, or peft's wrapper of one
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.pooling, self.normalize = settings["pooling"], settings["normalize"]
        if self.pooling == "eos":
            self.tokenizer.padding_side = "right"
            self.tokenizer.pad_token = self.tokenizer.pad_token or self.tokenizer.eos_token
            append_eos(self.tokenizer)
        if self.pooling == "pooler":
            pooler_dense(self.encoder)  # a pooler sentence-transformers can write, checked before training
        self.lengths = {"query": settings["query_length"], "doc": settings["doc_length"]}
        self.prefixes = {"query": settings["query_prefix"], "doc": settings["doc_prefix"]}
        self.head = None
        if settings["projection"]:
            hidden = self.encoder.config.hidden_size
            self.head = torch.nn.Sequential(
                torch.nn.Linear(hidden, settings["projection"]), torch.nn.Dropout(projection_dropout)
            )
        self._load_head(Path(name_or_path) / HEAD_FILE)

    def _load_head(self, path: Path) -> None:
        """Load a saved head into the configured one; a saved head of another size is an error."""
        if not path.is_file():
            return
        weights = load_file(path)
        size = weights["0.weight"].shape[0]
        if self.head is None or self.head[0].out_features != size:
            raise UserError(f"{path.parent} was saved with a {size}-dim projection head: set model.projection={size}")
        self.head.load_state_dict(weights)

    def tokenize(self, texts: Sequence[str], side: Side) -> BatchEncoding:
        texts = [self.prefixes[side] + text for text in texts]
        return self.tokenizer(texts, max_length=self.lengths[side], truncation=True, padding=True, return_tensors="pt")

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One vector per tokenised text."""
        output = self.encoder(**tokens)
        if self.pooling == "pooler":
            vectors = output.pooler_output
        elif self.pooling == "cls":
            vectors = output.last_hidden_state[:, 0]
        elif self.pooling == "eos":
            last = tokens["attention_mask"].sum(1) - 1
            vectors = output.last_hidden_state[torch.arange(last.shape[0], device=last.device), last]
        else:
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            vectors = (output.last_hidden_state.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = vectors.float()
        if self.head is not None:
            vectors = self.head(vectors).float()
        return F.normalize(vectors, dim=-1) if self.normalize else vectors

    def collate(self, triples: Sequence[Triple]) -> TripleBatch:
        """Tokenise a list of triples; every triple must carry the same number of negatives."""
        counts = {len(triple.negatives) for triple in triples}
        if len(counts) != 1:
            raise ValueError(f"triples in one batch carry different numbers of negatives: {sorted(counts)}")
        documents = [t.positive for t in triples] + [n for t in triples for n in t.negatives]
        scored = all(t.teacher_scores is not None for t in triples)
        scores = torch.tensor([t.teacher_scores for t in triples]) if scored else None
        queries, tokens = self.tokenize([t.query for t in triples], "query"), self.tokenize(documents, "doc")
        return TripleBatch(queries, tokens, counts.pop(), scores, false_negatives(triples))

    def training_output(self, batch: TripleBatch) -> TripleEmbeddings:
        """What bi-encoder losses consume for a batch."""
        return self.assemble(batch, [self(tokens) for tokens in self.embedding_inputs(batch)])

    def embedding_inputs(self, batch: TripleBatch) -> list[Tokens]:
        """The texts a batch's output embeds: its queries, then its documents (training/grad_cache.py)."""
        return [batch.queries, batch.documents]

    def assemble(self, batch: TripleBatch, embeddings: Sequence[torch.Tensor]) -> TripleEmbeddings:
        """The training output from the embeddings of `embedding_inputs(batch)`."""
        queries, documents = embeddings
        size = queries.shape[0]
        negatives = documents[size:].view(size, batch.num_negatives, documents.shape[-1])
        return TripleEmbeddings(queries, documents[:size], negatives)

    def embed(
        self,
        texts: Sequence[str],
        side: Side,
        batch_size: int,
        autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> torch.Tensor:
        """Vectors for `texts` in their order, computed longest first so that batches pad little."""
        device = next(self.parameters()).device

        def encode(rows: list[int]) -> torch.Tensor:
            with autocast():
                return self(self.tokenize([texts[i] for i in rows], side).to(device))

        return longest_first(self, [len(text) for text in texts], batch_size, encode, f"encode {PLURALS[side]}", side)

    def fingerprint(self) -> str:
        """A digest of everything that decides a text's vector: the weights (head included), the tokenizer, pooling,
        normalisation, lengths and prefixes. Keys the embedding cache (retrieval/embedding_cache.py)."""
        settings = [self.pooling, self.normalize, self.lengths, self.prefixes, self.tokenizer.padding_side]
        digest = hashlib.sha1(json.dumps([type(self.tokenizer).__name__, *settings], sort_keys=True).encode())
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            vocabulary = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        else:  # its truncation and padding state changes with every call, and is set from our lengths anyway
            vocabulary = json.dumps({k: v for k, v in json.loads(backend.to_str()).items() if k not in TRANSIENT})
        digest.update(vocabulary.encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def score_pairs(
        self,
        queries: Mapping[str, str],
        documents: Mapping[str, str],
        pairs: Sequence[tuple[str, str]],
        batch_size: int,
        autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> list[float]:
        """Relevance of each (query id, doc id) pair; each distinct text is encoded once."""
        query_ids = sorted({q for q, _ in pairs})
        doc_ids = sorted({d for _, d in pairs})
        query_vectors = self.embed([queries[q] for q in query_ids], "query", batch_size, autocast)
        doc_vectors = self.embed([documents[d] for d in doc_ids], "doc", batch_size, autocast)
        query_row = {q: i for i, q in enumerate(query_ids)}
        doc_row = {d: i for i, d in enumerate(doc_ids)}
        rows_q = torch.tensor([query_row[q] for q, _ in pairs])
        rows_d = torch.tensor([doc_row[d] for _, d in pairs])
        return (query_vectors[rows_q] * doc_vectors[rows_d]).sum(-1).tolist()

    def save(self, path: Path) -> None:
        """Save as a Hugging Face model folder with the pooling settings beside it, which is also a
        sentence-transformers model (models/st_format.py)."""
        projection = None if self.head is None else self.head[0].out_features
        settings = {"kind": self.kind, "pooling": self.pooling, "normalize": self.normalize, "lengths": self.lengths}
        settings |= {"prefixes": self.prefixes, "projection": projection}
        save_folder(path, self.encoder, self.tokenizer, settings, {} if self.head is None else {HEAD_FILE: self.head})
        layers = [] if self.pooling != "pooler" else [dense(pooler_dense(self.encoder), torch.nn.Tanh())]
        if self.head is not None:
            layers.append(dense(cast(torch.nn.Linear, self.head[0]), torch.nn.Identity()))
        write_bi_encoder(path, self.pooling, layers, self.normalize, self.lengths, self.prefixes)


def resolve_settings(name_or_path: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Each setting as the config gives it, else as the model folder declares it (the suite's own settings file, or
    sentence-transformers' configuration), else DEFAULTS. A config value that contradicts the folder is logged."""
    declared = saved_settings(name_or_path) or declared_settings(name_or_path)
    settings = {}
    for key, value in given.items():
        if value is not None and key in declared and declared[key] != value:
            log.warning("the config's %s=%r overrides the %r that %s declares", key, value, declared[key], name_or_path)
        settings[key] = value if value is not None else declared.get(key, DEFAULTS.get(key))
    return settings


def saved_settings(name_or_path: str) -> dict[str, Any]:
    """The settings a bi-encoder folder saved by the suite holds, under the constructor's argument names."""
    saved = read_json(name_or_path, SETTINGS_FILE)
    if not saved:
        return {}
    lengths, prefixes = saved["lengths"], saved["prefixes"]
    return {
        "pooling": saved["pooling"],
        "normalize": saved["normalize"],
        "query_length": lengths["query"],
        "doc_length": lengths["doc"],
        "query_prefix": prefixes["query"],
        "doc_prefix": prefixes["doc"],
        "projection": saved.get("projection"),
    }


def append_eos(tokenizer: Any) -> None:
    """Make `tokenizer` end every text with its EOS token, also when truncated (its post-processor, so that
    truncation leaves room for it and a saved folder does the same in other tools); a no-op when it already does."""
    eos, backend = tokenizer.eos_token, tokenizer.backend_tokenizer
    if tokenizer("a")["input_ids"][-1:] == [tokenizer.eos_token_id]:
        return
    template = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.eos_token_id)]
    )
    existing = backend.post_processor
    backend.post_processor = template if existing is None else processors.Sequence([existing, template])


def pooler_dense(encoder: Any) -> torch.nn.Linear:
    """The Linear of a BERT-style pooler (Linear then tanh over the [CLS] state), which `pooling: pooler` uses."""
    pooler = getattr(encoder, "pooler", None)
    layer = getattr(pooler, "dense", None)
    if not isinstance(layer, torch.nn.Linear) or not isinstance(getattr(pooler, "activation", None), torch.nn.Tanh):
        raise UserError(
            f"model.pooling=pooler needs a BERT-style pooler (dense, then tanh), which {type(encoder).__name__} "
            "lacks: choose cls, mean or eos pooling"
        )
    return layer
