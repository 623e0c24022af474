"""retrieval_exp: Hydra-composed training and evaluation of neural retrievers, tracked in MLflow."""

from retrieval_exp.run_dir import register_resolver

__version__ = "0.1.0"

register_resolver()  # before Hydra resolves hydra.run.dir, also in a SLURM job that unpickles the launcher
