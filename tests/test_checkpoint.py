"""Resumable training: a run stopped anywhere and resumed ends bit-identical to an unbroken one.

In-process tests stop training at chosen saves (the Checkpointer's `stop_after`, which acts like a
SIGTERM); the subprocess tests kill `python -m rankbias train` with SIGKILL at random moments and
restart it until it finishes.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import train_command
from test_train import MEMBERS, spec_for, toy_arrays

from rankbias import checkpoint, data
from rankbias.checkpoint import CHECKPOINT, Checkpointer, array_digest, spec_digest
from rankbias.stop_signals import Preempted
from rankbias.storage import read_json
from rankbias.train import train_ensemble

KILL_SEED = int(os.environ.get("RANKBIAS_KILL_SEED", "20261126"))  # logged with every kill point


def assert_same_result(resumed, reference) -> None:
    assert resumed.final.keys() == reference.final.keys()
    for name in reference.final:
        assert np.array_equal(resumed.final[name], reference.final[name]), name
    pd.testing.assert_frame_equal(resumed.history, reference.history, check_exact=True)
    assert np.array_equal(resumed.diverged_epoch, reference.diverged_epoch)


def train_with_stops(spec: dict, arrays: dict, directory: Path, stops: list[int]):
    """Train, stopping after `stops[i]` saves in the i-th run, then once more to the end."""
    for stop_after in stops:
        checkpointer = Checkpointer(directory, every_s=0, stop_after=stop_after, log=lambda _: None)
        with pytest.raises(Preempted):
            train_ensemble(spec, arrays, log=lambda _: None, checkpointer=checkpointer)
        assert (directory / CHECKPOINT).is_file()
    checkpointer = Checkpointer(directory, every_s=0, log=lambda _: None)
    return train_ensemble(spec, arrays, log=lambda _: None, checkpointer=checkpointer)


@pytest.mark.parametrize(
    "loss,depth,batch_norm,wd_function",
    [("mse", 2, False, "input_norm"), ("ce", 3, True, "constant")],
)
def test_stopped_at_any_step_and_resumed_equals_uninterrupted(
    tmp_path, loss, depth, batch_norm, wd_function
):
    arrays = toy_arrays(loss)
    members = [{**m, "wd_function": wd_function} for m in MEMBERS]
    spec = spec_for(members, loss, depth=depth, batch_size=8, epochs=3, dtype="float32")
    spec["batch_norm"] = batch_norm
    reference = train_ensemble(spec, arrays, log=lambda _: None)
    steps = 3 * -(-60 // 8)  # 8 steps per epoch: stops at epoch ends, mid-epoch, the last step
    for stops in ([1], [7], [8], [9, 5], [steps], [2, 2, 2, 2]):
        directory = tmp_path / "-".join(map(str, stops))
        resumed = train_with_stops(spec, arrays, directory, stops)
        assert_same_result(resumed, reference)
        assert len(resumed.resumed) == len(stops)


def test_a_diverged_member_stays_diverged_across_a_resume(tmp_path):
    arrays = toy_arrays("mse")
    members = [*MEMBERS[:2], {"lr": 1e4, "weight_decay": 0.0, "seed": 3}]
    spec = spec_for(members, "mse", epochs=3)
    reference = train_ensemble(spec, arrays, log=lambda _: None)
    assert reference.diverged_epoch[2] >= 1 and (reference.diverged_epoch[:2] == -1).all()
    assert_same_result(train_with_stops(spec, arrays, tmp_path, [4, 10]), reference)


def test_a_checkpoint_of_another_spec_or_unreadable_is_not_resumed(tmp_path):
    arrays = toy_arrays("mse")
    spec = spec_for(MEMBERS[:2], "mse", epochs=2)
    reference = train_ensemble(spec, arrays, log=lambda _: None)
    other = {**spec, "members": [{**m, "lr": m["lr"] * 2} for m in spec["members"]]}
    assert spec_digest(other) != spec_digest(spec)
    assert spec_digest({**spec, "device": "cuda"}) == spec_digest(spec)  # where it runs: same job
    messages: list[str] = []
    stopped = Checkpointer(tmp_path, every_s=0, stop_after=3, log=messages.append)
    with pytest.raises(Preempted):
        train_ensemble(other, arrays, log=lambda _: None, checkpointer=stopped)
    fresh = Checkpointer(tmp_path, every_s=1e9, log=messages.append)
    assert_same_result(
        train_ensemble(spec, arrays, checkpointer=fresh, log=lambda _: None), reference
    )
    assert "belongs to another job spec, data set or code" in messages[-1]
    (tmp_path / CHECKPOINT).write_bytes(b"truncated")
    assert_same_result(
        train_ensemble(spec, arrays, checkpointer=fresh, log=lambda _: None), reference
    )
    assert "unreadable" in messages[-1]


def test_a_checkpoint_trained_on_other_data_is_not_resumed(tmp_path):
    """Same data set name, spec and size, other values (noise, split, scaling): a fresh start,
    not a resume from weights trained on the old data."""
    spec = spec_for(MEMBERS[:2], "mse", epochs=2)
    old_data, new_data = toy_arrays("mse", seed=0), toy_arrays("mse", seed=1)
    assert array_digest(old_data) != array_digest(new_data)
    messages: list[str] = []
    stopped = Checkpointer(tmp_path, every_s=0, stop_after=3, log=messages.append)
    with pytest.raises(Preempted):
        train_ensemble(spec, old_data, log=lambda _: None, checkpointer=stopped)
    fresh = Checkpointer(tmp_path, every_s=1e9, log=messages.append)
    resumed = train_ensemble(spec, new_data, checkpointer=fresh, log=lambda _: None)
    assert resumed.resumed == [] and "data set" in messages[-1]
    assert_same_result(resumed, train_ensemble(spec, new_data, log=lambda _: None))


class Planted:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_is_checked_before_it_is_unpickled_and_never_runs_code(tmp_path, monkeypatch):
    import torch

    marker = tmp_path / "code-ran"
    checkpointer = Checkpointer(tmp_path / "job", every_s=0, log=lambda _: None)
    checkpointer.path.parent.mkdir()
    payload = io.BytesIO()
    torch.save({"state": Planted(marker)}, payload)
    for digest in ("another job", "this job"):  # a foreign hash, then even the right one
        header = json.dumps({"job_sha256": digest}).encode()
        checkpointer.path.write_bytes(header + b"\n" + payload.getvalue())
        assert checkpointer.load("this job") is None
        assert not marker.exists()
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    checkpointer.path.write_bytes(b'{"job_sha256": "another job"}\n' + payload.getvalue())
    assert checkpointer.load("this job") is None and calls == []  # not even opened by torch


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory) -> Path:
    spec = {
        "source": "teacher",
        "rank": 2,
        "input_dim": 10,
        "teacher_width": 16,
        "train_size": 600,
        "test_size": 200,
        "seed": 0,
    }
    arrays, info = data.prepare(spec, None)
    npz = tmp_path_factory.mktemp("data") / "teacher.npz"
    data.write_prepared(arrays, info, str(npz), str(npz.with_suffix(".json")))
    return npz


PROCESS_SPEC = {
    **spec_for(
        [{**m, "wd_function": "constant"} for m in MEMBERS],
        "mse",
        epochs=12,
        batch_size=4,
        dtype="float32",
    ),
    "width": 32,
    "experiment": "kill",
    "group": "teacher",
    "dataset": "teacher",
    "log_every": 3,
}


def read_outputs(out: Path) -> dict:
    arrays = {}
    for name in ("init", "final"):
        with np.load(out / f"{name}.npz") as handle:
            arrays.update({f"{name}/{key}": handle[key] for key in handle.files})
    return {"arrays": arrays, "history": (out / "history.csv").read_text()}


def assert_same_outputs(out: Path, reference: dict) -> None:
    got = read_outputs(out)
    assert got["arrays"].keys() == reference["arrays"].keys()
    for name, value in reference["arrays"].items():
        assert np.array_equal(got["arrays"][name], value), name
    assert got["history"] == reference["history"]


KILLS = 8


READY_S = 120  # start-up (imports, data) may be slow on a loaded machine; never a fixed sleep


class TrainingProcess:
    """`python -m rankbias train` in the background, its output read line by line as it comes,
    so a test acts on what the process says it is doing, never after a fixed sleep."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()
        with self._new_line:
            self.lines.append("")  # end of output
            self._new_line.notify_all()

    def wait_for_line(self, *prefixes: str, timeout: float = READY_S) -> str:
        """The first line (timestamp stripped) that starts with one of `prefixes`."""

        def found() -> str | None:
            for line in self.lines:
                if line.split("] ", 1)[-1].startswith(prefixes):
                    return line
            return "" if self.lines and self.lines[-1] == "" else None

        with self._new_line:
            line = self._new_line.wait_for(found, timeout=timeout)
        if not line:
            self.process.kill()
            raise AssertionError(
                f"no line starting with {prefixes} within {timeout:g} s "
                f"(exit code {self.process.poll()}); output so far:\n{''.join(self.lines)}"
            )
        return line

    def finish(self, timeout: float | None = None) -> str:
        """Wait for the exit (subprocess.TimeoutExpired after `timeout`); the whole output."""
        self.process.wait(timeout=timeout)
        self._reader.join()
        return "".join(self.lines)


