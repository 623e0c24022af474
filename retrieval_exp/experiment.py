"""The one recipe every run follows: check the config, (train,) retrieve, evaluate, record.

Methods differ by config, never by a copy of this file. Every run leaves config.yaml, run.trec, perquery.tsv and
metrics.json in its Hydra output directory and the same in one MLflow run; a failed run is FAILED in MLflow and
has no metrics.json (nor agreement.tsv, the teacher-agreement table of distillation runs that ask for one).
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from retrieval_exp.agreement import teacher_agreement, write_table
from retrieval_exp.benchmark import MEANS, evaluate_collection, means, retriever_for
from retrieval_exp.data.local import register_all
from retrieval_exp.data.teacher import TeacherScores
from retrieval_exp.errors import user_error
from retrieval_exp.hardware import Hardware, seed_everything
from retrieval_exp.measures import RESULT_FILES, read_metrics, write_metrics
from retrieval_exp.plan import Plan, build_plan, require_complete, settle_validation
from retrieval_exp.prefetch import prefetch
from retrieval_exp.settings import plain
from retrieval_exp.tracking.lifecycle import RUN_ID_FILE, tracked_run
from retrieval_exp.tracking.mlflow_run import (
    MODEL_ARTIFACT,
    UNTRACKED,
    TrackedRun,
    require_store,
)
from retrieval_exp.tracking.model_card import write_model_card
from retrieval_exp.tracking.references import resolve_references
from retrieval_exp.tracking.run_lock import run_lock
from retrieval_exp.tracking.sweep import current_sweep
from retrieval_exp.training import distributed
from retrieval_exp.training.distributed import Ranks
from retrieval_exp.training.loop import train
from retrieval_exp.training.preemption import Preempted, Terminated
from retrieval_exp.tuning import trial_reporter

log = logging.getLogger(__name__)
AGREEMENT_FILE = "agreement.tsv"
VECTORS_DIR = "vectors"  # a trained model's document vectors while it is evaluated (retrieval/shards.py)


def main(cfg: DictConfig) -> dict[str, float] | float | None:
    """Entry for launch.py: the run's measures, or with `objective` set the one a sweeper optimises. Bad input ends
    a single run with one line and exit code 2; in a sweep the failure is recorded (FAILED in MLflow, no
    metrics.json) and the other jobs go on, the sweep exiting 1 at its end."""
    in_sweep = current_sweep() is not None
    try:
        metrics = run(cfg)
        return metrics[cfg.objective] if cfg.get("objective") and metrics else metrics  # {}: another DDP rank
    except Preempted as stop:  # state saved; SLURM (or the same command) resumes it
        stop.hand_over()
    except Terminated as stop:  # recorded as KILLED; exit as the signal would have
        print(f"stopped: {stop}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as err:
        bad_input = user_error(err)
        if bad_input:
            print(f"error: {bad_input}", file=sys.stderr)
            if not in_sweep:
                raise SystemExit(2) from None
        elif not in_sweep:
            raise
        else:
            log.exception("run failed")
    return None


def run(cfg: DictConfig) -> dict[str, float]:
    """Run one experiment and return its aggregate measures. A run that already finished in this directory (the
    same config) is not run again: its measures are returned."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    finished = _finished(out_dir)
    if finished is not None:
        return finished
    if cfg.get("prefetch") and not os.environ.get("HF_HUB_OFFLINE"):
        prefetch(cfg)
    plan, sources = check(cfg)
    ranks = distributed.start(cfg.hardware.device)
    hardware = plan.hardware
    seed_everything(cfg.seed)
    if not ranks.is_main:  # another process of a data-parallel job: it trains, rank 0 records and evaluates
        model = instantiate(cfg.model).to(hardware.torch_device)
        _train(cfg, plan, model, hardware, out_dir, UNTRACKED, ranks, _retriever_builder(cfg, plan))
        return {}
    with run_lock(out_dir):  # a second launch of this config is refused while this one runs
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        started = time.perf_counter()
        with tracked_run(cfg, plan, out_dir, [AGREEMENT_FILE]) as tracked:
            tracked.set_tags({f"source.{key}": run_id for key, run_id in sources.items()})
            metrics = _execute(cfg, plan, hardware, out_dir, tracked, ranks)
        _print_summary(cfg, plan, metrics, out_dir, tracked, time.perf_counter() - started)
    return metrics


