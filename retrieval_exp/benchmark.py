"""The test collections a run is evaluated on: `data.test` alone, or every collection of a `benchmark`
(conf/benchmark/), each with the same contract as a single run (run.trec, perquery.tsv, metrics.json) in a sub-folder
of its name, and the means over collections (arithmetic and geometric, as TIREx reports) beside them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_beir_folder
from retrieval_exp.errors import UserError
from retrieval_exp.hardware import Hardware
from retrieval_exp.interfaces import Retriever, TwoStageRetriever
from retrieval_exp.measures import Evaluation, cut, evaluate, write_outputs
from retrieval_exp.retrieval.rerank import FirstStage, Reranker
from retrieval_exp.retrieval.run import DatasetRun, RunFile, write_trec
from retrieval_exp.significance import geometric_mean

log = logging.getLogger(__name__)
FIRST_STAGE_FILE = "first_stage.trec"  # what a re-ranking run re-ranked, evaluated beside it as first_stage/*
MEANS = ("mean", "gmean")  # the prefixes of the means over collections


@dataclass(frozen=True)
class Collection:
    """One test collection. `pool`: its corpus holds only a first stage's candidates (TREC DL's top-100 pools), so
    every model re-ranks that first stage: `scoreddocs` (the run the dataset ships) or a run file, by path or by name
    under the folder's runs/. `ignore_identical_ids` is true only where queries are documents of the corpus (BEIR's
    ArguAna or Quora): elsewhere ids are numbered independently and an equal id is a coincidence."""

    name: str
    test: str
    ignore_identical_ids: bool = False
    pool: str | None = None
    folder: str | None = None
    split: str = "test"

    def pool_run(self) -> DatasetRun | RunFile:
        if self.pool == "scoreddocs":
            return DatasetRun(self.test)
        path = Path(str(self.pool)).expanduser()
        if len(path.parts) == 1 and not path.suffix and self.folder:
            path = Path(self.folder) / "runs" / f"{self.pool}.run"
        return RunFile(str(path))


def collections(cfg: DictConfig) -> list[Collection]:
    """The run's test collections: the benchmark's, or data.test as one collection named after the data."""
    benchmark = cfg.get("benchmark")
    if not benchmark:
        return [Collection(cfg.data.name, cfg.data.test, bool(cfg.data.get("ignore_identical_ids", False)))]
    return [Collection(name, **entry) for name, entry in benchmark.collections.items()]


def prepare(cfg: DictConfig, needs_model: bool, retriever: type[Retriever]) -> list[Collection]:
    """Register the collections' folders and check that each can be read and searched, so that a collection that
    cannot load fails at start-up, before any training, with one line naming it."""
    found = collections(cfg)
    first_stage = cfg.retriever.get("first_stage")
    if cfg.get("benchmark") and first_stage and not get_object(first_stage._target_).needs_corpus:
        raise UserError(
            f"benchmark {cfg.benchmark.name!r}: the retriever's first stage is one stored run, which belongs to one "
            "collection; re-rank each collection's own first stage with retriever=rerank (BM25 on full corpora, "
            "the shipped run on pools)"
        )
    for collection in found:
        try:
            _prepare(collection, needs_model, retriever)
        except UserError as err:
            if not cfg.get("benchmark"):
                raise
            raise UserError(f"benchmark {cfg.benchmark.name!r}, collection {collection.name!r}: {err}") from None
    return found


def _prepare(collection: Collection, needs_model: bool, retriever: type[Retriever]) -> None:
    if collection.folder:
        if not Path(collection.folder).expanduser().is_dir():
            raise UserError(
                f"folder {collection.folder!r} does not exist: fill RETRIEVAL_EXP_COLLECTIONS with the offline "
                "seeding script (README, 'Offline use') or point the entry's folder at a BEIR folder"
            )
        register_beir_folder(collection.test, collection.folder, collection.split, collection.pool is not None)
    irds.require(collection.test, "docs", "queries", "qrels")
    irds.require_readable(collection.test)
    if collection.pool is None:
        return
    pool = collection.pool_run()  # a run file is checked as it is built
    if isinstance(pool, DatasetRun):
        irds.require(collection.test, "scoreddocs")
    if not needs_model and retriever is not FirstStage:
        raise UserError(
            f"the corpus is a pool of first-stage candidates, which retriever={retriever.name} cannot search as a "
            "corpus (BM25 over a pool is not BM25 over the collection): evaluate its first stage with "
            "experiment=first_stage, or re-rank it with a model"
        )


def retriever_for(
    collection: Collection, build: Callable[..., Retriever], encoder: Any, hardware: Hardware, depth: int, cache: Any
) -> Retriever:
    """What searches `collection`: on a pool, the model re-ranks its first stage (FirstStage evaluates it as it
    is); elsewhere the run's own retriever."""
    model_args = {} if encoder is None else {"encoder": encoder, "hardware": hardware}
    if collection.pool is None:
        return build(**model_args)
    if encoder is None:
        return FirstStage(collection.pool_run())
    return Reranker(encoder, hardware, collection.pool_run(), depth, cache)


def evaluate_collection(
    collection: Collection, retriever: Retriever, eval_cfg: DictConfig, out_dir: Path, tag: str
) -> tuple[Evaluation, dict[str, float], list[Path]]:
    """Search the collection's judged queries, measure, write its files in `out_dir`; returns the evaluation (first
    stage measures added as first_stage/*), query counts and search time, and the files written."""
    corpus, queries, qrels = irds.corpus(collection.test), irds.queries(collection.test), irds.qrels(collection.test)
    judged = {query_id: text for query_id, text in queries.items() if query_id in qrels}
    unjudged = len(queries) - len(judged)
    counts = {"queries": float(len(judged)), "queries_unjudged": float(unjudged)}
    if unjudged:
        log.info("%s: %d of %d queries have no judgments, not evaluated", collection.name, unjudged, len(queries))
    drop = collection.ignore_identical_ids if eval_cfg.ignore_identical_ids is None else eval_cfg.ignore_identical_ids
    depth = eval_cfg.depth
    started = time.perf_counter()
    ranking = cut(retriever.search(corpus, judged, depth + int(drop)), depth, drop)
    counts["time/search_s"] = time.perf_counter() - started
    counts |= retriever.figures()
    evaluation = evaluate(ranking, qrels, eval_cfg.measures)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if isinstance(retriever, TwoStageRetriever):
        first_stage = evaluate(cut(retriever.candidates, depth, drop), qrels, eval_cfg.measures)
        write_trec(first_stage.run, out_dir / FIRST_STAGE_FILE, retriever.first_stage.name)
        evaluation.metrics |= {f"first_stage/{name}": value for name, value in first_stage.metrics.items()}
        files.append(out_dir / FIRST_STAGE_FILE)
    write_outputs(evaluation, out_dir, tag)
    return evaluation, counts, files


def means(per_collection: dict[str, dict[str, float]]) -> dict[str, float]:
    """mean/<measure> and gmean/<measure> over the collections, for each measure every collection has (first-stage
    measures left out). A geometric mean with a zero is zero."""
    shared = set.intersection(*(set(metrics) for metrics in per_collection.values()))
    summary = {}
    for measure in sorted(m for m in shared if "/" not in m):
        values = [metrics[measure] for metrics in per_collection.values()]
        summary[f"mean/{measure}"] = sum(values) / len(values)
        summary[f"gmean/{measure}"] = geometric_mean(values)
    return summary
