"""Memory known up front: a training job's estimate against its measured peak, the declared
mem_mb growing with retries, and a config whose job cannot fit refused before anything runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY, project, snakemake, train_command

from rankbias import data, memory, paper_a, plan

# Shapes where the tensors, not the interpreter, make most of the peak: a wide MNIST-sized net
# with eps_batch, a 30-member ensemble on small inputs (eps_batch's many temporaries), a deep
# batch-normalised net, a float64 run, a grouped conv ensemble (autograd's saved activations).
SHAPES = {
    "wide_eps": dict(features=784, classes=10, rows=6000, members=8, width=1024, depth=2, batch=64),
    "many_members_eps": dict(features=20, rows=12000, members=30, width=256, depth=2, batch=16),
    "deep_batch_norm": dict(
        features=784, classes=10, rows=6000, members=16, width=512, depth=4, batch=128, bn=True
    ),
    "float64": dict(features=20, rows=16000, members=24, width=512, depth=3, batch=256, f64=True),
    "conv_grouped": dict(features=784, classes=10, rows=1000, members=12, batch=64, conv=True),
}
CONV = {"arch": "cnn", "channels": [16, "M", 32, "M", 32], "image_shape": [1, 28, 28]}


def prepared(folder, features: int, rows: int, classes: int | None) -> str:
    """A prepared data set of these sizes (random numbers: memory depends on shapes only)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", rows), ("val", rows // 10), ("test", 1000)):
        arrays[f"x_{split}"] = rng.standard_normal((count, features), dtype=np.float32)
        arrays[f"y_{split}"] = (
            rng.integers(0, classes, count)
            if classes
            else rng.standard_normal((count, 1), dtype=np.float32)
        )
    npz = folder / "data.npz"
    data.write_prepared(arrays, {}, str(npz), str(folder / "data.json"))
    return str(npz)


def job_spec(shape: dict) -> dict:
    members = [
        {"member": i, "lr": 0.01, "weight_decay": 0.001, "seed": i, "wd_function": "constant"}
        for i in range(shape["members"])
    ]
    return {
        "experiment": "memory",
        "group": "job",
        "dataset": "data",
        "loss": "ce" if shape.get("classes") else "mse",
        "depth": shape.get("depth", 2),
        "width": shape.get("width", 1),
        "batch_size": shape["batch"],
        "batch_norm": shape.get("bn", False),
        "epochs": None,
        "steps": 12,
        "log_every": None,
        "lr_milestones": [],
        "dtype": "float64" if shape.get("f64") else "float32",
        "metrics": {"eps_log_epochs": 1},
        "members": members,
    } | ({**CONV, "depth": 4, "width": 32, "ensemble": "grouped"} if shape.get("conv") else {})


@pytest.mark.parametrize("name", SHAPES)
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(tmp_path, name):
    """The training CLI, as the workflow runs it, records its estimate and its peak RSS."""
    shape = SHAPES[name]
    npz = prepared(tmp_path, shape["features"], shape["rows"], shape.get("classes"))
    spec = job_spec(shape)
    subprocess.run(
        [*train_command(spec, Path(npz), tmp_path / "run"), "--device", "cpu"],
        check=True,
        capture_output=True,
    )
    record = json.loads((tmp_path / "run" / "result.json").read_text())["memory"]
    estimate, peak = record["estimated_mb"], record["peak_rss_mb"]
    print(f"{name}: estimated {estimate} MB, measured peak {peak:.0f} MB ({estimate / peak:.2f})")
    tensors = estimate - memory.BASE_MB
    assert tensors > 0.4 * estimate, "the interpreter alone would make the test easy"
    assert abs(estimate - peak) <= 0.25 * peak, f"{name}: estimated {estimate}, measured {peak}"


def test_each_term_grows_with_its_shape_and_retries_ask_for_more():
    spec = job_spec(SHAPES["wide_eps"])
    shape = (784, 10, 6600, 1000)
    base = memory.training_terms(spec, shape)
    wider = memory.training_terms({**spec, "width": 2048}, shape)
    assert all(wider[key] > base[key] for key in ("weights", "evaluation", "spectra", "eps_batch"))
    fewer = memory.training_terms({**spec, "members": spec["members"][:2]}, shape)
    assert fewer["weights"] < base["weights"] and fewer["data"] == base["data"]
    assert "eps_batch" not in memory.training_terms({**spec, "depth": 3}, shape)
    declared = [memory.declared_mb(spec, shape, attempt) for attempt in (1, 2, 3)]
    assert declared[0] >= memory.training_mb(spec, shape) * memory.MARGIN
    assert declared[0] < declared[1] < declared[2]
    assert memory.EPS_SAMPLES == paper_a.EPS_SAMPLES  # the copy that spares importing torch


def test_the_planned_shapes_are_the_prepared_ones(tmp_path, mirror):
    config = yaml.safe_load(TINY.read_text())
    for name, spec in config["datasets"].items():
        raw = None
        if spec["source"] in data.SOURCES and spec["source"] not in data.GENERATED_SOURCES:
            data.fetch(spec["source"], tmp_path / spec["source"], str(mirror))
            raw = tmp_path / spec["source"]
        arrays, info = data.prepare(spec, raw)
        loss = "ce" if info["task"] == "classification" else "mse"
        assert data.planned_shape(spec) == memory.arrays_shape(arrays, loss), name


def test_a_job_that_cannot_fit_is_refused_before_anything_runs(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    jobs = plan.jobs(config)
    shapes = {name: data.planned_shape(spec) for name, spec in config["datasets"].items()}
    need = max(memory.declared_mb(spec, shapes[spec["dataset"]]) for spec in jobs.values())
    memory.check_fits(jobs, shapes, need, "tiny.yaml")  # exactly enough: accepted
    with pytest.raises(memory.MemoryPlanError, match=f"needs an estimated {need:,} MB"):
        memory.check_fits(jobs, shapes, need - 1, "tiny.yaml")
    small = project(tmp_path, {**config, "max_mem_mb": need - 1})
    refused = snakemake(small, "-n", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "nothing was run" in said
    assert f"more than max_mem_mb = {need - 1:,} MB" in said and "members_per_job" in said
    assert not (small / "results").exists()


def test_the_train_rule_declares_the_estimate(tmp_path):
    workdir = project(tmp_path, TINY)
    listing = snakemake(workdir, "-n").stdout
    declared = {  # (experiment, job) -> mem_mb, from each train job's block of the dry run
        (experiment, group): int(mem_mb)
        for experiment, group, mem_mb in re.findall(
            r"rule train:\n.*?output: results/runs/([^/]+)/([^/]+)/final.npz.*?mem_mb=(\d+)",
            listing,
            flags=re.DOTALL,
        )
    }
    config = yaml.safe_load(TINY.read_text())
    shapes = {name: data.planned_shape(spec) for name, spec in config["datasets"].items()}
    jobs = plan.jobs(config)
    assert declared == {
        key: memory.declared_mb(spec, shapes[spec["dataset"]]) for key, spec in jobs.items()
    }


def test_a_jobs_peak_is_its_own_not_its_parents():
    """A job started by a large process (pytest late in the suite, Snakemake) reports its own
    peak: on Linux getrusage's ru_maxrss keeps the parent's across fork and exec, which once made
    two jobs here report pytest's 1.3 GB."""
    ballast = np.ones(600 * 2**20 // 8)  # 600 MB resident in this process
    code = "from rankbias.memory import peak_rss_mb; print(peak_rss_mb())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(child.stdout) < 300, f"the child reported {child.stdout.strip()} MB"
    assert ballast.sum() > 0
