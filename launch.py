"""Run an experiment: `python launch.py [group=option ...] [key=value ...]`, or a sweep with `-m`."""

from retrieval_exp.hub_access import decide_offline

decide_offline()  # before huggingface_hub is imported, which reads HF_HUB_OFFLINE once

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from retrieval_exp.experiment import main as run_experiment  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float] | float | None:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
