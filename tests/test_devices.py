"""Device choice: CPU without CUDA, the one GPU under SLURM, a free GPU of several (file locks)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rankbias.devices import LOCK_DIR_ENV, claim_gpu, job_device


def test_explicit_devices_and_counts_of_zero_or_one():
    assert job_device("cpu") == ("cpu", None)
    assert job_device("cuda:1") == ("cuda:1", None)
    assert job_device("auto", count=0) == ("cpu", None)
    assert job_device("auto", count=1) == ("cuda:0", None)  # SLURM: the allocated GPU only


def test_each_job_takes_a_gpu_no_other_job_holds(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    first_device, first = job_device("auto", count=3)
    second_device, second = job_device("auto", count=3)
    assert (first_device, second_device) == ("cuda:0", "cuda:1")
    first.close()  # job 1 ends: its GPU is free again
    third_device, third = job_device("auto", count=3)
    assert third_device == "cuda:0"
    assert claim_gpu(2, tmp_path) is None  # GPUs 0 and 1 held
    second.close()
    third.close()


def test_a_gpu_held_by_another_process_is_skipped_and_freed_when_it_dies(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from rankbias.devices import claim_gpu; "
            f"claim = claim_gpu(2, Path({str(tmp_path)!r})); print(claim[0], flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "0"
    index, handle = claim_gpu(2, tmp_path)
    assert index == 1
    handle.close()
    holder.kill()  # SIGKILL: the kernel drops its lock
    holder.wait()
    index, handle = claim_gpu(2, tmp_path)
    assert index == 0
    handle.close()


@pytest.fixture
def public_tmp():
    """A folder another user can reach (pytest's tmp_path sits in a private folder; /tmp is
    where the lock folder lives by default)."""
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root")
    folder = Path(tempfile.mkdtemp(prefix="rankbias-users-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_two_users_share_the_lock_folder_and_skip_each_others_gpu(public_tmp):
    """One user's job holds GPU 0; another user's job (effective uid `nobody`) must see the lock
    files, take GPU 1 and never hit a PermissionError on the folder or the files."""
    shared = public_tmp / "rankbias-gpus"
    first = claim_gpu(2, shared)  # root: creates the folder and gpu0.lock
    assert first is not None and first[0] == 0
    assert shared.stat().st_mode & 0o7777 == 0o1777
    os.setegid(65534)
    os.seteuid(65534)
    try:
        second = claim_gpu(2, shared)  # the same files, opened as nobody
    finally:
        os.seteuid(0)
        os.setegid(0)
    assert second is not None and second[0] == 1, "the second user's job did not skip GPU 0"
    assert (shared / "gpu1.lock").stat().st_uid == 65534
    assert (shared / "gpu1.lock").stat().st_mode & 0o777 == 0o666
    for _, handle in (first, second):
        handle.close()


def test_a_lock_folder_no_one_may_write_is_named_with_the_setting(public_tmp):
    private = public_tmp / "private"
    private.mkdir(mode=0o755)  # another user's folder, as an older rankbias made it
    os.seteuid(65534)
    try:
        with pytest.raises(PermissionError, match=f"{private}.*{LOCK_DIR_ENV}"):
            claim_gpu(1, private)
    finally:
        os.seteuid(0)
