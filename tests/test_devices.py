"""Device choice: CPU without CUDA, the one GPU under SLURM, a free GPU of several (file locks)."""

import subprocess
import sys

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
