"""A sweep's parent MLflow run and summary, through Hydra's multirun callbacks.

on_multirun_start creates the store (so parallel jobs never race on the first use of the sqlite file), the
experiment and a parent run, and writes sweep.json into the sweep directory; each job reads that file to tag
itself with the sweep id and nest under the parent. on_multirun_end gathers every job's metrics.json into
summary.tsv, logs it to the parent, and ends the parent FAILED (and the process with exit code 1) when a job failed
(a job an Optuna search ran again elsewhere, after an interruption, is `retried`, not failed).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from retrieval_exp.measures import read_metrics
from retrieval_exp.tracking.mlflow_run import git_commit, open_experiment

SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.tsv"
RETRIED_FILE = "retried"  # in a job folder whose run an Optuna search tried again in another (retrieval_exp.tuning)


@dataclass(frozen=True)
class Sweep:
    sweep_id: str
    parent_run_id: str


def current_sweep() -> Sweep | None:
    """The sweep the running Hydra job belongs to, or None outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    path = Path(HydraConfig.get().sweep.dir) / SWEEP_FILE
    return Sweep(**json.loads(path.read_text())) if path.is_file() else None


def summarize(sweep_dir: Path) -> tuple[list[str], list[list[str]]]:
    """Header and one row per job: number, overrides, status, then each measure of its metrics.json."""
    jobs = sorted((d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()), key=lambda d: (len(d.name), d.name))
    results = {job: read_metrics(job) for job in jobs}
    measures = sorted({m for metrics in results.values() if metrics for m in metrics})
    rows = []
    for job, metrics in results.items():
        written = job / ".hydra" / "overrides.yaml"  # absent: the job was stopped as Hydra made its folder
        overrides = " ".join(OmegaConf.load(written)) if written.is_file() else ""
        values = [f"{metrics[m]:.4f}" if metrics and m in metrics else "" for m in measures]
        status = "finished" if metrics else "retried" if (job / RETRIED_FILE).is_file() else "failed"
        rows.append([job.name, overrides, status, *values])
    return ["job", "overrides", "status", *measures], rows


def _require_sbatch(config: DictConfig) -> None:
    """A SLURM sweep where sbatch is missing ends with one line, before the sweep's parent run is created."""
    if str(config.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        print(
            "error: hardware=slurm submits with sbatch, which is not on PATH: launch from a SLURM login node (or start "
            "the test cluster: bash slurm/start.sh), or run here with hardware=cpu or hardware=gpu",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _pin_sweep_dir(config: DictConfig) -> str:
    """Resolve hydra.sweep.dir once, on the master config, and hand it to every job as a Hydra override: each job
    recomposes its config, and a directory named by the config (`${config_key:sweep}`) would otherwise be named by
    the job's config, not the sweep's."""
    sweep_dir = str(config.hydra.sweep.dir)
    with open_dict(config):
        config.hydra.sweep.dir = sweep_dir
        config.hydra.overrides.hydra.append(f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


class SweepTracking(Callback):
    """Registered under hydra.callbacks in conf/config.yaml."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_sbatch(config)
        if str(config.hydra.sweeper.get("_target_", "")).endswith("TuningSweeper"):  # before any record is made
            from retrieval_exp.tuning import require_study  # which reads this module's sweep.json

            require_study(config.hydra.sweeper.storage, config.hydra.sweeper.study_name, config)
        try:
            self._open(config)
        except Exception as err:  # Hydra would only warn, and the jobs would run unrecorded as a sweep
            print(f"error: the sweep's MLflow parent run cannot be created ({err})", file=sys.stderr)
            raise SystemExit(1) from None

    def _open(self, config: DictConfig) -> None:
        sweep_dir = Path(_pin_sweep_dir(config))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        client, experiment_id = open_experiment(
            config.tracking.uri, config.tracking.artifact_root, config.tracking.experiment
        )
        if (sweep_dir / SWEEP_FILE).is_file():  # the same sweep launched again: it continues, under its parent run
            sweep = Sweep(**json.loads((sweep_dir / SWEEP_FILE).read_text()))
            client.update_run(sweep.parent_run_id, status="RUNNING")
            return
        sweep_id = f"{sweep_dir.name}-{uuid.uuid4().hex[:6]}"
        tags = {
            "sweep_id": sweep_id,
            "sweep_parent": "true",
            "sweep_overrides": " ".join(config.hydra.overrides.task),
            "sweep_dir": str(sweep_dir.resolve()),
            "git_commit": git_commit(),
        }
        parent = client.create_run(experiment_id, run_name=f"sweep {sweep_id}", tags=tags)
        sweep = Sweep(sweep_id, parent.info.run_id)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(asdict(sweep), indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep = Sweep(**json.loads((sweep_dir / SWEEP_FILE).read_text()))
        header, rows = summarize(sweep_dir)
        summary = sweep_dir / SUMMARY_FILE
        summary.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
        client, _ = open_experiment(config.tracking.uri, config.tracking.artifact_root, config.tracking.experiment)
        client.log_artifact(sweep.parent_run_id, str(summary))
        failed = [row[0] for row in rows if row[2] == "failed"]
        client.set_terminated(sweep.parent_run_id, status="FAILED" if failed or not rows else "FINISHED")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        print(f"\nsweep {sweep.sweep_id} ({sweep_dir}):")
        for row in [header, *rows]:
            print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if failed:
            raise SystemExit(
                f"error: {len(failed)} of {len(rows)} runs failed (jobs {', '.join(failed)}); see their logs"
            )
