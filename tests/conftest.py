"""Shared fixtures. Tests never download: raw data come from the offline mirror
($RANKBIAS_DATA_MIRROR, defaulting to ../shared/data beside the checkout) or are generated."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = ROOT.parent / "shared" / "data"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent
ARTIFACTS = Path(os.environ.get("RANKBIAS_TEST_ARTIFACTS", ROOT / "test-artifacts"))

if not os.environ.get("RANKBIAS_DATA_MIRROR") and DEFAULT_MIRROR.is_dir():
    os.environ["RANKBIAS_DATA_MIRROR"] = str(DEFAULT_MIRROR)


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = Path(os.environ.get("RANKBIAS_DATA_MIRROR", ""))
    if not (path / "california_housing" / "cal_housing.data").is_file():
        pytest.fail(f"the offline data mirror is missing: set RANKBIAS_DATA_MIRROR (now {path})")
    return path


@pytest.fixture
def offline(monkeypatch):
    """Make every download fail at once, as on CI, so tests exercise the offline paths."""
    from rankbias import data

    def refuse(url: str) -> bytes:
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(data, "download", refuse)


def unavailable(requirement: str, message: str) -> None:
    """Skip a test that needs what this machine lacks, or fail it where CI requires it
    ($RANKBIAS_REQUIRE_<requirement> set, as .ci/run does for BROWSER, SLURM and FULL_DISK)."""
    if os.environ.get(f"RANKBIAS_REQUIRE_{requirement}"):
        pytest.fail(message)
    pytest.skip(message)


def run(
    args: list[str], cwd: Path, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **(env or {}),
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
    }
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A local Snakemake run. The SLURM executor plugin asks `scontrol show config` at import;
    where SLURM's tools are installed but no controller runs (CI between its SLURM tests) that
    call waits 10 s, so local runs point SLURM_CONF at an empty file and it fails at once."""
    return run(
        [
            str(BIN / "snakemake"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            *args,
        ],
        cwd=workdir,
        check=check,
        env={"SLURM_CONF": os.devnull},
    )


def train_command(
    spec: dict, data_path: Path, out: Path, checkpoints: Path | None = None
) -> list[str]:
    """`python -m rankbias train` as the workflow calls it (checkpoints at every step if given)."""
    command = [
        sys.executable,
        "-m",
        "rankbias",
        "train",
        "--spec",
        json.dumps(spec),
        "--data",
        str(data_path),
        "--out-dir",
        str(out),
    ]
    if checkpoints:
        command += ["--checkpoint-dir", str(checkpoints), "--checkpoint-seconds", "0"]
    return command


def planned_jobs(dry_run: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule from the table `snakemake -n --quiet rules` prints."""
    return {
        fields[0]: int(fields[1])
        for fields in (line.split() for line in dry_run.stdout.splitlines())
        if len(fields) == 2 and fields[1].isdigit() and fields[0] != "total"
    }


def project(tmp_path: Path, config: dict | Path) -> Path:
    """A user's project folder: config/config.yaml, with the workflow used from this checkout."""
    (tmp_path / "config").mkdir(parents=True)
    target = tmp_path / "config" / "config.yaml"
    if isinstance(config, Path):
        shutil.copy(config, target)
    else:
        target.write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mirror) -> Path:
    """The tiny config run end to end once per session; tests read its results."""
    workdir = project(tmp_path_factory.mktemp("tiny"), TINY)
    snakemake(workdir, "--cores", "2")
    return workdir


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def training_processes(workdir: Path) -> list[int]:
    """PIDs of `python -m rankbias train` jobs running in `workdir` (here or as SLURM jobs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            is_training = b"rankbias" in command and b"train" in command
            if is_training and Path(os.readlink(proc / "cwd")) == workdir:
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return pids


def pause_training_with_a_checkpoint(workdir: Path, checkpoint: Path) -> int:
    """SIGSTOP the training job of `workdir` once it has written `checkpoint` (relative to
    `workdir`); its PID. Stopped, it can neither finish nor clear the checkpoint, so whatever
    the test does next lands mid-job, however fast the machine."""
    wait_for(
        lambda: (workdir / checkpoint).is_file() and training_processes(workdir),
        f"a running training job with {checkpoint}",
    )
    (pid,) = training_processes(workdir)
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        raise AssertionError(f"training job {pid} ended before it could be paused") from None
    assert (workdir / checkpoint).is_file(), f"training job {pid} finished before the pause"
    return pid


def cifar_archive(path, records: int = 4, seed: int = 0, short_by: int = 0) -> dict:
    """A CIFAR-10 binary archive in the real layout (cifar-10-batches-bin/*.bin: a label byte,
    then 1,024 red, 1,024 green and 1,024 blue bytes per image), `records` images a batch (each
    `short_by` bytes short: a broken archive); returns the records by member name."""
    import io
    import tarfile

    import numpy as np

    from rankbias import data

    record_bytes = data.CIFAR_RECORD - short_by
    rng = np.random.default_rng(seed)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in (*data.CIFAR_TRAIN, data.CIFAR_TEST):
            content = rng.integers(0, 256, (records, record_bytes), dtype=np.uint8)
            content[:, 0] = rng.integers(0, 10, records)
            batches[name] = content
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = content.nbytes
            tar.addfile(info, io.BytesIO(content.tobytes()))
        meta = b"airplane\nautomobile\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return batches


@pytest.fixture
def cifar_mirror(tmp_path, monkeypatch, offline):
    """A mirror holding a synthetic archive, and a CIFAR-10 source that expects its checksum."""
    import dataclasses

    from rankbias import data

    folder = tmp_path / "cifar_mirror" / "cifar10"
    folder.mkdir(parents=True)
    batches = cifar_archive(folder / data.CIFAR_ARCHIVE, records=20)
    digest = data.sha256_file(folder / data.CIFAR_ARCHIVE)
    source = data.SOURCES["cifar10"]
    raw_file = dataclasses.replace(source.files[0], sha256=digest)
    monkeypatch.setitem(data.SOURCES, "cifar10", dataclasses.replace(source, files=(raw_file,)))
    return folder.parent, batches


def example_commands() -> list[list[str]]:
    """The bash block after README's `your-claim-example` marker, one command a line."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- your-claim-example -->\n```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no your-claim-example block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="session")
def example(tmp_path_factory, mirror):
    """A user's folder beside the checkout: the default config, then the README's commands."""
    workdir = tmp_path_factory.mktemp("your_claim")
    (workdir / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", workdir / "config" / "config.yaml")
    outputs = []
    for command in example_commands():
        if command[0] == "snakemake":
            args = [ROOT / a if a.startswith("config/") else a for a in command[1:]]
            dry = snakemake(workdir, *map(str, args), "-n", "--quiet", "rules")
            outputs.append(dry.stdout)
            outputs.append(snakemake(workdir, *map(str, args), "--cores", "2").stdout)
        else:
            assert command[0] == "python", command
            script = [str(ROOT / command[1])] if command[1].endswith(".py") else command[1:3]
            rest = command[2:] if command[1].endswith(".py") else command[3:]
            outputs.append(run([sys.executable, *script, *rest], cwd=workdir).stdout)
    return workdir, outputs
