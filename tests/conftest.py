"""Shared fixtures: offline environment, a tiny BERT built from a config, the real configs composed, launch.py
run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_CONF = REPO / "tests" / "conf"
TINY_DATA = REPO / "tests" / "data" / "tiny"
_SESSION = Path(tempfile.mkdtemp(prefix="retrieval_exp-tests-"))

# Set before huggingface_hub is imported anywhere: the suite must never reach for the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RETRIEVAL_EXP_CACHE"] = str(_SESSION / "cache")
os.environ["RETRIEVAL_EXP_TINY_MODEL"] = str(_SESSION / "tiny_bert")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

TINY = ["model=tiny_bert", "data=tiny", "trainer.batch_size=4", "trainer.log_every=1", "hardware.encode_batch_size=8"]


def build_tiny_bert(folder: Path) -> None:
    """A 2-layer, 32-wide BERT with a vocabulary of the fixtures' words, randomly initialised with a fixed seed."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words: set[str] = set()
    for path in sorted((REPO / "tests" / "data").rglob("*.json*")):
        words |= set(re.findall(r"[a-z0-9]+", path.read_text().lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)


@pytest.fixture(scope="session", autouse=True)
def tiny_bert() -> Path:
    folder = Path(os.environ["RETRIEVAL_EXP_TINY_MODEL"])
    if not (folder / "config.json").exists():
        build_tiny_bert(folder)
    return folder


def compose_config(*overrides: str) -> DictConfig:
    """The real conf/ composed with the tests' extra options (tiny_bert, tiny) on the search path."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{TEST_CONF}]", *overrides])


def launch(
    workdir: Path, *overrides: str, multirun: bool = False, env: dict[str, str] | None = None, tiny: bool = True
) -> subprocess.CompletedProcess[str]:
    """`python launch.py` from the repository root, tracking into `workdir`."""
    command = [
        sys.executable,
        "launch.py",
        *(["-m"] if multirun else []),
        f"hydra.searchpath=[file://{TEST_CONF}]",
        f"tracking.uri=sqlite:///{workdir}/mlflow.db",
        f"tracking.artifact_root={workdir}/artifacts",
        f"hydra.run.dir={workdir}/run",
        f"hydra.sweep.dir={workdir}/sweep",
        *(TINY if tiny else []),
        *overrides,
    ]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
    )
