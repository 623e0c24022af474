"""Run an experiment: `python launch.py [group=option ...] [key=value ...]`, or a sweep with `-m`."""

import hydra
from omegaconf import DictConfig

from retrieval_exp.experiment import main as run_experiment


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float] | None:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
