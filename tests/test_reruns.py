"""What reruns when the config changes: a training job reruns exactly when something that changes
its outputs changed, and measurement when a measurement setting did (shown with `snakemake -n` on
the finished tiny run, one dry run per changed key)."""

import copy

import pytest
import yaml
from conftest import ROOT, TINY, planned_jobs, snakemake

from rankbias import plan
from rankbias.config import check_config

SCHEMAS = ROOT / "workflow" / "schemas"

TEACHER_RUN = ("experiments", "tiny", "runs", 0)  # a two-layer net: Paper A's eps_batch applies

# Keys only measurement reads, or that change no result at all: no training job may rerun.
MEASUREMENT_CHANGES = {
    "metrics.eps_epochs": (("metrics", "eps_epochs"), 1),
    "metrics.plateau_tol": (("metrics", "plateau_tol"), 0.2),
    "metrics.kink_tol": (("metrics", "kink_tol"), 0.01),
    "eval_batch": ((*TEACHER_RUN, "eval_batch"), 7),
}
NO_RESULT_CHANGES = {  # recorded (device) or read from the environment (mirror)
    "device": (("device",), "auto"),
    "data.mirror": (("data", "mirror"), "MIRROR"),
}
# Keys that change what training writes: each must rerun training.
TRAINING_CHANGES = {
    "dtype": (("dtype",), "float64"),
    "metrics.rank_tol": (("metrics", "rank_tol"), 0.01),
    "metrics.rel_tol": (("metrics", "rel_tol"), 0.01),
    "metrics.rank_cut": (("metrics", "rank_cut"), 0.2),
    "metrics.eps_log_epochs": (("metrics", "eps_log_epochs"), 2),
    "datasets.teacher_rank2.noise": (("datasets", "teacher_rank2", "noise"), 0.3),
    "datasets.teacher_rank2.seed": (("datasets", "teacher_rank2", "seed"), 1),
    "datasets.california_housing.train_size": (
        ("datasets", "california_housing", "train_size"),
        500,
    ),
    "dataset": (("experiments", "tiny_batch", "runs", 0, "dataset"), "california_housing"),
    "loss": ((*TEACHER_RUN, "loss"), "ce"),
    "depth": ((*TEACHER_RUN, "depth"), 3),
    "width": ((*TEACHER_RUN, "width"), 12),
    "batch_size": ((*TEACHER_RUN, "batch_size"), 20),
    "epochs": ((*TEACHER_RUN, "epochs"), 5),
    "steps": ((*TEACHER_RUN,), {"epochs": None, "steps": 40}),
    "log_every": ((*TEACHER_RUN, "log_every"), 1),
    "lr": ((*TEACHER_RUN, "lr"), 0.02),
    "weight_decay": ((*TEACHER_RUN, "weight_decay"), [0, 0.02]),
    "seeds": ((*TEACHER_RUN, "seeds"), [0, 2]),
    "members_per_job": ((*TEACHER_RUN, "members_per_job"), 4),
    "name": ((*TEACHER_RUN, "name"), "renamed"),
    "output_bias": ((*TEACHER_RUN, "output_bias"), True),
    "batch_norm": ((*TEACHER_RUN, "batch_norm"), True),
    "bias_decay": ((*TEACHER_RUN, "bias_decay"), False),
    "wd_function": ((*TEACHER_RUN, "wd_function"), "input_norm"),
    "lr_milestones": ((*TEACHER_RUN, "lr_milestones"), [2]),
    "lr_gamma (with milestones)": ((*TEACHER_RUN,), {"lr_milestones": [2], "lr_gamma": 0.5}),
}


def changed(path: tuple, value, mirror: str) -> dict:
    """The tiny config with one key set (a dict value at a run updates several keys at once;
    None there removes a key)."""
    config = yaml.safe_load(TINY.read_text())
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    value = mirror if value == "MIRROR" else copy.deepcopy(value)
    if isinstance(value, dict) and isinstance(node[path[-1]], dict):
        node[path[-1]].update(value)
        node[path[-1]] = {key: item for key, item in node[path[-1]].items() if item is not None}
    else:
        node[path[-1]] = value
    return config


