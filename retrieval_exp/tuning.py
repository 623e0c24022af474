"""Model-based hyper-parameter search with Optuna (hparams_search=<preset>, hydra/sweeper=optuna): what the trials
and the study do beyond hydra-optuna-sweeper (hydra_plugins/retrieval_exp_tuning).

A trial's value is a validation measure (`objective=val/...`) and a trial reads no test collection (`evaluate=false`):
tuning never sees the test set. Each validation reports its value to the study, whose pruner may stop the trial
early (it then ends as early stopping ends a run, with its best-validated weights; the trial's user attribute
`pruned_at` says so, and the sweeper records it complete with the value it reached, as hydra-optuna-sweeper tells
every returned trial complete). After
the search the best trial's MLflow run is tagged `tuning.best_trial=true`, the sweep's parent run records the study,
and the best trial's model is evaluated on the test collections once, by one more job whose run is tagged
`tuning.final=true` with the chosen values and the number of trials: the run the report shows as tuned.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from mlflow.entities import Run as MlflowRun
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from optuna.study import StudyDirection

from retrieval_exp.tracking.lifecycle import RUN_ID_FILE
from retrieval_exp.tracking.mlflow_run import open_experiment
from retrieval_exp.tracking.sweep import RETRIED_FILE, SWEEP_FILE, Sweep

log = logging.getLogger(__name__)
# hydra-optuna-sweeper 1.3 builds optuna's pre-3.0 distributions, which optuna 4 and 5 still read, with a warning each
OLD_DISTRIBUTIONS = "(Int|IntLog|Log|Discrete)?UniformDistribution has been deprecated"
warnings.filterwarnings("ignore", OLD_DISTRIBUTIONS, FutureWarning)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
TRIAL_ONLY = ("tuning.", "hydra", "validation", "evaluate=", "objective=", "train=", "model.name_or_path=", "method=")
JOB_ATTR = "job"  # a trial's user attribute: the number of the job (and folder) that ran it
FINAL_OVERRIDES = ("train=false", "evaluate=true", "~validation", "objective=null", "tuning.trial=null")


@dataclass(frozen=True)
class StudyRef:
    """Where a study lives, and its name."""

    storage: str
    name: str


def require_study(storage: str | None, study_name: str | None, config: DictConfig | None) -> StudyRef:
    """The search's study; a search that could not continue after an interruption, or that would tune on the test
    set, is one line."""
    problem = None
    objective = config.get("objective") if config is not None else None
    if not storage or not study_name:
        problem = "hydra.sweeper.storage and hydra.sweeper.study_name must be set: the study lives there"
    elif not str(objective or "").startswith("val/"):
        problem = (
            f"objective={objective}: a search needs a validation measure to maximise, e.g. "
            "objective=val/nDCG@10 with validation=dev (an hparams_search preset sets both)"
        )
    if problem or not storage or not study_name:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return StudyRef(str(storage), study_name)


@dataclass(frozen=True)
class Resumed:
    trials_to_go: int
    next_job: int


def resume(ref: StudyRef, directions: Sequence[str], n_trials: int, config: DictConfig) -> Resumed:
    """Open the study (a new one, or the one an earlier launch of this search left): trials it left running are
    failed and queued again with their values (their jobs' folders marked retried, their MLflow runs KILLED); the
    trials already finished count towards `n_trials`."""
    study = optuna.create_study(
        storage=ref.storage,
        study_name=ref.name,
        directions=[StudyDirection[direction.upper()] for direction in directions],
        load_if_exists=True,
    )
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retries": trial.number})
        retry = len(study.trials) - 1
        log.info("trial %d was interrupted: failed, and queued again as trial %d", trial.number, retry)
        _retire_job(config, trial, f"interrupted with its search; retried as trial {retry}")
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished:
        log.info("study %s continues: %d of %d trials finished", ref.name, finished, n_trials)
    return Resumed(max(0, n_trials - finished), _next_job(Path(config.hydra.sweep.dir)))


def _next_job(sweep_dir: Path) -> int:
    """The first job number no folder of the sweep has: a continued search writes into none of its trials' or its
    final evaluation's folders (job folders are `hydra.sweep.dir/<job number>`, conf/config.yaml)."""
    numbers = [int(job.name) for job in sweep_dir.glob("*") if job.name.isdigit()] if sweep_dir.is_dir() else []
    return max(numbers, default=-1) + 1


def _retire_job(config: DictConfig, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """The job folder of an interrupted trial: marked retried (sweep summaries do not count it failed), and its MLflow
    run, left RUNNING by the interruption, ended KILLED."""
    folder = Path(config.hydra.sweep.dir) / str(trial.user_attrs[JOB_ATTR])
    if not folder.is_dir():  # interrupted before its job began
        return
    (folder / RETRIED_FILE).write_text(why + "\n")
    run_id = folder / RUN_ID_FILE
    if run_id.is_file():
        client, _ = open_experiment(config.tracking.uri, config.tracking.artifact_root, config.tracking.experiment)
        if client.get_run(run_id.read_text()).info.status == "RUNNING":
            client.set_tag(run_id.read_text(), "error", why)
            client.set_terminated(run_id.read_text(), "KILLED")


def trial_overrides(ref: StudyRef, trial: optuna.trial.Trial, job: int) -> list[str]:
    """What tells a trial's job where it reports; the trial remembers its job's number (for a continued search)."""
    trial.set_user_attr(JOB_ATTR, job)
    return [f"tuning.storage='{ref.storage}'", f"tuning.study='{ref.name}'", f"tuning.trial={trial.number}"]


def trial_reporter(cfg: DictConfig) -> Callable[[float, int], bool] | None:
    """For a trial's job, a function that reports a validation value at a step to the study and says whether the
    study's pruner (`tuning.pruner`; none: never) stops the trial; None outside a search."""
    settings = cfg.get("tuning")
    if not settings or settings.get("trial") is None:
        return None
    pruner = instantiate(settings.pruner) if settings.get("pruner") else optuna.pruners.NopPruner()
    storage = optuna.storages.get_storage(settings.storage)
    study = optuna.load_study(study_name=settings.study, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(settings.study)
    trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, settings.trial))

    def report(value: float, step: int) -> bool:
        trial.report(value, step)
        if not trial.should_prune():
            return False
        trial.set_user_attr("pruned_at", step)
        return True

    return report


def finish(ref: StudyRef, config: DictConfig) -> list[str] | None:
    """Tag the best trial and the parent run; the overrides of the job that evaluates the best trial's model on the
    test collections, or None when an earlier launch already did for this best trial."""
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    best = study.best_trial
    client, sweep, trials = _trial_runs(config)
    best_run = trials.get(best.number)
    if best_run is None:
        raise RuntimeError(f"the best trial {best.number} of study {ref.name} has no MLflow run in this sweep")
    for number, run in trials.items():
        client.set_tag(run.info.run_id, "tuning.best_trial", str(number == best.number).lower())
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    record = {
        "tuning.study": ref.name,
        "tuning.objective": str(config.objective),
        "tuning.trials": str(len(finished)),
        "tuning.pruned": str(sum("pruned_at" in trial.user_attrs for trial in finished)),
        "tuning.best_trial": str(best.number),
        "tuning.best_value": f"{best.value:.6g}",
        "tuning.best_params": json.dumps(best.params, sort_keys=True),
        "tuning.best_run": best_run.info.run_id,
    }
    parent = client.get_run(sweep.parent_run_id)
    client.log_dict(sweep.parent_run_id, {**record, "trials": _trial_table(finished)}, "tuning.json")
    if parent.data.tags.get("tuning.final_of") == best_run.info.run_id:
        return None
    for key, value in record.items():
        client.set_tag(sweep.parent_run_id, key, value)
    job = OmegaConf.load(Path(best_run.data.tags["output_dir"]) / ".hydra" / "overrides.yaml")
    kept = [str(o) for o in job if not str(o).startswith(TRIAL_ONLY)]
    method = best_run.data.tags.get("method")
    return [*kept, *FINAL_OVERRIDES, f"model.name_or_path={best_run.info.run_id}", f"method={method}"]


def record_final(config: DictConfig, done: JobReturn) -> None:
    """Tag the final evaluation's run with the search it comes from."""
    client, sweep, _ = _trial_runs(config)
    if done.hydra_cfg is None:
        raise RuntimeError("the final evaluation's job returned no Hydra config")
    run_id = (Path(done.hydra_cfg.hydra.runtime.output_dir) / RUN_ID_FILE).read_text().strip()
    parent = client.get_run(sweep.parent_run_id).data.tags
    for key, value in parent.items():
        if key.startswith("tuning."):
            client.set_tag(run_id, key, value)
    client.set_tag(run_id, "tuning.final", "true")
    client.set_tag(sweep.parent_run_id, "tuning.final_of", parent["tuning.best_run"])
    client.set_tag(sweep.parent_run_id, "tuning.final_run", run_id)


def _trial_runs(config: DictConfig) -> tuple[MlflowClient, Sweep, dict[int, MlflowRun]]:
    """The store's client, the sweep, and its trials' finished MLflow runs by trial number."""
    sweep = Sweep(**json.loads((Path(config.hydra.sweep.dir) / SWEEP_FILE).read_text()))
    client, experiment_id = open_experiment(
        config.tracking.uri, config.tracking.artifact_root, config.tracking.experiment
    )
    query = f"tags.sweep_id = '{sweep.sweep_id}' and attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=10_000)
    numbered = [(r.data.params.get("tuning.trial"), r) for r in runs]
    trials = {int(number): r for number, r in numbered if number not in (None, "None")}
    return client, sweep, trials


def _trial_table(trials: Sequence[optuna.trial.FrozenTrial]) -> list[dict[str, Any]]:
    return [
        {"number": t.number, "value": t.value, "params": t.params, "pruned_at": t.user_attrs.get("pruned_at")}
        for t in trials
    ]
