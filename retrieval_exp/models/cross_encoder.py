"""Cross-encoder re-ranker in the monoBERT/monoELECTRA style (Rank-DistiLLM, docs/METHODS.md, section 2):
`[CLS] query [SEP] doc [SEP]` through any Hugging Face encoder, the [CLS] vector through Linear(hidden, 1).

The query and the document are truncated separately (to `query_length` and `doc_length` tokens, special tokens
not counted), so a long document never eats into the query.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BatchEncoding

from retrieval_exp.batches import ListBatch, ListScores, RankedList
from retrieval_exp.errors import UserError
from retrieval_exp.interfaces import ModelKind
from retrieval_exp.models.hub import load_encoder, require_kind, save_folder
from retrieval_exp.models.inference import longest_first
from retrieval_exp.models.st_format import write_cross_encoder

HEAD_FILE = "score_head.safetensors"


class CrossEncoder(torch.nn.Module):
    """Scores a (query, document) pair jointly. `linear_bias`: the score head has a bias (the 2024 Rank-DistiLLM
    code and webis/monoelectra-base do; lightning-ir's current default does not). A model folder saved by the suite
    carries its head (score_head.safetensors); a plain encoder gets a fresh head, initialised as Hugging Face
    initialises classifier heads (normal, std = the encoder's initializer_range; zero bias). `dropout` sets the
    encoder's dropout probabilities (None: the checkpoint's)."""

    kind = ModelKind.CROSS_ENCODER

    def __init__(
        self,
        name_or_path: str,
        query_length: int = 32,
        doc_length: int = 256,
        linear_bias: bool = True,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        require_kind(name_or_path, self.kind)
        self.encoder = load_encoder(name_or_path, dropout)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self._pair_tokenizer = copy.deepcopy(self.tokenizer.backend_tokenizer)
        self._pair_tokenizer.no_padding()
        self._pair_tokenizer.no_truncation()
        self.lengths = {"query": query_length, "doc": doc_length}
        config = self.encoder.config
        self.head = torch.nn.Linear(config.hidden_size, 1, bias=linear_bias)
        torch.nn.init.normal_(self.head.weight, std=getattr(config, "initializer_range", 0.02))
        if linear_bias:
            torch.nn.init.zeros_(self.head.bias)
        self._load_head(Path(name_or_path) / HEAD_FILE)

    def _load_head(self, path: Path) -> None:
        if not path.is_file():
            return
        weights = load_file(path)
        if ("bias" in weights) != (self.head.bias is not None):
            raise UserError(f"{path.parent} was saved with linear_bias={'bias' in weights}: set model.linear_bias so")
        self.head.load_state_dict(weights)

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> BatchEncoding:
        """Pairs with the model's own special tokens, each side truncated on its own, padded to the longest."""
        encode = self._pair_tokenizer.encode_batch
        query_side = encode(list(queries), add_special_tokens=False)
        doc_side = encode(list(documents), add_special_tokens=False)
        rows: dict[str, list[list[int]]] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for query, doc in zip(query_side, doc_side):
            query.truncate(self.lengths["query"])
            doc.truncate(self.lengths["doc"])
            pair = self._pair_tokenizer.post_process(query, doc, add_special_tokens=True)
            rows["input_ids"].append(pair.ids)
            rows["token_type_ids"].append(pair.type_ids)
            rows["attention_mask"].append(pair.attention_mask)
        wanted = {name: rows[name] for name in self.tokenizer.model_input_names if name in rows}
        return self.tokenizer.pad(wanted, return_tensors="pt")

    def forward(self, pairs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One score per tokenised pair."""
        cls = self.encoder(**pairs).last_hidden_state[:, 0]
        return self.head(cls).squeeze(-1).float()

    def collate(self, lists: Sequence[RankedList]) -> ListBatch:
        """Tokenise ranked lists; every list must hold the same number of documents."""
        sizes = {len(ranked.documents) for ranked in lists}
        if len(sizes) != 1:
            raise ValueError(f"ranked lists in one batch hold different numbers of documents: {sorted(sizes)}")
        queries = [ranked.query for ranked in lists for _ in ranked.documents]
        documents = [doc for ranked in lists for doc in ranked.documents]
        targets = torch.tensor([ranked.targets for ranked in lists], dtype=torch.float)
        return ListBatch(self.tokenize(queries, documents), targets)

    def training_output(self, batch: ListBatch) -> ListScores:
        return ListScores(self(batch.pairs).view(batch.targets.shape))

    def score_pairs(
        self,
        queries: Mapping[str, str],
        documents: Mapping[str, str],
        pairs: Sequence[tuple[str, str]],
        batch_size: int,
        autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> list[float]:
        """Score of each (query id, doc id) pair, computed longest document first so that batches pad little."""
        if not pairs:
            return []
        device = next(self.parameters()).device

        def score(rows: list[int]) -> torch.Tensor:
            tokens = self.tokenize([queries[pairs[i][0]] for i in rows], [documents[pairs[i][1]] for i in rows])
            with autocast():
                return self(tokens.to(device)).cpu()

        lengths = [len(documents[doc_id]) for _, doc_id in pairs]
        return longest_first(self, lengths, batch_size, score, "re-rank", "pair").tolist()

    def save(self, path: Path) -> None:
        """Save as a Hugging Face model folder with the score head and the truncation lengths beside it, which is
        also a sentence-transformers CrossEncoder (models/st_format.py). That one truncates a pair as a whole, to
        the two lengths and the special tokens together: pairs within the suite's lengths score the same."""
        settings = {"kind": self.kind, "lengths": self.lengths, "linear_bias": self.head.bias is not None}
        save_folder(path, self.encoder, self.tokenizer, settings, {HEAD_FILE: self.head})
        pair_length = sum(self.lengths.values()) + self.tokenizer.num_special_tokens_to_add(pair=True)
        write_cross_encoder(path, self.head, pair_length)
