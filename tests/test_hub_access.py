"""The README's two commands in both worlds: HF_HUB_OFFLINE as the user set it, else offline exactly when the hub
cannot be reached (a machine without internet, its caches filled), online where it can."""

import os
import socket
import subprocess
from pathlib import Path

import pytest

from retrieval_exp.hub_access import decide_offline, hub_reachable
from tests.conftest import REPO, launch_command


def never_called(endpoint: str) -> bool:
    raise AssertionError("the hub is probed although HF_HUB_OFFLINE is set")


@pytest.mark.parametrize(("value", "offline"), [("1", True), ("0", False), ("TRUE", True)])
def test_the_users_setting_wins_and_the_hub_is_not_probed(value: str, offline: bool) -> None:
    environ = {"HF_HUB_OFFLINE": value}
    assert decide_offline(environ, never_called) is offline and environ == {"HF_HUB_OFFLINE": value}


def test_an_unreachable_hub_makes_the_run_offline() -> None:
    environ = {"HF_ENDPOINT": "https://hub.example"}
    probed: list[str] = []
    assert decide_offline(environ, lambda endpoint: probed.append(endpoint) or False) is True
    assert environ["HF_HUB_OFFLINE"] == "1" and probed == ["https://hub.example"]


def test_a_reachable_hub_leaves_downloads_on() -> None:
    environ: dict[str, str] = {}
    assert decide_offline(environ, lambda endpoint: True) is False and "HF_HUB_OFFLINE" not in environ


def test_the_probe_tells_a_listening_port_from_a_closed_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert hub_reachable(f"http://127.0.0.1:{port}")
    assert not hub_reachable(f"http://127.0.0.1:{port}", timeout=1)  # closed now


def test_without_the_variable_a_machine_without_the_hub_runs_from_its_cache(tmp_path: Path) -> None:
    environ = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    with socket.create_server(("127.0.0.1", 0)) as server:
        closed = server.getsockname()[1]
    environ |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HF_HOME": str(tmp_path / "empty-hf-home")}
    command = launch_command(tmp_path, "experiment=zero_shot", tiny=False)  # the environment without the variable
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environ, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "cannot be reached: models come from the cache (HF_HUB_OFFLINE=1)" in done.stderr
    assert "'sentence-transformers/all-MiniLM-L6-v2' is not in the Hugging Face cache" in done.stderr
