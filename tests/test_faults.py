"""Fault injection on the whole workflow: killed jobs resume exactly, a second run is locked out,
a full disk and a corrupt data file fail cleanly, a diverging member is excluded with its reason,
and two runs give identical numbers.

Every run targets results/claims.json of tests/configs/faults.yaml (training, measurement, tables
and verdicts; the figures and report are the tiny end-to-end test's business).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    BIN,
    ROOT,
    pause_training_with_a_checkpoint,
    project,
    snakemake,
    training_processes,
    unavailable,
    wait_for,
)

from rankbias import storage

FAULTS = ROOT / "tests" / "configs" / "faults.yaml"
TARGET = "results/claims.json"
GROUP = "faults/teacher_rank2_L2_H32_B4_j0"
CHECKPOINT = Path("results/checkpoints") / GROUP / "checkpoint.pt"
VOLATILE = {
    "wall_time_s",
    "steps_time_s",
    "resumed_at",
    "npz_sha256",
    "memory",
}  # run times, resume points, zip timestamps, measured peak memory

pytestmark = pytest.mark.workflow


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """A snakemake run in the background, in its own process group (to kill it like a node);
    SLURM_CONF as conftest.snakemake sets it."""
    env = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    env["SLURM_CONF"] = os.devnull
    command = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), *args]
    return subprocess.Popen(
        [*command, "--directory", str(workdir)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def numbers(workdir: Path) -> dict[str, object]:
    """Every number the run produced, by file: arrays, tables, JSON without volatile keys."""
    found: dict[str, object] = {}
    for path in sorted((workdir / "results").rglob("*")):
        name = str(path.relative_to(workdir))
        if path.suffix == ".npz":
            with np.load(path) as handle:
                found[name] = {key: handle[key] for key in handle.files}
        elif path.suffix == ".csv":
            found[name] = path.read_text()
        elif path.suffix == ".json" and "benchmarks" not in path.parts:
            found[name] = {
                k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE
            }
    return found


def assert_same_numbers(run: Path, reference: Path) -> None:
    got, expected = numbers(run), numbers(reference)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, dict) and name.endswith(".npz"):
            assert value.keys() == got[name].keys(), name
            for key in value:
                assert np.array_equal(value[key], got[name][key], equal_nan=True), (name, key)
        else:
            assert got[name] == value, name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The fault config run once without any fault."""
    workdir = project(tmp_path_factory.mktemp("reference"), FAULTS)
    snakemake(workdir, "--cores", "2", TARGET)
    return workdir


def test_two_runs_give_identical_numbers(reference, tmp_path):
    workdir = project(tmp_path, FAULTS)
    snakemake(workdir, "--cores", "2", TARGET)
    assert len(numbers(reference)) >= 10  # data, runs, metrics, tables, verdicts
    assert_same_numbers(workdir, reference)


def test_a_diverging_member_is_recorded_and_excluded_with_its_reason(reference):
    table = pd.read_csv(reference / "results" / "tables" / "faults.csv")
    first = table[table["layer"] == 1]
    diverged = first[first["lr"] == 50.0]
    assert len(diverged) == 2 and (diverged["status"] == "diverged").all()
    assert diverged["status_reason"].str.contains("non-finite mini-batch loss").all()
    assert (first[first["lr"] < 1]["status"] == "ok").all()
    verdicts = json.loads((reference / "results" / "claims.json").read_text())
    a1 = next(claim for claim in verdicts["claims"] if claim["id"] == "A1")
    assert len(a1["excluded"]) == 2
    for member in a1["excluded"]:
        assert "lr=50" in member["setting"] and member["status"] == "diverged"
        assert "non-finite" in member["reason"]


