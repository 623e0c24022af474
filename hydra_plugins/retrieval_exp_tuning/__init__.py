"""The suite's Optuna sweeper (conf/hydra/sweeper/study/tuning.yaml sets it as hydra-optuna-sweeper's class; Hydra
takes sweepers from the hydra_plugins package): hydra-optuna-sweeper's, plus what a tuning study here needs
(retrieval_exp/tuning.py does the work):

- each trial job is told its study and trial number (`tuning.*` overrides), so it reports its validation values to
  the study and stops when the study's pruner says so;
- a search launched again continues its study: interrupted trials are tried again, finished ones count, and job
  numbers go on after the last one (each job's directory stays its own);
- at the end, the best trial's MLflow run is tagged, the sweep's parent run records the search, and the best trial's
  model is evaluated on the test collections once, in one more job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.trial import Trial

from retrieval_exp import tuning


class TuningSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's settings (sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
    params...); the pruner is the trials' `tuning.pruner`."""

    def __init__(self, **settings: Any) -> None:
        self.sweeper = _Tuning(**settings)


class _Tuning(OptunaSweeperImpl):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.study = tuning.require_study(self.storage, self.study_name, config)

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None  # set by setup
        resumed = tuning.resume(self.study, self._get_directions(), self.n_trials, self.config)
        self.n_trials, self.job_idx = resumed.trials_to_go, resumed.next_job
        if self.n_trials:
            super().sweep(arguments)
        final = tuning.finish(self.study, self.config)
        if final is not None:  # None: an earlier launch evaluated this best trial already
            [done] = self.launcher.launch([final], initial_job_idx=self.job_idx)
            tuning.record_final(self.config, done)

    def _configure_trials(
        self, trials: list[Trial], search_space_distributions: dict[str, BaseDistribution], fixed_params: dict[str, Any]
    ) -> Sequence[Sequence[str]]:
        overrides = super()._configure_trials(trials, search_space_distributions, fixed_params)
        return [
            (*job, *tuning.trial_overrides(self.study, trial, self.job_idx + offset))
            for offset, (job, trial) in enumerate(zip(overrides, trials, strict=True))
        ]
