"""Benchmarks of many collections (conf/benchmark/, tests/conf/benchmark/tiny.yaml): the tiny BEIR folder, a pool
with a shipped first stage whose numeric query and document ids coincide, and a classic collection with an unjudged
query. launch.py as a user runs it, and the parts it stands on."""

import json
import math
from pathlib import Path

import ir_datasets
import ir_measures
import pytest
from ir_datasets.datasets.base import Dataset
from ir_datasets.formats import GenericDoc, GenericQrel, GenericQuery
from mlflow.tracking import MlflowClient

from retrieval_exp.data import irds
from retrieval_exp.ir_types import content_key
from retrieval_exp.retrieval.run import read_trec
from tests.conftest import REPO, compose_config, launch
from tests.test_launch import runs

POOL = REPO / "tests" / "data" / "bench" / "pool"
COLLECTIONS = ("tiny", "pool", "classic")


def read(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())


def test_a_training_run_is_evaluated_on_every_collection(tmp_path: Path) -> None:
    done = launch(tmp_path, "benchmark=tiny", "trainer.max_steps=2")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run"
    per_collection = {name: read(out / name / "metrics.json") for name in COLLECTIONS}
    for name in COLLECTIONS:
        assert all((out / name / file).is_file() for file in ("run.trec", "perquery.tsv", "metrics.json"))
    assert (out / "pool" / "first_stage.trec").is_file() and not (out / "run.trec").exists()
    metrics = read(out / "metrics.json")
    values = [per_collection[name]["nDCG@10"] for name in COLLECTIONS]
    assert metrics["mean/nDCG@10"] == pytest.approx(sum(values) / 3)
    assert metrics["gmean/nDCG@10"] == pytest.approx(math.prod(values) ** (1 / 3))
    assert metrics["pool/nDCG@10"] == per_collection["pool"]["nDCG@10"]
    assert "pool/first_stage/nDCG@10" in metrics and "mean/first_stage/nDCG@10" not in metrics
    # a pool is re-ranked: only its first stage's top rerank_depth (5) of each query, never the rest of the corpus
    reranked, first_stage = read_trec(out / "pool" / "run.trec"), read_trec(out / "pool" / "first_stage.trec")
    assert {q: set(docs) for q, docs in reranked.items()} == {q: set(docs) for q, docs in first_stage.items()}
    assert first_stage == {q: docs for q, docs in read_trec(POOL / "scoreddocs" / "test.run").items()}
    assert "infonce on benchmark 'tiny':" in done.stdout and "  gmean " in done.stdout

    [run] = runs(tmp_path)
    assert run.data.tags["dataset"] == "benchmark:tiny" and run.data.tags["collections"] == "tiny,pool,classic"
    assert run.data.metrics["classic/queries_unjudged"] == 1 and run.data.metrics["classic/queries"] == 4
    assert run.data.metrics["mean/nDCG_at_10"] == pytest.approx(metrics["mean/nDCG@10"])
    assert run.data.metrics["pool/first_stage/nDCG_at_10"] == pytest.approx(metrics["pool/first_stage/nDCG@10"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    logged = {a.path for name in COLLECTIONS for a in client.list_artifacts(run.info.run_id, name)}
    assert {"pool/run.trec", "pool/first_stage.trec", "classic/perquery.tsv", "tiny/metrics.json"} <= logged
    classic = {line.split("\t")[0] for line in (out / "classic" / "perquery.tsv").read_text().splitlines()[1:]}
    assert classic == {"1", "2", "3", "4"}  # query 5 has no judgments: not evaluated


def test_first_stage_on_a_pool_is_the_shipped_run_and_identical_ids_stay(tmp_path: Path) -> None:
    qrels: dict[str, dict[str, int]] = {}
    for line in (POOL / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, relevance = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(relevance)
    done = launch(tmp_path, "experiment=first_stage", "benchmark=tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    shipped = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, read_trec(POOL / "scoreddocs" / "test.run"))
    pool = read(tmp_path / "run" / "pool" / "metrics.json")
    assert pool["nDCG@10"] == pytest.approx(shipped[ir_measures.nDCG @ 10])
    # query 1's most relevant document is document 1: a collection numbering both from 1 keeps it
    assert "1 Q0 1 " in (tmp_path / "run" / "pool" / "run.trec").read_text()

    dropped = launch(tmp_path / "drop", "experiment=first_stage", "benchmark=tiny", "eval.ignore_identical_ids=true")
    assert dropped.returncode == 0, dropped.stderr[-3000:]
    assert read(tmp_path / "drop" / "run" / "pool" / "metrics.json")["nDCG@10"] < pool["nDCG@10"]
    assert "1 Q0 1 " not in (tmp_path / "drop" / "run" / "pool" / "run.trec").read_text()


def test_benchmark_first_stage_picks_another_shipped_run(tmp_path: Path) -> None:
    done = launch(tmp_path, "experiment=first_stage", "benchmark=tiny", "benchmark.first_stage=alt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_trec(tmp_path / "run" / "pool" / "run.trec") == read_trec(POOL / "runs" / "alt.run")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["benchmark.collections.pool.folder=/nowhere"], "collection 'pool': folder '/nowhere' does not exist"),
        (["benchmark.first_stage=missing"], "collection 'pool': run file"),
        (["experiment=bm25"], "collection 'pool': the corpus is a pool of first-stage candidates"),
        (["retriever=rerank_run", "retriever.first_stage.path=x.run"], "first stage is one stored run"),
        (["+benchmark.collections.bad={test: nope/test}"], "collection 'bad': unknown dataset id 'nope/test'"),
    ],
)
def test_a_collection_that_cannot_serve_fails_before_training(tmp_path: Path, overrides: list, message: str) -> None:
    done = launch(tmp_path, "benchmark=tiny", *overrides)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()


def test_the_offline_benchmarks_compose_with_their_collections_folder() -> None:
    cfg = compose_config("benchmark=offline", "paths.collections=/data/c")
    names = ["scifact", "nfcorpus", "dl19", "dl20", "vaswani", "medline", "cisi", "cosqa"]
    assert list(cfg.benchmark.collections) == names
    assert cfg.benchmark.collections.dl19.folder == "/data/c/dl19-top100"
    assert cfg.benchmark.collections.dl19.pool == "scoreddocs" and "pool" not in cfg.benchmark.collections.vaswani
    splade = compose_config("benchmark=trec_dl", "benchmark.first_stage=splade_pp_ed")
    assert [c.pool for c in splade.benchmark.collections.values()] == ["splade_pp_ed", "splade_pp_ed"]


def test_a_loader_without_optional_methods_serves(tmp_path: Path) -> None:
    """Classic ir_datasets loaders lack docs_namespace() and docstores; the corpus key is the content itself."""

    class Docs:
        def docs_iter(self):  # noqa: ANN202
            return iter([GenericDoc("1", "sea ice"), GenericDoc("2", "gut bacteria")])

        def docs_namespace(self) -> str:
            raise NotImplementedError("this loader cannot say")

    class Queries:
        def queries_iter(self):  # noqa: ANN202
            return iter([GenericQuery("1", "ice")])

    class Qrels:
        def qrels_iter(self):  # noqa: ANN202
            return iter([GenericQrel("1", "1", 1)])

    ir_datasets.registry.register("bare/test", Dataset(Docs(), Queries(), Qrels()))
    irds.require_readable("bare/test")
    first = irds.corpus("bare/test")
    assert first.ids == ["1", "2"] and first.key == content_key(["1", "2"], ["sea ice", "gut bacteria"])
    assert content_key(["1", "2"], ["sea ice", "gut bacteria!"]) != first.key
    assert irds.documents("bare/test", {"2"}) == {"2": "gut bacteria"}


def test_means_over_collections_by_hand() -> None:
    from retrieval_exp.benchmark import means

    summary = means({"a": {"nDCG@10": 0.2, "first_stage/nDCG@10": 0.1}, "b": {"nDCG@10": 0.8, "R@100": 1.0}})
    assert summary == {"mean/nDCG@10": pytest.approx(0.5), "gmean/nDCG@10": pytest.approx(0.4)}  # sqrt(0.16)
    assert means({"a": {"RR@10": 0.0}, "b": {"RR@10": 0.9}})["gmean/RR@10"] == 0.0
