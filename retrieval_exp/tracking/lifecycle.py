"""A run's MLflow lifecycle: started (or resumed) with its tags and params, ended FINISHED, FAILED or KILLED, and
never leaving a partial result that looks finished."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from retrieval_exp.plan import Plan
from retrieval_exp.settings import plain
from retrieval_exp.tracking.mlflow_run import (
    TrackedRun,
    close_abandoned,
    flatten,
    git_commit,
    open_experiment,
    system_metrics,
)
from retrieval_exp.tracking.slurm import slurm_tags
from retrieval_exp.tracking.sweep import current_sweep
from retrieval_exp.training.preemption import Preempted, Terminated, terminate_raises

RUN_ID_FILE = "mlflow_run_id"  # in the output directory: the MLflow run of the last launch there


@contextmanager
def tracked_run(cfg: DictConfig, plan: Plan, out_dir: Path, results: Sequence[str]) -> Iterator[TrackedRun]:
    """The run's MLflow record, ended FINISHED, or FAILED on any error (its metrics.json files and the other
    `results` in `out_dir` removed); KILLED when a signal stopped it after a checkpoint, or SIGTERM or Ctrl-C anywhere
    else. A run resumed from a checkpoint in the same output directory continues its MLflow run."""
    client, experiment_id = open_experiment(cfg.tracking.uri, cfg.tracking.artifact_root, cfg.tracking.experiment)
    id_file = out_dir / RUN_ID_FILE
    previous = id_file.read_text() if id_file.is_file() else None  # this directory's last MLflow run
    resuming = previous is not None and (out_dir / "checkpoints").is_dir()
    sweep = current_sweep()
    overrides = list(HydraConfig.get().overrides.task)
    model = cfg.model.name_or_path if plan.needs_model else "none"
    tags = {
        "method": plan.method,
        "model": model,
        "dataset": _evaluated_on(cfg),
        "collections": ",".join(collection.name for collection in plan.collections),
        "train_dataset": cfg.data.train.get("dataset") or cfg.data.train.get("path") if plan.trains else "none",
        "git_commit": git_commit(),
        "output_dir": str(out_dir.resolve()),
        "overrides": " ".join(overrides),
    }
    if sweep:
        tags |= {"sweep_id": sweep.sweep_id, "mlflow.parentRunId": sweep.parent_run_id}
    name = " · ".join([plan.method, Path(model).name, cfg.data.name, *(overrides if sweep else [])])
    params = flatten(plain(cfg))
    tracked = TrackedRun.start(client, experiment_id, name, tags, params, previous if resuming else None)
    tracked.set_tags(slurm_tags())  # again on each requeue: the job's current log and restart count
    if previous and not resuming:
        close_abandoned(client, previous, tracked.run_id)
    id_file.write_text(tracked.run_id)
    try:
        with terminate_raises(), system_metrics(tracked, cfg.tracking.get("system_metrics_every"), resuming):
            yield tracked
    except Preempted as stop:
        tracked.set_tags({"stopped": str(stop)})
        tracked.finish("KILLED")  # until the requeued job sets it running again
        raise
    except BaseException as err:
        partial = [
            *(out_dir / name for name in results),
            *out_dir.glob("metrics.json"),
            *out_dir.glob("*/metrics.json"),
        ]
        for path in partial:
            path.unlink(missing_ok=True)  # no collection's partial result is mistaken for a finished one
        tracked.set_tags({"error": f"{type(err).__name__}: {err}"[:5000]})
        tracked.finish("KILLED" if isinstance(err, KeyboardInterrupt | Terminated) else "FAILED")
        raise
    tracked.finish("FINISHED")


def _evaluated_on(cfg: DictConfig) -> str:
    if not cfg.evaluate:
        return f"validation:{cfg.validation.dataset}"
    return f"benchmark:{cfg.benchmark.name}" if cfg.get("benchmark") else str(cfg.data.test)