def check(cfg: DictConfig) -> tuple[Plan, dict[str, str]]:
    """Everything a run checks before it writes anything: the plan, and the MLflow runs the config refers to (by
    config key). Bad input is a UserError."""
    register_all(cfg.data.get("register"))
    require_complete(cfg)
    require_store(cfg.tracking.uri)
    sources = resolve_references(cfg, cfg.tracking.uri, Path(cfg.paths.cache))
    settle_validation(cfg)
    return build_plan(cfg), sources


def _finished(out_dir: Path) -> dict[str, float] | None:
    """The measures of the run that finished in `out_dir`, or None."""
    metrics, run_id = read_metrics(out_dir), out_dir / RUN_ID_FILE
    if metrics is None or not run_id.is_file():
        return None
    print(
        f"already finished in {out_dir} (MLflow run {run_id.read_text()}): not run again. A changed config runs in a "
        "directory of its own (add e.g. +attempt=2 to repeat this one)",
        file=sys.stderr,
    )
    return metrics


def _execute(
    cfg: DictConfig, plan: Plan, hardware: Hardware, out_dir: Path, tracked: TrackedRun, ranks: Ranks
) -> dict[str, float]:
    model: Any = instantiate(cfg.model).to(hardware.torch_device) if plan.needs_model else None
    build_retriever = _retriever_builder(cfg, plan)
    validated: dict[str, float] = {}
    if plan.trains:
        samples, validated = _train(cfg, plan, model, hardware, out_dir, tracked, ranks, build_retriever)
        if cfg.get("agreement"):
            _teacher_agreement(cfg, model, samples, hardware, out_dir, tracked)
        if cfg.save_model:
            model.save(out_dir / "model")
    encoder = hardware.for_inference(model) if plan.needs_model else None
    cache = cfg.eval.embedding_cache  # an unchanged model's vectors are worth keeping for later runs
    if plan.trains:  # a trained model's serve this run only: in its folder, where a preempted evaluation resumes
        cache = str(out_dir / VECTORS_DIR)
        build_retriever = (
            partial(plan.build_retriever, cache_dir=cache) if "cache_dir" in cfg.retriever else build_retriever
        )
    started = time.perf_counter()
    benchmark = cfg.get("benchmark")
    depth = benchmark.rerank_depth if benchmark else 0  # what pools re-rank; only benchmarks have pools
    results, outputs = {}, [out_dir / "config.yaml"]
    for collection in plan.collections if cfg.evaluate else ():
        prefix, folder = (f"{collection.name}/", out_dir / collection.name) if benchmark else ("", out_dir)
        retriever = retriever_for(collection, build_retriever, encoder, hardware, depth, cache)
        evaluation, counts, files = evaluate_collection(collection, retriever, cfg.eval, folder, plan.method)
        results[collection.name] = evaluation.metrics
        tracked.log_metrics({f"{prefix}{name}": value for name, value in {**evaluation.metrics, **counts}.items()})
        tracked.log_artifacts([folder / name for name in RESULT_FILES] + files, collection.name if benchmark else None)
    metrics = results[plan.collections[0].name] if cfg.evaluate else {}
    if benchmark and cfg.evaluate:
        metrics = {f"{name}/{m}": v for name, values in results.items() for m, v in values.items()} | means(results)
    metrics |= {f"val/{name}": value for name, value in validated.items()}  # the kept weights' validation
    if benchmark or not cfg.evaluate or validated:
        write_metrics(metrics, out_dir)
        outputs.append(out_dir / "metrics.json")
    tested = {name: value for name, value in metrics.items() if not name.startswith("val/")}  # val/*: logged as made
    tracked.log_metrics({**tested, "time/retrieve_s": time.perf_counter() - started, **_peak_memory()})
    tracked.log_artifacts(outputs)
    if plan.trains and cfg.save_model:
        write_model_card(out_dir / "model", tracked.client.get_run(tracked.run_id))
        if cfg.tracking.log_model:  # what a run id in model.name_or_path or init= resolves to on any machine
            tracked.log_folder(out_dir / "model", MODEL_ARTIFACT)
            if cfg.tracking.get("register_as"):
                tracked.register(cfg.tracking.register_as, MODEL_ARTIFACT)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(out_dir / VECTORS_DIR, ignore_errors=True)
    return metrics


