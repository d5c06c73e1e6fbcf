"""Stop signals of a training job, caught from its first instruction to its last.

SLURM preempts with SIGTERM and warns of the time limit with SIGUSR1 (`--signal`). A job must
answer either with "checkpoint saved, exit 128 + signal", whenever it arrives: while Python is
still importing torch, while the data load, during training, while the outputs are written. So
the handlers are installed before anything heavy is imported (`python -m rankbias train` does it
first) and stay for the life of the process; they only record the signal, and the job acts on it
at a point where acting is safe (before training starts, or at a step boundary). This module
imports nothing but the standard library, so installing it costs nothing.
"""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(RuntimeError):
    """Training stopped on a signal (or a test's request); `where` says what was saved."""

    def __init__(self, signum: int, where: str) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by signal {signum} {where}")


class _Received:
    signum: int | None = None


def _record(signum: int, _frame: Any) -> None:
    _Received.signum = signum


def catch() -> None:
    """Record SIGTERM/SIGUSR1 instead of dying of them, for the rest of the process."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _record)


def release() -> None:
    """Give SIGTERM/SIGUSR1 their default action back (a job with nothing to save dies of them
    at once); a signal recorded before stays recorded."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def received() -> int | None:
    """The stop signal received so far, if any."""
    return _Received.signum


def forget() -> None:
    """Clear a recorded signal (tests that train several times in one process)."""
    _Received.signum = None


def stop_if_received(where: str) -> None:
    """Raise Preempted now if a stop signal has arrived (before training: nothing to save)."""
    if _Received.signum is not None:
        raise Preempted(_Received.signum, where)