TRAINING_STARTED = ("training ", "resumed from")  # train_ensemble's first line after set-up


def test_sigkill_at_random_points_then_restart_is_bit_identical(tmp_path, teacher_data):
    """Kill the training process with SIGKILL at random moments of its training and restart it
    each time until it finishes (a trial); trials go on until KILLS kills have landed. Every
    trial's outputs must equal an uninterrupted run's."""
    subprocess.run(train_command(PROCESS_SPEC, teacher_data, tmp_path / "ref", None), check=True)
    training_s = read_json(tmp_path / "ref" / "result.json")["wall_time_s"]
    reference = read_outputs(tmp_path / "ref")
    rng = random.Random(KILL_SEED)
    kills: list[float] = []
    resumed_after_kill = 0
    for trial in range(KILLS):
        out, checkpoints = tmp_path / f"trial{trial}", tmp_path / f"checkpoints{trial}"
        while True:
            job = TrainingProcess(train_command(PROCESS_SPEC, teacher_data, out, checkpoints))
            job.wait_for_line(*TRAINING_STARTED)
            delay = rng.uniform(0, training_s) if len(kills) < KILLS else None
            try:
                log = job.finish(timeout=delay)
            except subprocess.TimeoutExpired:
                job.process.kill()  # SIGKILL: no handler runs, nothing is flushed
                job.finish()
                kills.append(round(delay, 2))
                continue
            assert job.process.returncode == 0, log
            break
        assert_same_outputs(out, reference)
        resumed_after_kill += len(read_json(out / "result.json")["resumed_at"])
        assert not checkpoints.exists()  # cleared once the outputs are written
        if len(kills) >= KILLS:
            break
    print(
        f"SIGKILL at {kills} s into training (seed {KILL_SEED}, uninterrupted training "
        f"{training_s:.1f} s); {resumed_after_kill} restarts resumed from a checkpoint"
    )
    assert len(kills) == KILLS and resumed_after_kill >= KILLS // 2