def dry_run(workdir, name: str, config: dict) -> dict[str, int]:
    """Jobs `snakemake -n` plans given `config` as --configfile (the run's own is untouched)."""
    variant = workdir / "variants" / f"{name.split()[0]}.yaml"
    variant.parent.mkdir(exist_ok=True)
    variant.write_text(yaml.safe_dump(config, sort_keys=False))
    return planned_jobs(snakemake(workdir, "-n", "--quiet", "rules", "--configfile", str(variant)))


@pytest.mark.workflow
@pytest.mark.parametrize("key", MEASUREMENT_CHANGES)
def test_a_measurement_setting_remeasures_and_never_retrains(tiny_run, mirror, key):
    jobs = dry_run(tiny_run, key, changed(*MEASUREMENT_CHANGES[key], str(mirror)))
    assert "train" not in jobs and "prepare_dataset" not in jobs, jobs
    assert jobs.get("measure", 0) >= 1, jobs  # still tracked: the measurement is redone


@pytest.mark.workflow
@pytest.mark.parametrize("key", NO_RESULT_CHANGES)
def test_where_it_runs_or_reads_its_data_from_retrains_nothing(tiny_run, mirror, key):
    jobs = dry_run(tiny_run, key, changed(*NO_RESULT_CHANGES[key], str(mirror)))
    assert not {"fetch_dataset", "prepare_dataset", "train", "measure"} & set(jobs), jobs


@pytest.mark.workflow
@pytest.mark.parametrize("key", TRAINING_CHANGES)
def test_a_training_setting_retrains(tiny_run, mirror, key):
    jobs = dry_run(tiny_run, key, changed(*TRAINING_CHANGES[key], str(mirror)))
    assert jobs.get("train", 0) >= 1, jobs
    if key.startswith("datasets."):  # through the prepared data, which is remade first
        assert jobs.get("prepare_dataset") == 1, jobs


def test_the_training_params_hold_no_measurement_key():
    """The split itself: each measurement key is out of the train rule's params and in the
    measure rule's, and lr_gamma counts only where there are milestones."""
    config = yaml.safe_load(TINY.read_text())
    jobs, _, _ = check_config(config, SCHEMAS, "tiny.yaml", ROOT / "config" / "claims.yaml")
    spec = next(iter(jobs.values()))  # with the schema's defaults filled in, as the workflow has
    trained, measured = plan.training_spec(spec), plan.measure_settings(spec)
    assert "device" not in trained and "eval_batch" not in trained and "lr_gamma" not in trained
    assert set(trained["metrics"]) == set(plan.TRAINING_METRICS) < set(spec["metrics"])
    assert measured["eval_batch"] == spec["eval_batch"] and measured["metrics"] == spec["metrics"]
    with_milestones = plan.training_spec({**spec, "lr_milestones": [2]})
    assert with_milestones["lr_gamma"] == spec["lr_gamma"]


def edited_table(path) -> None:
    """The user corrects one value of the table."""
    import pandas as pd

    table = pd.read_csv(path)
    table.loc[0, "x0"] += 1.0
    table.to_csv(path, index=False)


def retrained_checkpoint(path) -> None:
    """The user's model, trained a little further elsewhere."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    save_file({name: 0.99 * tensor for name, tensor in state.items()}, str(path))


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("changed_file", "edit", "reruns", "never"),
    [
        ("points.csv", edited_table, {"fetch_table", "prepare_dataset", "train"}, set()),
        ("models/wd0_seed3.safetensors", retrained_checkpoint, {"measure"}, {"train"}),
    ],
)
def test_a_users_table_retrains_and_a_checkpoint_only_remeasures(
    example, tmp_path, changed_file, edit, reruns, never
):
    """README's worked example, finished: an edited table is copied, prepared and trained on
    again; a changed checkpoint is measured again, and nothing is trained. (A file saved again
    with the same content reruns nothing: Snakemake compares small inputs' checksums.)"""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(example[0], workdir, symlinks=True)
    edit(workdir / "resources" / "your_claim" / changed_file)
    config = ROOT / "config" / "examples" / "your_claim" / "config.yaml"
    jobs = planned_jobs(snakemake(workdir, "-n", "--quiet", "rules", "--configfile", str(config)))
    assert reruns <= set(jobs) and not never & set(jobs), jobs
    if "train" not in reruns:
        assert jobs["measure"] == 1, jobs  # my_checkpoints only