def test_killed_job_is_retried_from_its_checkpoint_while_a_second_run_is_locked_out(
    reference, tmp_path, monkeypatch
):
    monkeypatch.setenv("RANKBIAS_CHECKPOINT_SECONDS", "0")  # save at every step
    workdir = project(tmp_path, FAULTS)
    main = start_snakemake(workdir, "--cores", "2", "--retries", "1", TARGET)
    pid = pause_training_with_a_checkpoint(workdir, CHECKPOINT)
    os.kill(main.pid, signal.SIGSTOP)  # Snakemake holds its lock and cannot release it
    os.kill(pid, signal.SIGKILL)
    try:
        second = snakemake(workdir, "--cores", "1", TARGET, check=False)
    finally:
        os.kill(main.pid, signal.SIGCONT)  # it sees the killed job and retries it
    assert second.returncode != 0
    assert "Directory cannot be locked" in second.stdout + second.stderr
    output = main.communicate(timeout=600)[0]
    assert main.returncode == 0, output
    log = (workdir / "logs" / "train" / f"{GROUP}.log").read_text()
    assert "resumed from" in log, log
    assert not (workdir / CHECKPOINT).parent.exists()
    assert_same_numbers(workdir, reference)


def test_killed_workflow_resumes_after_unlock_with_rerun_incomplete(
    reference, tmp_path, monkeypatch
):
    monkeypatch.setenv("RANKBIAS_CHECKPOINT_SECONDS", "0")
    workdir = project(tmp_path, FAULTS)
    main = start_snakemake(workdir, "--cores", "2", TARGET)
    pause_training_with_a_checkpoint(workdir, CHECKPOINT)
    os.killpg(main.pid, signal.SIGKILL)  # Snakemake and its jobs at once, as a lost node
    main.communicate()
    wait_for(lambda: not training_processes(workdir), "the killed job to go")
    refused = snakemake(workdir, "--cores", "2", TARGET, check=False)
    assert "Directory cannot be locked" in refused.stdout + refused.stderr
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete", TARGET)
    assert "resumed from" in (workdir / "logs" / "train" / f"{GROUP}.log").read_text()
    assert_same_numbers(workdir, reference)


def test_corrupt_prepared_data_is_refused_by_the_jobs_that_read_it(tmp_path):
    workdir = project(tmp_path, FAULTS)
    snakemake(workdir, "--cores", "1", "results/data/teacher_rank2.npz")
    prepared = workdir / "results" / "data" / "teacher_rank2.npz"
    payload = bytearray(prepared.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    prepared.write_bytes(bytes(payload))
    failed = snakemake(workdir, "--cores", "1", TARGET, check=False)
    assert failed.returncode != 0
    log = (workdir / "logs" / "train" / f"{GROUP}.log").read_text()
    assert f"{prepared.relative_to(workdir)}: SHA-256" in log and "recorded in" in log
    assert not (workdir / "results" / "runs" / GROUP / "final.npz").exists()


def test_a_writer_that_runs_out_of_space_leaves_no_file(tmp_path, monkeypatch):
    def full_disk(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    target = tmp_path / "final.npz"
    with pytest.raises(OSError, match="No space left"):
        storage.write_npz(target, {"W1": np.ones(3)})
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@pytest.fixture
def small_results_disk(tmp_path):
    """results/ on a 112 kB tmpfs: room for the prepared data (93 kB), not for what follows."""
    workdir = project(tmp_path, FAULTS)
    results = workdir / "results"
    results.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=112k", "tmpfs", str(results)], capture_output=True
    )
    if mounted.returncode != 0:
        unavailable(
            "FULL_DISK",
            f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}",
        )
    yield workdir
    subprocess.run(["umount", "-l", str(results)], check=False)


def test_full_disk_on_results_fails_cleanly_and_a_rerun_completes(small_results_disk, reference):
    workdir = small_results_disk
    failed = snakemake(workdir, "--cores", "1", TARGET, check=False)
    assert failed.returncode != 0
    logs = "".join(p.read_text() for p in (workdir / "logs").rglob("*.log"))
    assert "No space left on device" in logs
    leftovers = [p for p in (workdir / "results").rglob("*") if p.name.endswith(".part")]
    assert leftovers == []
    for path in (workdir / "results").rglob("*"):  # whatever exists is complete
        if path.suffix == ".npz":
            with np.load(path) as handle:
                assert all(handle[key].size >= 0 for key in handle.files)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
    subprocess.run(["umount", "-l", str(workdir / "results")], check=True)
    snakemake(workdir, "--cores", "2", TARGET)
    assert_same_numbers(workdir, reference)
