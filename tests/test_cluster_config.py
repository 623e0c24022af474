"""The cluster side of the configs, without a cluster: the SLURM launcher and a site's override file, output
directories named by the config, a finished run not run twice, and what +prefetch=true fetches."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from retrieval_exp.prefetch import needs
from retrieval_exp.run_dir import config_key
from tests.conftest import REPO, TEST_CONF, compose_config, launch
from tests.test_launch import runs


def compose_with_hydra(*overrides: str, searchpath: Path = TEST_CONF) -> DictConfig:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose(
            "config", overrides=[f"hydra.searchpath=[file://{searchpath}]", *overrides], return_hydra_config=True
        )


def test_hardware_slurm_is_the_gpu_hardware_with_the_suites_slurm_launcher() -> None:
    cfg = compose_with_hydra("hardware=slurm")
    assert cfg.hardware.device == "cuda" and cfg.hardware.precision == "bf16"
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.retrieval_exp_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 1 and launcher.use_srun and launcher.max_num_timeout > 0


def test_a_site_file_sets_its_own_values_over_hardware_slurm(tmp_path: Path) -> None:
    (tmp_path / "hardware").mkdir()
    shutil.copy(REPO / "slurm" / "site.example.yaml", tmp_path / "hardware" / "mycluster.yaml")
    launcher = compose_with_hydra("hardware=mycluster", searchpath=tmp_path).hydra.launcher
    assert (launcher.partition, launcher.account, launcher.gpus_per_node, launcher.tasks_per_node) == (
        "gpu",
        "my-project",
        4,
        4,
    )
    assert launcher.setup[0] == "module load cuda/12.4" and launcher.additional_parameters.constraint == "a100"
    assert launcher._target_ == "hydra_plugins.retrieval_exp_launcher.SlurmLauncher"


def test_hardware_slurm_without_sbatch_is_one_clear_error(tmp_path: Path) -> None:
    python_only = tmp_path / "bin"
    python_only.mkdir()
    (python_only / "python").symlink_to(Path(sys.executable).resolve())
    done = launch(tmp_path, "hardware=slurm_cpu", "seed=1,2", multirun=True, env={"PATH": str(python_only)})
    assert done.returncode == 2 and "hardware=slurm submits with sbatch, which is not on PATH" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()  # no sweep run was started


def key(*overrides: str, kind: str = "run") -> str:
    return config_key(kind, _root_=compose_with_hydra(*overrides))


def test_the_output_directory_is_named_by_the_config_not_the_clock() -> None:
    assert key("model=tiny_bert") == key("model=tiny_bert")  # the same config, another time, another process
    assert key("model=tiny_bert") != key("model=tiny_bert", "seed=1")
    assert key("model=tiny_bert", "optim.lr=1e-5") == key("optim.lr=1e-5", "model=tiny_bert")  # order is no matter
    assert key("seed=42") == key()  # the default, spelled out: the same config
    assert key("seed=42", kind="sweep") != key(kind="sweep")  # a sweep is also named by its overrides


def test_a_finished_run_is_not_run_twice(tmp_path: Path) -> None:
    first = launch(tmp_path, "trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    again = launch(tmp_path, "trainer.max_steps=2")
    assert again.returncode == 0 and "already finished in" in again.stderr and "not run again" in again.stderr
    assert len(runs(tmp_path)) == 1


def test_prefetch_lists_every_hub_model_and_dataset_a_config_names() -> None:
    models, datasets = needs(compose_config("experiment=hybrid_kd/scifact"))
    assert models == ["sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"]
    assert datasets == ["beir/scifact/test", "beir/scifact/train"]
    models, _ = needs(compose_config("model=revela_minilm", "loss=revela", "data=scifact_chunk_groups"))
    assert models == ["HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2"]
    assert needs(compose_config("model=tiny_bert", "data=tiny"))[0] == []  # a local folder is not fetched


def test_prefetch_fetches_a_benchmark_s_ir_datasets_ids_not_its_folders() -> None:
    _, datasets = needs(compose_config("benchmark=offline", "experiment=zero_shot"))
    assert datasets == ["beir/nfcorpus/test", "beir/scifact/test", "beir/scifact/train"]  # not the six folders
