"""One process per run directory: a live holder refuses a second launch in one line; a dead one's lock is taken."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from retrieval_exp.tracking.run_lock import LOCK_FILE, STALE_S, AlreadyRunning, run_lock
from tests.conftest import launch

HOST = socket.gethostname()


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_the_lock_is_held_for_the_block_and_refuses_a_second_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} {HOST}"
        with pytest.raises(AlreadyRunning, match=rf"^already running in {tmp_path} \(pid {os.getpid()} on {HOST}\)$"):
            with run_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.parametrize(
    ("holder", "age_s", "taken"),
    [
        (f"{dead_pid()} {HOST}", 0, True),  # this host, its process gone (kill -9, OOM)
        (f"1 {HOST}", 0, False),  # this host, alive
        ("1 another-node", 0, False),  # another host, touched recently: assumed alive
        ("1 another-node", STALE_S + 60, True),  # another host, silent past STALE_S: the node is gone
        ("", 0, True),  # half-written by a process that died creating it
    ],
)
def test_a_stale_lock_is_taken_and_a_live_one_is_not(tmp_path: Path, holder: str, age_s: float, taken: bool) -> None:
    lock = tmp_path / LOCK_FILE
    lock.write_text(holder)
    os.utime(lock, (time.time() - age_s, time.time() - age_s))
    if taken:
        with run_lock(tmp_path):
            assert lock.read_text() == f"{os.getpid()} {HOST}"
    else:
        with pytest.raises(AlreadyRunning):
            with run_lock(tmp_path):
                pass
        assert lock.read_text() == holder  # the holder's lock is left as it was


def test_a_second_launch_into_a_running_directory_is_one_line_and_touches_no_mlflow_run(tmp_path: Path) -> None:
    with subprocess.Popen(["sleep", "120"]) as running:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / LOCK_FILE).write_text(f"{running.pid} {HOST}")
        try:
            done = launch(tmp_path, "trainer.max_steps=2")
        finally:
            running.kill()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line == f"error: already running in {tmp_path / 'run'} (pid {running.pid} on {HOST})"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run" / "config.yaml").exists()
