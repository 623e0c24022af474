"""The SLURM launcher of conf/hydra/launcher/slurm.yaml (Hydra takes launchers from the hydra_plugins package):
hydra-submitit-launcher's, plus `+prefetch=true`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from retrieval_exp.prefetch import prefetch

OFFLINE = "export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1"


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """Sends a sweep as one job array. With `+prefetch=true` it first downloads every job's models and datasets
    here (the login node has the network), then the jobs run offline.

    Preemption and time limits: the job's training saves its state at the step the signal arrives in and hands the
    signal on (training/preemption.py); submitit then calls `checkpoint` (inherited: resubmit with the same
    arguments) and requeues the job, which resumes in the same directory, named by its config."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.config.get("prefetch"):
            models, datasets = set(), set()
            for overrides in job_overrides:
                fetched = prefetch(self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides)))
                models |= set(fetched[0])
                datasets |= set(fetched[1])
            print(
                f"prefetched for {len(job_overrides)} jobs: models {sorted(models)}, datasets {sorted(datasets)}; "
                "the jobs run offline (HF_HUB_OFFLINE=1)",
                file=sys.stderr,
            )
            self.params["setup"] = [*(self.params.get("setup") or []), OFFLINE]
        return super().launch(job_overrides, initial_job_idx)