def _retriever_builder(cfg: DictConfig, plan: Plan) -> Callable[..., Any]:
    """The run's retriever waiting for its encoder; for a trained model, without an embedding cache (validation's
    vectors would serve once: the weights change)."""
    if plan.trains and "cache_dir" in cfg.retriever:
        return partial(plan.build_retriever, cache_dir=None)
    return plan.build_retriever


def _train(
    cfg: DictConfig,
    plan: Plan,
    model: Any,
    hardware: Hardware,
    out_dir: Path,
    tracked: TrackedRun,
    ranks: Ranks,
    build_retriever: Callable[..., Any],
) -> tuple[Any, dict[str, float]]:
    """Train `model` in place; returns the training samples (with the teacher's scores when the loss needs them)
    and the measures of the best validation (none without one)."""
    with ranks.main_first():  # rank 0 fills the caches (mined negatives, teacher scores); the others then read them
        samples = instantiate(cfg.data.train)
        if plan.needs_teacher:
            teacher = plain(cfg.teacher)
            samples.attach_teacher(TeacherScores(teacher, Path(cfg.paths.cache) / "teacher_scores", hardware))
    if plan.needs_teacher:
        tracked.log_artifacts([samples.teacher_file], "teacher")
    validator = instantiate(cfg.validation, build_retriever=build_retriever) if cfg.get("validation") else None
    if validator:
        validator.report = trial_reporter(cfg)  # a tuning trial's validations go to its study, which may prune it
    loss, trainer = plan.training()
    result = train(
        model,
        loss,
        samples,
        instantiate(cfg.optim),
        instantiate(cfg.scheduler),
        trainer,
        hardware,
        out_dir / "checkpoints",
        tracked.log_metrics,
        validator,
        ranks,
    )
    tracked.log_metrics(samples.report)  # what the sampler found: negatives, teacher scores, lists, groups
    validated = validator.best_values if validator else {}
    if validator and validator.pruned_at is not None:
        tracked.set_tags({"tuning.pruned_at": str(validator.pruned_at)})
    if validator and validator.best is not None:
        tracked.log_metrics({f"val/best_{validator.measure}": validator.best, "val/best_step": validator.best_step})
    tracked.log_metrics(
        {
            "time/train_s": result.seconds,
            "train/steps": result.steps,
            "train/examples_per_s": result.examples_per_second,
        }
    )
    return samples, validated


def _teacher_agreement(
    cfg: DictConfig, model: Any, samples: Any, hardware: Hardware, out_dir: Path, tracked: TrackedRun
) -> None:
    """The trained student against its teacher on the training pairs it kept (the seed's evaluation of Method 3)."""
    pairs, teacher_scores = zip(*samples.scored_positives())
    student_scores = model.score_pairs(
        samples.queries, samples.texts, list(pairs), hardware.encode_batch_size, hardware.autocast
    )
    measures = teacher_agreement(teacher_scores, student_scores, cfg.agreement.ks)
    write_table(measures, out_dir / AGREEMENT_FILE)
    tracked.log_metrics({f"agreement/{name}": value for name, value in measures.items()})
    tracked.log_artifacts([out_dir / AGREEMENT_FILE])


def _peak_memory() -> dict[str, float]:
    peak = {"memory/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["memory/peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _print_summary(
    cfg: DictConfig, plan: Plan, metrics: dict[str, Any], out_dir: Path, tracked: TrackedRun, seconds: float
) -> None:
    if cfg.get("benchmark") and cfg.evaluate:
        lines = [f"{plan.method} on benchmark {cfg.benchmark.name!r}:"]
        for group in [collection.name for collection in plan.collections] + list(MEANS):
            found = {name.split("/", 1)[1]: value for name, value in metrics.items() if name.startswith(f"{group}/")}
            lines.append(f"  {group:10} " + "  ".join(f"{name} {value:.4f}" for name, value in found.items()))
        summary = "\n".join(lines)
    else:
        where = cfg.data.test if cfg.evaluate else f"{cfg.validation.dataset} (validation only, evaluate=false)"
        summary = f"{plan.method} on {where}: " + "  ".join(f"{n} {v:.4f}" for n, v in metrics.items())
    print(
        f"\n{summary}\n"
        f"  {seconds:.0f} s; outputs in {out_dir}; MLflow run {tracked.run_id} "
        f"(experiment {cfg.tracking.experiment!r}, {cfg.tracking.uri})"
    )
