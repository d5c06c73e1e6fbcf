"""The SLURM profile against a real SLURM: a single-node cluster with two fake GPUs
(../shared/tools/slurm-single-node.sh: slurmctld, slurmd, slurmdbd + MariaDB for sacct), driven by
snakemake-executor-plugin-slurm's real sbatch and sacct calls.

The profile used is profiles/slurm with only its site placeholders filled in for the test cluster
(partition `debug`, no account, memory that fits the node, 2 s before the first status check).
Skipped, with the reason, where SLURM cannot be started (not root, no script); `.ci/run` sets
RANKBIAS_REQUIRE_SLURM=1, which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    BIN,
    ROOT,
    TINY,
    pause_training_with_a_checkpoint,
    project,
    snakemake,
    training_processes,
    unavailable,
    wait_for,
)

from rankbias import data, memory, plan

SCRIPT = ROOT.parent / "shared" / "tools" / "slurm-single-node.sh"
FAULTS = ROOT / "tests" / "configs" / "faults.yaml"
GROUP = "faults/teacher_rank2_L2_H32_B4_j0"
CHECKPOINT = Path("results/checkpoints") / GROUP / "checkpoint.pt"
TIMEOUT_S = 900

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node SLURM with 2 fake GPUs for this module; stopped afterwards."""
    if os.geteuid() != 0:
        unavailable("SLURM", "starting SLURM daemons needs root")
    if not SCRIPT.is_file():
        unavailable("SLURM", f"no {SCRIPT} (../shared beside the checkout)")
    env = {**os.environ, "FAKE_GPUS": "2", "WITH_DBD": "1"}
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0:
        unavailable("SLURM", f"SLURM did not start:\n{started.stderr[-2000:]}")
    yield
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=300)


def cluster_profile(folder: Path, threads: int = 2) -> Path:
    """profiles/slurm with its site placeholders filled in for the one-node test cluster."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    profile["default-resources"].update(slurm_partition="debug", mem_mb=1000)
    del profile["default-resources"]["slurm_account"]
    profile["set-resources"]["train"].update(slurm_partition="debug")  # mem_mb: the estimate
    profile["set-resources"]["preflight"].update(slurm_partition="debug")
    profile["set-threads"]["train"] = threads  # the node has 2 cores
    profile.update(
        {"slurm-no-account": True, "slurm-init-seconds-before-status-checks": 2, "latency-wait": 5}
    )
    target = folder / "profile" / "config.v8+.yaml"
    target.parent.mkdir(parents=True)
    target.write_text(yaml.safe_dump(profile, sort_keys=False))
    return target.parent


def start_slurm_run(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake through the SLURM profile, bounded: SIGINT (Snakemake ignores TERM while it
    waits for cluster jobs), then KILL 30 s later."""
    env = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    command = ["timeout", "-s", "INT", "-k", "30", str(TIMEOUT_S), str(BIN / "snakemake")]
    command += ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    command += ["--workflow-profile", str(cluster_profile(workdir)), "--verbose", *args]
    return subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def sbatch_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("sbatch call: ")]


def job_state(job_id: str) -> str:
    listed = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    return listed.stdout.strip()


def sacct(run_name: str) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "State", "AllocTRES", "Comment"]
    listed = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-D", "--name", run_name, "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [dict(zip(fields, line.split("|"), strict=True)) for line in listed.stdout.splitlines()]


