"""Method 2 end to end through launch.py: the presets compose as the authors configured them and run tiny on
fixtures of the same formats; stage 2 starts from stage 1 by MLflow run id; re-ranking runs report their first
stage beside them."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import TINY_DATA, compose_config, launch
from tests.test_launch import runs

TEACHER = TINY_DATA / "runs" / "train_teacher.run"
REGISTER = (
    "+data.register={tiny/train:{folder:tests/data/tiny,split:train},tiny/test:{folder:tests/data/tiny,split:test}}"
)
SMALL = [
    "tracking.experiment=tiny",
    "trainer.batch_size=2",
    "trainer.max_steps=2",
    "trainer.log_every=1",
    "hardware.encode_batch_size=8",
]
TINY_PAPER = ["model=tiny_cross", REGISTER, "data.train.dataset=tiny/train", "data.test=tiny/test", *SMALL]


def run_id(stdout: str) -> str:
    return stdout.split("MLflow run ")[-1].split()[0]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "stage1_paper",
            {
                "model.name_or_path": "google/electra-base-discriminator",
                "model.query_length": 32,
                "model.doc_length": 256,
                "loss._target_": "retrieval_exp.losses.ranking.ListwiseInfoNCE",
                "data.train.depth": 200,
                "data.train.sample_size": 8,
                "data.train.sampling_strategy": "single_relevant",
                "data.train.targets": "relevance",
                "data.train.add_docs_not_in_ranking": True,
                "optim.lr": 1e-5,
                "trainer.max_steps": 20000,
                "trainer.batch_size": 32,
                "retriever.depth": 100,
                "retriever.first_stage._target_": "retrieval_exp.retrieval.run.DatasetRun",
                "data.test": "msmarco-passage/trec-dl-2019/judged",
                "seed": 42,
            },
        ),
        (
            "stage2_paper",
            {
                "loss._target_": "retrieval_exp.losses.ranking.RankNet",
                "data.train.depth": 100,
                "data.train.sample_size": 100,
                "data.train.sampling_strategy": "top",
                "data.train.targets": "rank",
                "trainer.epochs": 3,
                "trainer.max_steps": None,
                "trainer.batch_size": 32,
                "optim.lr": 1e-5,
            },
        ),
        ("teacher_run", {"train": False, "data.test": "beir/scifact/train", "retriever.depth": 100}),
        ("scifact", {"model.doc_length": 128, "data.train.first_stage._target_": "retrieval_exp.retrieval.bm25.BM25"}),
        ("scifact_stage2", {"data.train.sampling_strategy": "random", "data.train.targets": "rank"}),
    ],
)
def test_presets_compose_as_configured(preset: str, expected: dict) -> None:
    cfg = compose_config(f"experiment=rank_distillm/{preset}")
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key


def test_paper_presets_run_tiny_and_stage_2_starts_from_stage_1_by_run_id(tmp_path: Path) -> None:
    rows = [line.split("\t") for line in TEACHER.read_text().splitlines()]
    colbert = tmp_path / "colbert.parquet"  # the format of the authors' ColBERTv2 run on Hugging Face
    columns = {"qid": [r[0] for r in rows], "docno": [r[2] for r in rows], "score": [float(r[4]) for r in rows]}
    pd.DataFrame(columns).to_parquet(colbert)
    stage1 = launch(
        tmp_path,
        "experiment=rank_distillm/stage1_paper",
        *TINY_PAPER,
        f"data.train.first_stage.path={colbert}",
        "data.train.depth=10",
        "data.train.sample_size=4",
        tiny=False,
    )
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    first = run_id(stage1.stdout)
    stage2 = launch(
        tmp_path,
        "experiment=rank_distillm/stage2_paper",
        *TINY_PAPER,
        f"init={first}",
        f"data.train.first_stage.path={TEACHER}",
        "data.train.sample_size=10",
        "data.train.depth=10",
        "hydra.run.dir=" + str(tmp_path / "stage2"),
        tiny=False,
    )
    assert stage2.returncode == 0, stage2.stderr[-3000:]
    stage1_run, stage2_run = runs(tmp_path)
    assert stage2_run.data.tags["source.model.name_or_path"] == first
    assert stage2_run.data.params["model.name_or_path"] == str(tmp_path / "run" / "model")
    assert stage2_run.data.tags["method"] == "ranknet" and stage1_run.data.tags["method"] == "listwise_infonce"
    metrics = json.loads((tmp_path / "stage2" / "metrics.json").read_text())
    first_stage = metrics["first_stage/nDCG@10"]  # tiny/test's scoreddocs, the paper's BM25 top 100
    assert stage2_run.data.metrics["first_stage/nDCG_at_10"] == pytest.approx(first_stage)
    assert stage1_run.data.metrics["first_stage/nDCG_at_10"] == pytest.approx(first_stage)
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(stage2_run.info.run_id)}
    assert {"first_stage.trec", "run.trec", "metrics.json"} <= artifacts

    again = launch(
        tmp_path,
        "experiment=rank_distillm/stage1_paper",
        *TINY_PAPER,
        f"model.name_or_path={first}",
        "train=false",
        "hydra.run.dir=" + str(tmp_path / "again"),
        tiny=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again" / "run.trec").read_text().replace("rerank", "listwise_infonce") == (
        tmp_path / "run" / "run.trec"
    ).read_text()  # stage 1's weights and head, loaded by run id, re-rank as stage 1 did


def test_scifact_pipeline_runs_tiny_from_a_teacher_run_made_by_the_suite(tmp_path: Path) -> None:
    teacher = launch(
        tmp_path, "experiment=rank_distillm/teacher_run", "model=tiny_bert", "data=tiny_lists", *SMALL, tiny=False
    )
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    teacher_lines = (tmp_path / "run" / "run.trec").read_text().splitlines()
    assert {line.split()[0] for line in teacher_lines} >= {"q1", "q12"}  # the training queries, ranked
    tiny_cross = ["model=tiny_cross", "model.doc_length=24", *SMALL]  # the presets' 128 exceeds the tiny BERT
    stage1 = launch(
        tmp_path,
        "experiment=rank_distillm/scifact",
        *tiny_cross,
        "data=tiny_lists",
        "hydra.run.dir=" + str(tmp_path / "stage1"),
        tiny=False,
    )
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    sweep = launch(
        tmp_path,
        "experiment=rank_distillm/scifact_stage2",
        *tiny_cross,
        "data=tiny_teacher_lists",
        f"init={run_id(stage1.stdout)}",
        f"data.train.first_stage.path={run_id(teacher.stdout)}",
        "data.train.sample_size=3",  # BM25 ranks few of the 30 tiny documents per query
        "loss=ranknet,adr_mse,ranknet_adr_mse",
        multirun=True,
        tiny=False,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    children = [r for r in runs(tmp_path) if "sweep_id" in r.data.tags and r.data.tags.get("sweep_parent") != "true"]
    assert sorted(r.data.tags["method"] for r in children) == ["adr_mse", "ranknet", "ranknet+adr_mse"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["source.data.train.first_stage.path"] for r in children} == {run_id(teacher.stdout)}
    [combined] = [r for r in children if r.data.tags["method"] == "ranknet+adr_mse"]
    assert {"train/ranknet", "train/adr_mse"} <= combined.data.metrics.keys()
    assert {"data/lists", "data/queries_dropped"} <= combined.data.metrics.keys()  # the sampler's report


def test_bad_references_fail_with_one_line(tmp_path: Path) -> None:
    missing = launch(tmp_path, "experiment=rank_distillm/scifact_stage2", "model=tiny_cross", tiny=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: data.train.first_stage.path, init must be set")

    broken = tmp_path / "broken.run"  # passes the start-up check (its first 100 lines), fails once it is read whole
    broken.write_text("elsewhere Q0 d1 1 1.0 x\n" * 100 + "not a run line\n")
    failed = launch(tmp_path, "trainer.max_steps=1", "retriever=rerank_run", f"retriever.first_stage.path={broken}")
    assert failed.returncode == 2
    [failed_run] = runs(tmp_path)
    assert failed_run.info.status == "FAILED"
    refused = launch(tmp_path, f"model.name_or_path={failed_run.info.run_id}", "train=false")
    assert refused.returncode == 2
    assert f"error: MLflow run {failed_run.info.run_id} is FAILED: its outputs are not results" in refused.stderr

    unknown = launch(tmp_path, "model.name_or_path=0123456789abcdef0123456789abcdef", "train=false")
    assert "error: 0123456789abcdef0123456789abcdef looks like an MLflow run id, but the store" in unknown.stderr


def test_a_cross_encoder_cannot_search_the_whole_corpus(tmp_path: Path) -> None:
    done = launch(tmp_path, "model=tiny_cross", "train=false")
    assert done.returncode == 2
    assert (
        "error: retriever=dense ranks with bi_encoder or revela models, but the model is a cross_encoder" in done.stderr
    )
    assert "retriever=rerank" in done.stderr
