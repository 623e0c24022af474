"""A teacher model's scores for (query, document) pairs, computed once and cached.

The teacher is any model config of the suite (`model@teacher=mpnet`). Its scores go to a TSV whose name hashes the
teacher's config, the dataset and the pairs. Every run of a sweep that asks for the same teacher on the same pairs
reads that file and never loads the teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from retrieval_exp.hardware import Hardware

log = logging.getLogger(__name__)
Pair = tuple[str, str]


class TeacherScores:
    """Scores of `model_config`'s model, cached under `cache_dir`."""

    def __init__(self, model_config: Mapping[str, Any], cache_dir: str | Path, hardware: Hardware) -> None:
        self.model_config, self.cache_dir, self.hardware = dict(model_config), Path(cache_dir), hardware

    def path(self, dataset: str, pairs: Sequence[Pair]) -> Path:
        """The cache file for these pairs of `dataset`."""
        digest = hashlib.sha1(json.dumps([self.model_config, dataset, sorted(pairs)], sort_keys=True).encode())
        return self.cache_dir / f"{digest.hexdigest()[:20]}.tsv"

    def scores(
        self, path: Path, queries: Mapping[str, str], documents: Mapping[str, str], pairs: Sequence[Pair]
    ) -> dict[Pair, float]:
        """The teacher's score of each pair, read from `path` (this teacher's `path()` for the pairs), which is
        written first when it is not there."""
        if not path.is_file():
            log.info("teacher %s scores %d pairs into %s", self.model_config.get("name_or_path"), len(pairs), path)
            model = instantiate(self.model_config).to(self.hardware.torch_device)
            values = model.score_pairs(
                queries, documents, pairs, self.hardware.encode_batch_size, self.hardware.autocast
            )
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".partial-{os.getpid()}")
            partial.write_text("".join(f"{q}\t{d}\t{v!r}\n" for (q, d), v in zip(pairs, values)))
            os.replace(partial, path)
        table = {}
        for line in path.read_text().splitlines():
            query_id, doc_id, value = line.split("\t")
            table[(query_id, doc_id)] = float(value)
        return table
