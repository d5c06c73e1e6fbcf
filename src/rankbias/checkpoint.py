"""Resumable training: the whole state of an ensemble at a step boundary, written atomically.

A checkpoint holds everything the next step depends on: the weights and batch-norm buffers, the
alive mask, every member's data-order generator, the current epoch's permutation and the position
in it, the running epoch loss and the history so far. A run resumed from it takes exactly the
steps an uninterrupted run takes and ends bit-identical on the same device. It lives outside
Snakemake's declared outputs (Snakemake deletes those of a failed job, a retried or requeued job
finds the checkpoint still there) and is tied by hash to the job spec, the prepared data's arrays
and the package's code (`job_digest`), so a changed config, data set or code never resumes a stale
run. The file is one line of JSON holding that hash, then the state as `torch.save` wrote it: the
hash is compared before anything is unpickled, and the state is read with `weights_only=True`
(tensors, numbers, strings, lists and dicts only), so a foreign file never runs code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rankbias import stop_signals
from rankbias.provenance import source_digest
from rankbias.stop_signals import Preempted
from rankbias.storage import atomic_path

CHECKPOINT = "checkpoint.pt"
SECONDS_ENV = "RANKBIAS_CHECKPOINT_SECONDS"
DEFAULT_SECONDS = 60.0


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """The prepared data's content: every array's name, dtype, shape and bytes (a data set of the
    same name and size but other noise, split or scaling differs)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def spec_digest(spec: dict, data_sha256: str = "") -> str:
    """What a checkpoint must match: every key of the job spec except where it runs, the
    prepared data (`array_digest`) and the code that trains it."""
    relevant = {key: value for key, value in spec.items() if key != "device"}
    text = json.dumps(relevant, sort_keys=True) + data_sha256 + source_digest()
    return hashlib.sha256(text.encode()).hexdigest()


def default_seconds() -> float:
    """Checkpoint interval from $RANKBIAS_CHECKPOINT_SECONDS (not a config key: changing how
    often a job saves must not make Snakemake retrain it)."""
    text = os.environ.get(SECONDS_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_SECONDS
    except ValueError:
        raise ValueError(f"${SECONDS_ENV}: {text!r} is not a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"${SECONDS_ENV}: {text!r} must be >= 0")
    return seconds


class Checkpointer:
    """Saves a job's training state every `every_s` seconds and when a stop signal arrives
    (recorded by rankbias.stop_signals, whose handlers the training command installs first).

    `stop_after` (tests) makes the n-th save behave like a received SIGTERM, so a test can stop
    training at any step without a subprocess.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every_s: float = DEFAULT_SECONDS,
        stop_after: int | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.path = Path(directory) / CHECKPOINT
        self.every_s = every_s
        self.stop_after = stop_after
        self.log = log
        self.saves = 0
        self.requested: int | None = None  # a test's stop (stop_after)
        self._last = time.monotonic()

    def stop_signal(self) -> int | None:
        return self.requested if self.requested is not None else stop_signals.received()

    def due(self) -> bool:
        """Host-only test (no device sync): is it time to save?"""
        return self.stop_signal() is not None or time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any], digest: str, where: str) -> None:
        """Write `state` atomically behind its job's `digest` (`spec_digest`); raise Preempted
        when a stop was requested."""
        import torch  # here, not at module level: the CLI's fetch and prepare need no torch

        payload = io.BytesIO()
        torch.save(state, payload)
        with atomic_path(self.path) as tmp:
            header = json.dumps({"job_sha256": digest}).encode()
            tmp.write_bytes(header + b"\n" + payload.getvalue())
        self._last = time.monotonic()
        self.saves += 1
        if self.stop_after is not None and self.saves >= self.stop_after:
            self.requested = signal.SIGTERM
        if (signum := self.stop_signal()) is not None:
            raise Preempted(signum, f"after saving a checkpoint at {where}")

    def load(self, digest: str) -> dict[str, Any] | None:
        """The saved state if it exists, belongs to the job of this `digest` and reads; else None
        (logged). The digest is compared before a byte of the state is unpickled."""
        import torch

        if not self.path.is_file():
            return None
        try:
            header, payload = self.path.read_bytes().split(b"\n", 1)
            saved_digest = json.loads(header)["job_sha256"]
        except (ValueError, KeyError, TypeError) as error:
            self.log(f"checkpoint {self.path} is unreadable ({error}); starting afresh")
            return None
        if saved_digest != digest:
            self.log(
                f"checkpoint {self.path} belongs to another job spec, data set or code; "
                "starting afresh"
            )
            return None
        try:
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as error:  # an unreadable checkpoint costs time, never correctness
            self.log(f"checkpoint {self.path} is unreadable ({error}); starting afresh")
            return None

    def clear(self) -> None:
        """Remove the checkpoint once the job's outputs are written."""
        shutil.rmtree(self.path.parent, ignore_errors=True)
