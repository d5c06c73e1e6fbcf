"""Which device a training job runs on: CUDA when present, else the CPU; on a workstation with
several GPUs, a GPU that no other rankbias job holds.

Snakemake hands out no GPU ids (its `gpu` resource only counts), and SLURM restricts a job to its
allocation through CUDA_VISIBLE_DEVICES, where the job sees one GPU. A job that sees several takes
the first free one by an exclusive lock on a file per GPU; the kernel drops the lock when the
process ends, however it ends, so a killed job never leaves a GPU marked busy.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOCK_DIR_ENV = "RANKBIAS_GPU_LOCK_DIR"
# The config's `device`, handed to training jobs by the workflow (not a rerun trigger).
DEVICE_ENV = "RANKBIAS_DEVICE"


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "rankbias-gpus")


def _shared_dir(directory: Path) -> None:
    """The lock folder, made like /tmp (mode 1777): every user's jobs lock the same GPUs there,
    and none can remove another's lock file."""
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        if directory.stat().st_uid == os.geteuid():
            directory.chmod(0o1777)


def _lock_file(path: Path) -> IO:
    """The GPU's lock file, opened read-only (flock needs no write access, so another user's
    file serves), created readable by all where it does not exist yet."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except PermissionError:
        raise PermissionError(
            f"cannot create the GPU lock {path}: its folder is not writable by this user; set "
            f"${LOCK_DIR_ENV} to a folder every user of this machine can write (mode 1777)"
        ) from None
    if os.fstat(descriptor).st_uid == os.geteuid():
        os.fchmod(descriptor, 0o666)  # past the umask: other users' jobs open it too
    return os.fdopen(descriptor, "r")


def claim_gpu(count: int, directory: Path) -> tuple[int, IO] | None:
    """The first of `count` GPUs whose lock is free, with the open lock file (keep it open for
    as long as the GPU is used); None when every GPU is held."""
    _shared_dir(directory)
    for index in range(count):
        handle = _lock_file(directory / f"gpu{index}.lock")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return index, handle
    return None


def job_device(
    requested: str,
    count: int | None = None,
    log: Callable[[str], None] = print,
    poll_s: float = 5.0,
) -> tuple[str, IO | None]:
    """The device for one training job, and the GPU lock it holds (None if it holds none).

    `requested` is the config's `device`: `cpu` and `cuda:N` are taken as they are; `auto` is the
    CPU without CUDA, the one visible GPU under SLURM, or a free GPU of several.
    """
    if requested != "auto":
        return requested, None
    if count is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "cpu", None
    if count == 1:
        return "cuda:0", None
    waited = False
    while (claim := claim_gpu(count, lock_dir())) is None:
        if not waited:
            log(f"all {count} GPUs are held by other rankbias jobs; waiting for one")
            waited = True
        time.sleep(poll_s)
    index, handle = claim
    log(f"using GPU {index} of {count} (lock {handle.name})")
    return f"cuda:{index}", handle