def test_tiny_config_runs_through_the_slurm_profile_with_a_gpu_per_training_job(
    slurm_cluster, tmp_path
):
    workdir = project(tmp_path, TINY)
    process = start_slurm_run(workdir)
    log = process.communicate()[0]
    (tmp_path / "snakemake.log").write_text(log)
    assert process.returncode == 0, log[-5000:]
    assert (workdir / "results" / "report" / "index.html").stat().st_size > 100_000

    lines = sbatch_lines(log)
    train_lines = [line for line in lines if "--comment rule_train_" in line]
    preflight_lines = [line for line in lines if "--comment rule_preflight" in line]
    config = yaml.safe_load(TINY.read_text())
    jobs = plan.jobs(config)
    assert len(train_lines) == len(jobs) and len(preflight_lines) == 1
    # the device check goes first, on the training jobs' resources
    assert lines.index(preflight_lines[0]) < min(map(lines.index, train_lines))
    assert "--gpus=1" in preflight_lines[0] and "-p debug" in preflight_lines[0]
    shapes = {name: data.planned_shape(spec) for name, spec in config["datasets"].items()}
    for line in train_lines:
        assert "--gpus=1" in line and "--cpus-per-task=2" in line and "--requeue" in line
        assert "--signal=USR1@300" in line and "-p debug" in line
        spec = next(spec for (_, group), spec in jobs.items() if f"group={group}" in line)
        declared = memory.declared_mb(spec, shapes[spec["dataset"]])  # the estimate, not a guess
        assert re.search(rf"--mem[ =]{declared}\b", line), line
    gpu_lines = train_lines + preflight_lines
    assert not any("--gpus" in line for line in lines if line not in gpu_lines)

    run_name = re.search(r"--job-name (\S+)", lines[0]).group(1)
    accounted = sacct(run_name)
    trained = [job for job in accounted if job["Comment"].startswith("rule_train_")]
    gpu_rules = ("rule_train_", "rule_preflight")  # not rule_prepare_dataset
    on_gpu = [job for job in accounted if job["Comment"].startswith(gpu_rules)]
    assert len(trained) == len(jobs) and len(accounted) == len(lines)
    assert all(job["State"] == "COMPLETED" for job in accounted), accounted
    assert all("gres/gpu=1" in job["AllocTRES"] for job in on_gpu), on_gpu
    assert not any("gres/gpu" in job["AllocTRES"] for job in accounted if job not in on_gpu)
    for experiment, group in jobs:  # the job ran in the allocation: its threads, on the CPU
        record = json.loads(
            (workdir / "results/runs" / experiment / group / "result.json").read_text()
        )
        assert record["threads"] == 2 and record["device"] == "cpu"
    print(
        "\n".join(f"{j['JobID']} {j['Comment']} {j['State']} {j['AllocTRES']}" for j in accounted)
    )


def test_a_requeued_training_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RANKBIAS_CHECKPOINT_SECONDS", "0")  # exported into the job (--export=ALL)
    target = f"results/runs/{GROUP}/final.npz"
    reference = project(tmp_path / "local", FAULTS)
    snakemake(reference, "--cores", "2", target)

    workdir = project(tmp_path / "slurm", FAULTS)
    process = start_slurm_run(workdir, target)
    # the job's training process runs on this node: paused mid-training, it cannot finish before
    # the requeue lands, however fast the machine
    pause_training_with_a_checkpoint(workdir, CHECKPOINT)
    running = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True
    ).stdout.split("\n")
    (job_id,) = [line.split()[0] for line in running if "rule_train_" in line]
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # as a preemption does
    # SLURM continues and signals the paused job: it saves its checkpoint and exits
    wait_for(lambda: not training_processes(workdir), "the requeued job's training to exit", 120)
    wait_for(lambda: job_state(job_id) == "PENDING", f"job {job_id} to be requeued", 120)
    # back in the queue, a requeued job waits out a hold-off; let it go, but in a later second
    # than the requeue: slurmd rejects a launch whose credential dates from the second its
    # predecessor's was revoked ("Killing non-startable batch job: Job credential revoked")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+1"], check=True)
    log = process.communicate()[0]
    assert process.returncode == 0, log[-5000:]
    train_log = (workdir / "logs" / "train" / f"{GROUP}.log").read_text()
    assert "resumed from" in train_log, train_log
    states = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-D", "-j", job_id, "-o", "State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert states == ["REQUEUED", "COMPLETED"], states
    with np.load(workdir / target) as resumed, np.load(reference / target) as uninterrupted:
        for key in uninterrupted.files:
            assert np.array_equal(resumed[key], uninterrupted[key]), key
