"""`python -m retrieval_exp.evaluate`: an external TREC run measured as the suite measures its own runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from retrieval_exp.data import irds
from retrieval_exp.data.local import register_beir_folder
from retrieval_exp.measures import cut, evaluate
from retrieval_exp.retrieval.run import read_trec
from tests.conftest import REPO, TINY_DATA

RUN = TINY_DATA / "scoreddocs" / "test.run"


def evaluate_command(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "retrieval_exp.evaluate", *args, "--register", f"tiny/test={TINY_DATA}:test"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_external_run_gets_the_suites_measures_files_and_mlflow_run(tmp_path: Path) -> None:
    done = evaluate_command(
        str(RUN), "--dataset", "tiny/test", "--out", str(tmp_path / "out"), "--experiment", "external",
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--artifact-root", str(tmp_path / "artifacts"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    register_beir_folder("tiny/test", TINY_DATA, "test")
    expected = evaluate(cut(read_trec(RUN), 1000, True), irds.qrels("tiny/test"), ["nDCG@10", "R@100", "RR@10"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == pytest.approx(expected.metrics) and f"nDCG@10 {expected.metrics['nDCG@10']:.4f}" in done.stdout
    assert (tmp_path / "out" / "perquery.tsv").is_file() and (tmp_path / "out" / "run.trec").is_file()

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("external").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "external"
    assert run.data.metrics["nDCG_at_10"] == pytest.approx(expected.metrics["nDCG@10"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"run.trec", "perquery.tsv", "metrics.json"}


@pytest.mark.parametrize(
    ("make_run", "dataset", "message"),
    [
        (None, "tiny/test", "does not exist: give the path of a run file"),
        ("q1 Q0 d1\n", "tiny/test", "line 1, is not a TREC run line 'qid Q0 docid rank score tag'"),
        ("q1 Q0 d1 1 0.5 x\n", "no/such/dataset", "unknown dataset id 'no/such/dataset'"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, make_run: str | None, dataset: str, message: str) -> None:
    run = tmp_path / "run.trec"
    if make_run is not None:
        run.write_text(make_run)
    done = evaluate_command(str(run), "--dataset", dataset, "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
