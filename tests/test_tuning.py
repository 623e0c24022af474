"""Optuna searches (hparams_search=...): a search on the tiny collection end to end, continued after a kill -9 of the
sweeper, and the trial side: validation values reported to the study, whose pruner stops a trial."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from retrieval_exp.report import main as report_main
from retrieval_exp.tracking.sweep import RETRIED_FILE, summarize
from retrieval_exp.training.validation import RerankValidation
from retrieval_exp.tuning import trial_reporter
from tests.conftest import REPO, compose_config, launch, launch_command
from tests.test_training import run_training

SEARCH = (
    "hydra/sweeper=optuna",  # the command; hparams_search selects it too
    "hparams_search=infonce",
    "trainer.max_steps=4",
    "validation.every=2",
    "validation.held_out=0.25",
    "hydra.sweeper.sampler.n_startup_trials=2",
)


def search(workdir: Path, trials: int) -> list[str]:
    return [*SEARCH, f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.storage=sqlite:///{workdir}/optuna.db"]


def study(workdir: Path) -> optuna.Study:
    [summary] = optuna.get_all_study_summaries(f"sqlite:///{workdir}/optuna.db")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{workdir}/optuna.db")


def mlflow_runs(workdir: Path) -> list:  # noqa: ANN201
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def check_search(workdir: Path, trials: int) -> None:
    """`trials` finished trials on validation only, the best one tagged, its model evaluated on test once."""
    finished = study(workdir).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == trials
    runs = mlflow_runs(workdir)
    [parent] = [run for run in runs if run.data.tags.get("sweep_parent") == "true"]
    numbered = [(run.data.params.get("tuning.trial"), run) for run in runs]
    by_trial = {number: run for number, run in numbered if number not in (None, "None")}
    done = {t.number: t for t in finished}
    for number, trial in done.items():
        run = by_trial[str(number)]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.value == run.data.metrics["val/best_nDCG_at_10"]  # the objective is the validation measure
        assert "nDCG_at_10" not in run.data.metrics  # no test collection read
        assert not (Path(run.data.tags["output_dir"]) / "run.trec").exists()
    best = study(workdir).best_trial
    tagged = [n for n, run in by_trial.items() if run.data.tags.get("tuning.best_trial") == "true"]
    assert tagged == [str(best.number)]
    assert parent.data.tags["tuning.trials"] == str(trials)
    assert json.loads(parent.data.tags["tuning.best_params"]) == best.params
    [final] = [run for run in runs if run.data.tags.get("tuning.final") == "true"]
    assert final.data.tags["source.model.name_or_path"] == by_trial[str(best.number)].info.run_id  # its model
    assert final.data.params["train"] == "False" and 0 < final.data.metrics["nDCG_at_10"] <= 1
    assert final.data.tags["tuning.best_params"] == parent.data.tags["tuning.best_params"]
    assert parent.data.tags["tuning.final_run"] == final.info.run_id


@pytest.mark.slow
def test_a_search_tunes_on_validation_and_evaluates_the_best_trial_once(tmp_path: Path) -> None:
    done = launch(tmp_path, *search(tmp_path, 4), multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    check_search(tmp_path, 4)
    params = [trial.params for trial in study(tmp_path).trials]
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 4  # four different points

    assert launch(tmp_path, "trainer.max_steps=4").returncode == 0  # the untuned default beside it
    default = mlflow_runs(tmp_path)[-1].info.run_id
    store = f"sqlite:///{tmp_path}/mlflow.db"
    report_main(["tiny", "--out", str(tmp_path / "report"), "--tracking-uri", store, "--baseline", default])
    text = (tmp_path / "report" / "report.md").read_text()
    best = study(tmp_path).best_trial
    assert "| 0 | infonce tuned (4 trials) hparams_search=infonce | 1 |" in text and "## Tuned systems" in text
    chosen = ", ".join(f"{key}={value:.3g}" for key, value in sorted(best.params.items()))
    assert f"| 4 (0 pruned) | val/nDCG@10 {best.value:.4f} | {chosen} |" in text


@pytest.mark.slow
def test_a_killed_search_continues_where_it_stopped(tmp_path: Path) -> None:
    command = launch_command(tmp_path, *search(tmp_path, 4), multirun=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    sweeper = subprocess.Popen(command, cwd=REPO, start_new_session=True, **quiet)
    third_job = tmp_path / "sweep" / "2" / ".hydra"
    while not third_job.is_dir() and sweeper.poll() is None:
        time.sleep(0.1)
    os.killpg(sweeper.pid, signal.SIGKILL)
    sweeper.wait()
    interrupted = study(tmp_path).trials[2]
    assert interrupted.state == optuna.trial.TrialState.RUNNING  # what a killed sweeper leaves

    done = launch(tmp_path, *search(tmp_path, 4), multirun=True)
    assert done.returncode == 0, done.stderr[-3000:]
    check_search(tmp_path, 4)
    trials = study(tmp_path).trials
    assert trials[2].state == optuna.trial.TrialState.FAIL
    [retried] = [trial for trial in trials if trial.user_attrs.get("retries") == 2]
    assert retried.params == interrupted.params and retried.state == optuna.trial.TrialState.COMPLETE

    more = launch(tmp_path, *search(tmp_path, 5), multirun=True)  # the finished search, one trial more
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(study(tmp_path).get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5
    written = [job / ".hydra" / "overrides.yaml" for job in (tmp_path / "sweep").glob("*/")]
    jobs = [OmegaConf.load(overrides) for overrides in written if overrides.is_file()]  # a kill -9 may beat Hydra
    numbers = [next(o for o in job if o.startswith("tuning.trial=")) for job in jobs if "train=false" not in job]
    assert len(numbers) == len(set(numbers))  # every trial ran in a folder of its own
    finals = [run for run in mlflow_runs(tmp_path) if run.data.tags.get("tuning.final") == "true"]
    folders = [job for job in (tmp_path / "sweep").iterdir() if job.is_dir()]
    assert len(folders) == len(study(tmp_path).trials) + len(finals)  # none wrote into a final evaluation's
    assert (tmp_path / "sweep" / str(interrupted.user_attrs["job"]) / "retried").is_file()


def test_a_trial_reports_each_validation_and_its_pruner_stops_it(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1}
    finished = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    earlier = finished.ask()
    for step, value in [(1, 0.2), (2, 0.6), (3, 0.7)]:
        earlier.report(value, step)
    finished.tell(earlier, 0.7)
    finished.ask()  # trial 1, run by the job below
    cfg = OmegaConf.create({"tuning": {"storage": storage, "study": "s", "trial": 1, "pruner": pruner}})
    report = trial_reporter(cfg)
    assert report is not None and report(0.3, 1) is False  # better than the median at step 1: goes on
    assert report(0.1, 2) is True  # its best so far, 0.3, is worse than the median at step 2: pruned
    trial = optuna.load_study(study_name="s", storage=storage).trials[1]
    assert trial.intermediate_values == {1: 0.3, 2: 0.1} and trial.user_attrs["pruned_at"] == 2
    assert trial_reporter(OmegaConf.create({"tuning": {"trial": None}})) is None


def test_a_pruned_trial_stops_training_with_its_best_weights(tmp_path: Path) -> None:
    validator = RerankValidation("tiny/test", depth=10, every=1, patience=100)
    validator.report = lambda value, step: step == 2
    trained = run_training(tmp_path, max_steps=6, validator=validator)
    assert trained.result.steps == 2 and validator.pruned_at == 2 and validator.exhausted


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("objective=nDCG@10", "error: objective=nDCG@10: a search needs a validation measure to maximise"),
        ("hydra.sweeper.storage=null", "error: hydra.sweeper.storage and hydra.sweeper.study_name must be set"),
    ],
)
def test_a_search_that_would_tune_on_test_or_could_not_continue_is_one_line(
    tmp_path: Path, override: str, line: str
) -> None:
    done = launch(tmp_path, *search(tmp_path, 2), override, multirun=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(line)
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()  # no study, no parent run


@pytest.mark.parametrize(
    ("preset", "experiment"),
    [
        ("infonce", None),
        ("adaptive_margin", "self_distill/scifact"),
        ("hybrid_kd", "hybrid_kd/scifact"),
        ("rank_distillm", "rank_distillm/scifact"),
        ("revela", "revela/scifact"),
    ],
)
def test_every_search_preset_searches_keys_its_method_has(preset: str, experiment: str | None) -> None:
    """Each hparams_search preset, with the experiment its comment names, composes, validates on a split that is not
    a test collection, and searches keys the composed config has."""
    chosen = [f"experiment={experiment}"] if experiment else []
    cfg = compose_config(*chosen, f"hparams_search={preset}", return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("TuningSweeper") and cfg.objective.startswith("val/")
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key
    assert cfg.validation.dataset != cfg.data.test and not cfg.evaluate


def test_a_job_killed_as_hydra_made_its_folder_is_summarised_as_retried(tmp_path: Path) -> None:
    """A kill -9 can land between Hydra's making a job's folder and its writing the job's overrides there."""
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / RETRIED_FILE).write_text("interrupted with its search; retried as trial 1\n")
    assert summarize(tmp_path) == (["job", "overrides", "status"], [["0", "", "retried"]])