def test_sigterm_saves_and_exits_then_resumes(tmp_path, teacher_data):
    reference_out = tmp_path / "ref"
    subprocess.run(train_command(PROCESS_SPEC, teacher_data, reference_out, None), check=True)
    out, checkpoints = tmp_path / "stopped", tmp_path / "checkpoints"
    command = train_command(PROCESS_SPEC, teacher_data, out, checkpoints)
    command[command.index("--checkpoint-seconds") + 1] = "1000"  # only the signal saves
    job = TrainingProcess(command)
    job.wait_for_line(*TRAINING_STARTED)
    job.process.send_signal(signal.SIGTERM)  # 1,800 steps are still to come
    log = job.finish(timeout=READY_S)
    assert job.process.returncode == 128 + signal.SIGTERM, log
    assert "after saving a checkpoint at epoch" in log and (checkpoints / CHECKPOINT).is_file()
    assert not (out / "final.npz").exists()
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "resumed from" in finished.stdout
    assert_same_outputs(out, read_outputs(reference_out))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_before_training_exits_with_nothing_trained(tmp_path, teacher_data, stop):
    """The handlers come first: a signal during the imports and the data load (seconds of
    start-up) ends the job with 128 + signal and says that nothing was trained."""
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    job = TrainingProcess(train_command(PROCESS_SPEC, teacher_data, out, checkpoints))
    job.wait_for_line("rankbias train (pid")  # the very first line: torch is not imported yet
    job.process.send_signal(stop)
    log = job.finish(timeout=READY_S)
    assert job.process.returncode == 128 + stop, log
    assert f"stopped by signal {stop} before training started: nothing was trained yet" in log
    assert "training 4 members" not in log
    assert not checkpoints.exists() and not out.exists()


def test_without_a_checkpoint_directory_sigterm_ends_training_at_once(tmp_path, teacher_data):
    job = TrainingProcess(train_command(PROCESS_SPEC, teacher_data, tmp_path / "out", None))
    job.wait_for_line(*TRAINING_STARTED)
    job.process.send_signal(signal.SIGTERM)
    log = job.finish(timeout=READY_S)
    assert job.process.returncode == -signal.SIGTERM, log  # the default action: nothing to save
    assert not (tmp_path / "out" / "final.npz").exists()


def test_a_checkpoint_of_other_code_is_not_resumed(monkeypatch):
    spec = spec_for(MEMBERS[:1], "mse")
    before = spec_digest(spec)
    monkeypatch.setattr(checkpoint, "source_digest", lambda: "edited train.py")
    assert spec_digest(spec) != before
