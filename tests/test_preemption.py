"""Stop signals during training: recorded, not acted on, until the step boundary; then handed to their handler."""

from __future__ import annotations

import os
import signal

import pytest

from retrieval_exp.training.preemption import DeferredStop, Preempted


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_a_stop_signal_waits_for_the_step_boundary_then_reaches_its_handler(signum: int) -> None:
    delivered: list[int] = []
    previous = signal.signal(signum, lambda received, frame: delivered.append(received))  # as submitit's handler
    try:
        with DeferredStop() as stop:
            os.kill(os.getpid(), signum)
            assert stop.signum == signum and delivered == []  # training goes on to the end of its step
        with pytest.raises(SystemExit) as exited:
            Preempted(signum, step=7).hand_over()
        assert delivered == [signum] and exited.value.code == 128 + signum
    finally:
        signal.signal(signum, previous)


def test_the_message_names_the_signal_and_the_step() -> None:
    assert str(Preempted(signal.SIGUSR2, 12)) == "SIGUSR2 at step 12; the checkpoint resumes it"
