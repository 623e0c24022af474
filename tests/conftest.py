"""Shared fixtures: offline environment, a tiny BERT built from a config, the real configs composed, launch.py
run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEST_CONF = REPO / "tests" / "conf"
TINY_DATA = REPO / "tests" / "data" / "tiny"
_SESSION = Path(tempfile.mkdtemp(prefix="retrieval_exp-tests-"))

# Set before huggingface_hub is imported anywhere: the suite must never reach for the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RETRIEVAL_EXP_CACHE"] = str(_SESSION / "cache")
os.environ["RETRIEVAL_EXP_TINY_MODEL"] = str(_SESSION / "tiny_bert")
os.environ["RETRIEVAL_EXP_TINY_LLAMA"] = str(_SESSION / "tiny_llama")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

TINY = ["model=tiny_bert", "data=tiny", "trainer.batch_size=4", "trainer.log_every=1", "hardware.encode_batch_size=8"]


def fixture_words() -> list[str]:
    """The fixtures' words. tests/data/bench is left out: its texts are sentences of the tiny corpus, and its only
    words of its own are numeric ids, which no text holds (adding them would re-draw the tiny models' weights)."""
    words: set[str] = set()
    bench = REPO / "tests" / "data" / "bench"
    for path in sorted(p for p in (REPO / "tests" / "data").rglob("*.json*") if bench not in p.parents):
        words |= set(re.findall(r"[a-z0-9]+", path.read_text().lower()))
    return sorted(words)


def build_tiny_bert(folder: Path) -> None:
    """A 2-layer, 32-wide BERT with a vocabulary of the fixtures' words, randomly initialised with a fixed seed."""
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *fixture_words()]
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


def build_tiny_llama(folder: Path) -> None:
    """A 2-layer, 32-wide Llama (4 query heads sharing 2 key/value heads) with a word-level tokenizer of the
    fixtures' words (lower-cased, punctuation split off), randomly initialised with a fixed seed."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["<pad>", "<unk>", "<s>", "</s>", *fixture_words()]
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    words.normalizer = normalizers.Lowercase()
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


SUBPROCESS_HELPERS = {"launch", "launch_command", "subprocess"}  # launch.py, or a `python -m` tool, as a user runs it
SLOW_FIXTURES = {"mlflow_server", "slurm"}  # start a server or a cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fast tier (`pytest -m "not slow"`) leaves out every test that runs a subprocess (launch.py or a
    `python -m` tool, itself or through a helper of the tests) or needs a server, found from the code and fixtures,
    so a new test of that kind is tiered without a mark; other slow tests carry @pytest.mark.slow themselves."""
    for item in items:
        function = getattr(item, "function", None)
        if (function is not None and _runs_launch(function)) or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _runs_launch(function: Any, depth: int = 3) -> bool:
    """`function`, or a function of the tests that it calls (to `depth`), names a subprocess helper."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    if SUBPROCESS_HELPERS & set(code.co_names):
        return True
    called = (function.__globals__.get(name) for name in code.co_names)
    helpers = [f for f in called if callable(f) and getattr(f, "__module__", "").startswith("tests.")]
    return depth > 0 and any(_runs_launch(helper, depth - 1) for helper in helpers)


@pytest.fixture(scope="session", autouse=True)
def tiny_bert() -> Path:
    folder = Path(os.environ["RETRIEVAL_EXP_TINY_MODEL"])
    if not (folder / "config.json").exists():
        build_tiny_bert(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def tiny_llama() -> Path:
    folder = Path(os.environ["RETRIEVAL_EXP_TINY_LLAMA"])
    if not (folder / "config.json").exists():
        build_tiny_llama(folder)
    return folder


def compose_config(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """The real conf/ composed with the tests' extra options (tiny_bert, tiny) on the search path."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        search_path = f"hydra.searchpath=[file://{TEST_CONF}]"
        return compose("config", overrides=[search_path, *overrides], return_hydra_config=return_hydra_config)


def run_recipe(workdir: Path, *overrides: str, tiny: bool = True) -> dict[str, float]:
    """The recipe in this process, on the config `launch` would compose (tracking into `workdir`, output in
    workdir/run): for run-contract tests where a subprocess is not the point. Bad input raises UserError."""
    from retrieval_exp.experiment import run

    command = launch_command(workdir, *overrides, tiny=tiny)[2:]  # the overrides after `python launch.py`
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=command, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(workdir / "run")
    HydraConfig.instance().set_config(cfg)
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return run(cfg)


def launch(
    workdir: Path, *overrides: str, multirun: bool = False, env: dict[str, str] | None = None, tiny: bool = True
) -> subprocess.CompletedProcess[str]:
    """`python launch.py` from the repository root, tracking into `workdir`."""
    return subprocess.run(
        launch_command(workdir, *overrides, multirun=multirun, tiny=tiny),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},  # a native crash prints its Python stacks
        timeout=600,
    )


def launch_command(workdir: Path, *overrides: str, multirun: bool = False, tiny: bool = True) -> list[str]:
    """The command line of `launch`."""
    return [
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
