"""The study report read from a real MLflow store made in the test: runs with hand-built per-query values whose
comparisons have known answers."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from retrieval_exp.errors import UserError
from retrieval_exp.significance import holm, random_effects
from retrieval_exp.tracking.mlflow_run import TrackedRun, open_experiment
from tests.conftest import REPO

QUERIES = [f"q{i}" for i in range(40)]
BASE = np.random.default_rng(0).uniform(0.2, 0.7, len(QUERIES))


def open_study(workdir: Path) -> tuple[MlflowClient, str]:
    return open_experiment(f"sqlite:///{workdir}/mlflow.db", str(workdir / "artifacts"), "study")


def log_run(workdir: Path, name: str, values: np.ndarray, overrides: str, loss: list[float], parent: str) -> str:
    client, experiment_id = open_study(workdir)
    tags = {"method": name, "overrides": overrides, "sweep_id": "s1", "mlflow.parentRunId": parent}
    run = TrackedRun.start(client, experiment_id, f"{name} · tiny", tags, {})
    folder = workdir / name
    folder.mkdir()
    rows = [f"{q}\tnDCG@10\t{v:.6f}\n{q}\tRR@10\t{v:.6f}\n" for q, v in zip(QUERIES, values)]
    (folder / "perquery.tsv").write_text("query_id\tmeasure\tvalue\n" + "".join(rows))
    (folder / "run.trec").write_text(f"q0 Q0 d1 1 1.0 {name}\n")
    run.log_metrics({"nDCG@10": values.mean(), "RR@10": values.mean(), "time/train_s": 12.0, "train/steps": 3})
    for step, value in enumerate(loss, start=1):
        run.log_metrics({"train/loss": value}, step)
    run.log_artifacts([folder / "perquery.tsv", folder / "run.trec"])
    run.finish("FINISHED")
    return run.run_id


@pytest.fixture
def store(tmp_path: Path) -> Path:
    client, experiment_id = open_study(tmp_path)
    parent = client.create_run(experiment_id, run_name="sweep s1", tags={"sweep_id": "s1", "sweep_parent": "true"})
    parent_id = parent.info.run_id
    log_run(tmp_path, "baseline", BASE, "loss=infonce seed=1", [0.9, 0.5], parent_id)
    log_run(tmp_path, "same", BASE.copy(), "loss=same seed=1", [0.8, 0.6], parent_id)
    log_run(tmp_path, "better", BASE + 0.05, "loss=better seed=1", [0.7, 0.4], parent_id)
    noise = np.random.default_rng(1).normal(0, 0.05, len(QUERIES))
    log_run(tmp_path, "noisy", np.clip(BASE + noise, 0, 1), "loss=noisy seed=1", [], parent_id)
    client.set_terminated(parent_id)
    return tmp_path


def report(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "retrieval_exp.report", *args, "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_report_marks_what_differs_and_not_what_does_not(store: Path) -> None:
    out = store / "out"
    done = report(store, "study", "--baseline", "baseline", "--out", str(out), "--measures", "nDCG@10", "RR@10")
    assert done.returncode == 0, done.stderr[-2000:]
    table = [row for row in csv.DictReader((out / "report.csv").open()) if row["collection"] != "pooled"]
    rows = {row["system"].removeprefix("loss="): row for row in table}
    assert rows["same"]["nDCG@10 p_t"] == "1.0" and rows["same"]["nDCG@10 d"] == "0.0"
    assert float(rows["better"]["nDCG@10 p_t_holm"]) < 1e-6 and float(rows["better"]["nDCG@10 ci_low"]) > 0
    assert float(rows["better"]["nDCG@10 diff"]) == pytest.approx(0.05, abs=1e-5)
    raw = [float(rows[name]["nDCG@10 p_t"]) for name in ("same", "better", "noisy")]
    holm_values = [float(rows[name]["nDCG@10 p_t_holm"]) for name in ("same", "better", "noisy")]
    assert holm_values == pytest.approx(holm(raw))
    table = (store / "out" / "report.md").read_text()
    better_line = next(line for line in table.splitlines() if "loss=better" in line)
    same_line = next(line for line in table.splitlines() if "loss=same" in line)
    assert "†" in better_line and "†" not in same_line and "seed=1" not in table.split("\n\n")[0]  # shared: not swept
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.csv", "nDCG_at_10.png", "train_loss.png"}
    assert (out / "heatmap_nDCG_at_10.png").is_file()
    assert len(list((store / "out" / "runs").glob("*.trec"))) == 4


def test_report_of_a_sweep_goes_to_its_parent_run(store: Path) -> None:
    done = report(store, "s1", "--out", str(store / "out"), "--measures", "nDCG@10", "--to-parent")
    assert done.returncode == 0 and "Baseline: system 0 (loss=infonce)" in done.stdout  # the first, when none is named
    assert done.stdout.split("\n\n")[2].count("| loss=") == 4  # the parent is not a row
    client, experiment_id = open_study(store)
    [parent] = client.search_runs([experiment_id], "tags.sweep_parent = 'true'")
    logged = {artifact.path for artifact in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.csv"} <= logged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing-here"], "no finished runs in experiment or sweep 'nothing-here'"),
        (["study", "--baseline", "missing", "--measures", "RR@10"], "--baseline 'missing' matches 0 systems"),
        (["study"], "measure 'R@100' is not in every run's perquery.tsv"),  # R@100 is not logged per query
    ],
)
def test_bad_input_is_one_line(store: Path, args: list[str], message: str) -> None:
    done = report(store, *args, "--out", str(store / "out"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


# A benchmark study: two collections whose query ids coincide (q0, q1, ...) but whose values differ, so that a
# report pairing across collections would be caught; systems with several seeds and one without collection `a`.
COLLECTIONS = {"a": np.random.default_rng(5).uniform(0.1, 0.8, 40), "b": np.random.default_rng(6).uniform(0.3, 0.9, 25)}


def log_benchmark_run(workdir: Path, name: str, values: dict[str, np.ndarray], overrides: str) -> str:
    client, experiment_id = open_experiment(f"sqlite:///{workdir}/mlflow.db", str(workdir / "art"), "bench")
    tags = {"method": name, "overrides": overrides, "dataset": "benchmark:tiny", "collections": ",".join(values)}
    run = TrackedRun.start(client, experiment_id, name, tags, {})
    for collection, per_query in values.items():
        folder = workdir / run.run_id / collection
        folder.mkdir(parents=True)
        rows = [f"q{i}\tnDCG@10\t{v:.6f}\n" for i, v in enumerate(per_query)]
        (folder / "perquery.tsv").write_text("query_id\tmeasure\tvalue\n" + "".join(rows))
        (folder / "run.trec").write_text(f"q0 Q0 d1 1 1.0 {name}\n")
        run.log_metrics({f"{collection}/nDCG@10": per_query.mean()})
        run.log_artifacts([folder / "perquery.tsv", folder / "run.trec"], collection)
    run.finish("FINISHED")
    return run.run_id


@pytest.fixture
def benchmark_store(tmp_path: Path) -> tuple[Path, dict[str, dict[str, list[np.ndarray]]]]:
    rng = np.random.default_rng(7)
    seeds: dict[str, dict[str, list[np.ndarray]]] = {"better": {}, "noise": {}}
    log_benchmark_run(tmp_path, "base", COLLECTIONS, "benchmark=tiny")
    for seed in (1, 2, 3):
        for name, shift in (("better", 0.04), ("noise", 0.0)):
            values = {c: np.clip(v + shift + rng.normal(0, 0.05, len(v)), 0, 1) for c, v in COLLECTIONS.items()}
            for collection, per_query in values.items():
                seeds[name].setdefault(collection, []).append(per_query)
            log_benchmark_run(tmp_path, name, values, f"benchmark=tiny loss={name} seed={seed}")
    log_benchmark_run(tmp_path, "b_only", {"b": COLLECTIONS["b"] + 0.1}, "benchmark=tiny loss=b_only")
    return tmp_path, seeds


def test_benchmark_report_pairs_within_collections_pools_and_aggregates_seeds(benchmark_store) -> None:
    store, seeds = benchmark_store
    out = store / "out"
    done = report(store, "bench", "--baseline", "base", "--out", str(out), "--measures", "nDCG@10")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {(r["system"], r["collection"]): r for r in csv.DictReader((out / "report.csv").open())}
    raw = {}
    for name in ("better", "noise"):
        effects = []
        for collection, baseline in COLLECTIONS.items():
            row = rows[f"loss={name}", collection]
            per_seed = [values.round(6) for values in seeds[name][collection]]  # as perquery.tsv holds them
            differences = np.mean(per_seed, axis=0) - baseline.round(6)  # paired on the seed means
            assert float(row["nDCG@10 diff"]) == pytest.approx(differences.mean(), abs=1e-9)
            assert row["seeds"] == "3"
            assert float(row["nDCG@10 seed_sd"]) == pytest.approx(
                np.std([v.mean() for v in per_seed], ddof=1), abs=1e-6
            )
            raw[name, collection] = stats.ttest_rel(np.mean(per_seed, axis=0), baseline.round(6)).pvalue
            effects.append((differences.mean(), differences.var(ddof=1) / len(differences)))
        pooled = random_effects(*zip(*effects))
        assert float(rows[f"loss={name}", "pooled"]["nDCG@10 diff"]) == pytest.approx(pooled.estimate, abs=1e-9)
        assert float(rows[f"loss={name}", "pooled"]["nDCG@10 ci_low"]) == pytest.approx(pooled.ci_low, abs=1e-9)
    b_only = rows["loss=b_only", "b"]
    raw["b_only", "b"] = float(b_only["nDCG@10 p_t"])
    adjusted = dict(zip(raw, holm(list(raw.values()))))  # one family: every system x collection test
    for (name, collection), p in adjusted.items():
        assert float(rows[f"loss={name}" if name != "b_only" else "loss=b_only", collection]["nDCG@10 p_t_holm"]) == (
            pytest.approx(p)
        )
    assert adjusted["better", "a"] < 0.05 and adjusted["better", "b"] < 0.05
    for collection in COLLECTIONS:  # the seed sd beside each difference tells an effect from seed noise
        noise, better = rows["loss=noise", collection], rows["loss=better", collection]
        assert abs(float(noise["nDCG@10 diff"])) < 2 * float(noise["nDCG@10 diff_seed_sd"])
        assert float(better["nDCG@10 diff"]) > 2 * float(better["nDCG@10 diff_seed_sd"])
    assert ("loss=b_only", "a") not in rows and float(rows["loss=b_only", "pooled"]["nDCG@10 diff"]) == pytest.approx(
        0.1, abs=1e-5
    )
    table = (out / "report.md").read_text()
    better = next(line for line in table.splitlines() if line.startswith("| 1 | loss=better | 3 |"))
    assert "±" in better and "†" in better
    b_line = next(line for line in table.splitlines() if line.startswith("| 3 | loss=b_only | 1 | – |"))
    assert b_line.split(" | ")[5:7] == ["–", "–"]  # no mean over a subset of the collections
    assert "## nDCG@10: per seed" in table and table.count("| loss=noise | ") >= 3 + 1
    assert {"heatmap_nDCG_at_10.png", "nDCG_at_10.png"} <= {p.name for p in out.iterdir()}
    assert len(list((out / "runs").glob("*.trec"))) == 2 + 6 * 2 + 1


def test_systems_group_runs_that_differ_only_across_the_given_keys() -> None:
    from retrieval_exp.study import StudyRun, group

    def run(overrides: str, seed: str) -> StudyRun:
        return StudyRun(overrides, overrides, "m", overrides.split(), seed, {}, {}, [], None)

    runs = [
        run("experiment=a seed=1 init=x", "1"),
        run("experiment=a seed=2 init=y", "2"),
        run("experiment=b +seed=1", "1"),
        run("experiment=b +seed=2", "2"),
    ]
    assert [len(system.runs) for system in group(runs, ("seed", "init"))] == [2, 2]
    assert [system.label for system in group(runs, ("seed", "init"))] == ["experiment=a", "experiment=b"]
    assert [len(system.runs) for system in group(runs)] == [1, 1, 2]  # init=x and init=y are different systems
    with pytest.raises(UserError, match="runs that differ only by seed must each set a different seed"):
        group([run("experiment=a init=x", "default"), run("experiment=a init=y", "default")], ("init",))


def study(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrieval_exp.study", *args], cwd=REPO, capture_output=True, text=True
    )


def test_an_exported_study_adds_up_across_stores_and_reports_as_from_mlflow(benchmark_store) -> None:
    store, _ = benchmark_store
    folder = store / "exported"
    assert study("has", str(folder), "loss=better").returncode == 1  # nothing exported yet
    export = ["export", "bench", str(folder), "--tracking-uri"]
    assert study(*export, f"sqlite:///{store}/mlflow.db").returncode == 0
    from_mlflow = report(store, "bench", "--baseline", "base", "--out", str(store / "a"), "--measures", "nDCG@10")
    from_folder = report(store, str(folder), "--baseline", "base", "--out", str(store / "b"), "--measures", "nDCG@10")
    assert from_mlflow.returncode == 0 and from_folder.returncode == 0, from_folder.stderr[-2000:]
    assert (store / "a" / "report.csv").read_text() == (store / "b" / "report.csv").read_text()
    assert (store / "a" / "report.md").read_text() == (store / "b" / "report.md").read_text()
    assert not any((store / "b" / "runs").iterdir())  # the run files stay in the store

    elsewhere = store / "elsewhere"  # a second machine's store: one more seed of `better`, and b_only run again
    elsewhere.mkdir()
    shifted = {c: np.clip(v + 0.04, 0, 1) for c, v in COLLECTIONS.items()}
    log_benchmark_run(elsewhere, "better", shifted, "benchmark=tiny loss=better seed=4")
    again = log_benchmark_run(elsewhere, "b_only", {"b": COLLECTIONS["b"] + 0.1}, "loss=b_only benchmark=tiny")
    for workdir in (elsewhere, store):  # the store's older b_only does not come back
        assert study(*export, f"sqlite:///{workdir}/mlflow.db").returncode == 0
    assert len(list(folder.glob("*.json"))) == 1 + 3 * 2 + 1 + 1
    assert study("has", str(folder), "loss=b_only").stdout.split() == [again]
    found = study("has", str(folder), "seed=4", "loss=better")
    assert found.returncode == 0 and len(found.stdout.split()) == 1
    assert study("has", str(folder), "seed=4", "loss=noise").returncode == 1
    combined = report(store, str(folder), "--baseline", "base", "--out", str(store / "c"), "--measures", "nDCG@10")
    rows = {(r["system"], r["collection"]): r for r in csv.DictReader((store / "c" / "report.csv").open())}
    assert combined.returncode == 0 and rows["loss=better", "a"]["seeds"] == "4"
    assert report(store, str(folder), "--to-parent").returncode == 2
