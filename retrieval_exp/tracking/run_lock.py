"""One process per run directory.

Run directories are named by the config, so two identical launches (a double Enter, a requeue while the old job
still runs, two sweeps sharing a job) would write into one directory and one MLflow run. The first takes
`run.lock` (created exclusively, holding its pid and host, touched every `HEARTBEAT_S` while it runs); the second
is refused in one line. A lock whose process is gone is stale and taken over: on the same host when its pid no
longer exists, on any host when it has not been touched for `STALE_S` (a node lost with its job).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from retrieval_exp.errors import UserError

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0


class AlreadyRunning(UserError):
    """Another live process holds the run directory."""


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir`'s lock for the block; AlreadyRunning if a live process holds it."""
    path = out_dir / LOCK_FILE
    owner = f"{os.getpid()} {socket.gethostname()}"
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _live_holder(path)
            if holder:
                pid, host = holder
                raise AlreadyRunning(f"already running in {out_dir} (pid {pid} on {host})") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    with os.fdopen(descriptor, "w") as file:
        file.write(owner)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(OSError):
            if path.read_text() == owner:
                path.unlink()


def _live_holder(path: Path) -> tuple[str, str] | None:
    """(pid, host) of the process holding the lock at `path`, or None when the lock is stale or gone."""
    try:
        pid, host = path.read_text().split()
        touched = path.stat().st_mtime
    except (OSError, ValueError):  # gone meanwhile, or half-written by a process that died creating it
        return None
    if time.time() - touched > STALE_S:
        return None
    if host == socket.gethostname() and not _exists(int(pid)):
        return None
    return pid, host


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(path)
