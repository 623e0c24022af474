"""Stopping at an optimizer-step boundary when the cluster asks a job to stop.

SLURM sends SIGTERM when it preempts, requeues or cancels a job, and submitit's signal (SIGUSR2 by default;
SIGUSR1 on sites that set SUBMITIT_PREEMPT_SIGNAL=USR1) shortly before the time limit. While training, all three
are only recorded: the loop finishes the optimizer step it is in, saves its checkpoint and raises `Preempted`, so
the resumed job neither loses nor repeats a step. `Preempted.hand_over` then gives the signal to whoever handled it
before (submitit requeues the job on its signal) and exits. Outside training (loading, encoding, evaluating) there
is nothing to save: `terminate_raises` turns a SIGTERM into `Terminated`, so the run is recorded as KILLED on its way
out instead of being left RUNNING by a process that died without cleaning up.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(BaseException):
    """The run stopped on a signal after saving its state: not a failure. A BaseException (like KeyboardInterrupt),
    so that code catching Exception, Hydra's job runner included, does not record it as one."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}; the checkpoint resumes it")
        self.signum, self.step = signum, step

    def hand_over(self) -> None:
        """Deliver the signal to its handler (submitit's requeue for its own signal) and exit 128 + signum."""
        handler = signal.getsignal(self.signum)
        if callable(handler):
            handler(self.signum, None)
        print(f"stopped: {self}", file=sys.stderr)
        raise SystemExit(128 + self.signum)


class Terminated(BaseException):
    """SIGTERM outside training: the run stops where it is, with nothing saved to resume from."""

    def __init__(self) -> None:
        super().__init__("SIGTERM outside training; nothing to resume from")


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` where it would otherwise end the process at once (Python's
    default handler); a handler someone else set (submitit's) is left alone."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class DeferredStop:
    """Within the block, STOP_SIGNALS only set `signum`; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}  # the handlers to put back

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> DeferredStop:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            self._previous = {s: signal.signal(s, self._record) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
