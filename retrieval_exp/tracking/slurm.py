"""What a SLURM job records about itself in its MLflow run, to find its log and its history from the run."""

from __future__ import annotations

import os


def slurm_tags() -> dict[str, str]:
    """slurm.job_id (an array task's ARRAYID_TASKID, which scontrol and sacct take), slurm.log (submitit's stdout
    file of this job), slurm.node and slurm.restarts (how often SLURM requeued it); {} outside SLURM."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return {}
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    tags = {
        "slurm.job_id": f"{array}_{task}" if array else job_id,
        "slurm.node": os.environ.get("SLURMD_NODENAME", ""),
        "slurm.restarts": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }
    if os.environ.get("SUBMITIT_FOLDER"):
        from submitit import JobEnvironment

        paths = JobEnvironment().paths
        tags |= {"slurm.log": str(paths.stdout.resolve()), "slurm.stderr": str(paths.stderr.resolve())}
    return tags
