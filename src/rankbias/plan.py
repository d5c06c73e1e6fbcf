"""Turn the validated config into training jobs: one job = one ensemble of shared shapes and batch.

An experiment is a list of *runs*; a run is a grid. Axes that change tensor shapes or the batch
(`depth`, `width`, `batch_size`) split a run into separate ensembles; `lr`, `weight_decay` and
`seeds` become members of one ensemble, ordered seed-major so that `members_per_job` chunks keep
whole seeds together. Snakemake and the tests both call `jobs()`, so the plan has one source.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from rankbias.convshapes import ConvArch
from rankbias.data import GENERATED_SOURCES, IMAGE_SHAPES, RAW_SHAPES, SOURCES, USER_SOURCES
from rankbias.vocabulary import SHAPE_AXES

# Figures an experiment may list under `figures` (drawn by rankbias.figures.draw_figure).
FIGURE_KINDS = (
    "spectra",
    "rank",
    "paper_a",
    "dynamics",
    "grid",
    "heatmap",
    "depth",
    "bound",
    "norm_ratio",
    "generalization",
    "rank_gap",
    "test_error",
)
DEFAULT_FIGURES = (
    "spectra",
    "rank",
    "paper_a",
    "dynamics",
    "test_error",
    "generalization",
)  # Paper A's audits
# An experiment of checkpoints trained elsewhere has no training history: the figures it may
# draw read the final table and spectra only.
CHECKPOINT_FIGURES = ("spectra", "rank", "grid", "heatmap", "bound", "generalization", "test_error")
DEFAULT_CHECKPOINT_FIGURES = ("spectra", "rank", "bound")
RUN_DEFAULTS: dict[str, Any] = {
    "arch": "mlp",
    "channels": [],
    "augment": {},
    "ensemble": "auto",
    "depth": 2,
    "output_bias": False,
    "batch_norm": False,
    "bias_decay": True,
    "epochs": None,
    "steps": None,
    "log_every": None,
    "members_per_job": None,
    "eval_batch": 4096,
    "wd_function": "constant",
    "lr_milestones": [],
    "lr_gamma": 0.1,
}


# What a training job reads of `metrics`: the rank metrics and eps_batch of its logged history.
# The rest of `metrics`, a run's `eval_batch` and the config's `device` change no training output
# (the device is recorded in result.json): they are the measure rule's, so changing one of them
# remeasures but never retrains (README, "What reruns when").
TRAINING_METRICS = ("rank_tol", "rel_tol", "rank_cut", "eps_log_epochs")
MEASURE_KEYS = ("device", "eval_batch", "metrics")
# Samples per chunk when training evaluates whole splits at a logged epoch. Fixed, not the run's
# `eval_batch`: BLAS blocks a matmul by its rows, so the chunk moves the last bits of the logged
# losses, and a setting that changes training outputs would have to retrain when it changes.
EVAL_CHUNK = 4096


# Keys of an MLP run that a conv net's `arch` decides (rankbias.convshapes).
MLP_ONLY = ("depth", "width", "batch_norm", "output_bias", "wd_function")


class PlanError(ValueError):
    """The config describes an impossible or ambiguous plan."""


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def format_number(value: float) -> str:
    """Stable short text for a hyper-parameter value (used in names and tables)."""
    return f"{value:g}"


def group_name(run: dict, depth: int, width: int, batch_size: int, chunk: int) -> str:
    prefix = run.get("name") or run["dataset"]
    shape = f"L{depth}_H{width}" if run["arch"] == "mlp" else run["arch"]
    return f"{prefix}_{shape}_B{batch_size}_j{chunk}"


def conv_shape(
    config: dict, run: dict, given: dict, where: str
) -> tuple[ConvArch, tuple[int, int, int]]:
    """The conv net a run names, on its data set's images (`given`: the run as written, before
    defaults); refuses data that are not images and keys that only an MLP has."""
    source = config["datasets"][run["dataset"]]["source"]
    if source not in IMAGE_SHAPES:
        raise PlanError(
            f"{where}.arch: {run['arch']} needs images, but data set {run['dataset']!r} (source "
            f"{source}) has none; image sources: {', '.join(IMAGE_SHAPES)}"
        )
    for key in MLP_ONLY:
        if key in given:
            raise PlanError(
                f"{where}.{key}: set by arch {run['arch']} (its layers, batch norm, output bias "
                f"and constant weight decay); allowed only with arch mlp"
            )
    if (run["arch"] == "cnn") != bool(run["channels"]):
        raise PlanError(f"{where}.channels: give `channels` with arch cnn, and only with it")
    classes = RAW_SHAPES[source][1]
    arch = ConvArch(run["arch"], IMAGE_SHAPES[source], classes, tuple(run["channels"]))
    try:
        arch.layers()
    except ValueError as error:
        raise PlanError(f"{where}.channels: {error}") from error
    return arch, IMAGE_SHAPES[source]


def check_datasets(config: dict, source: str) -> None:
    """What the schema cannot say about a data set: a teacher's rank must fit its shape."""
    for name, spec in config["datasets"].items():
        if spec["source"] == "teacher":
            shape = min(spec.get("input_dim", 20), spec.get("teacher_width", 32))
            if spec["rank"] > shape:
                raise PlanError(
                    f"{source}: datasets.{name}.rank: {spec['rank']} exceeds "
                    f"min(input_dim, teacher_width) = {shape}; allowed: 1 to {shape}"
                )


def select_experiments(config: dict, source: str) -> None:
    """Keep only `only.experiments` (in place): a user config merged over config/config.yaml
    runs its own experiments without copying or editing the default one."""
    wanted = config.get("only", {}).get("experiments")
    if not wanted:
        return
    unknown = [name for name in wanted if name not in config["experiments"]]
    if unknown:
        raise PlanError(
            f"{source}: only.experiments: unknown experiment(s) {', '.join(unknown)}; defined: "
            f"{', '.join(config['experiments'])}"
        )
    config["experiments"] = {name: config["experiments"][name] for name in wanted}


def check_checkpoints(config: dict, source: str) -> None:
    """An experiment of checkpoints (rankbias.audit): files that exist, data sets that are
    defined, distinct names, and figures that need no training history."""
    for experiment, block in config["experiments"].items():
        where = f"{source}: experiments.{experiment}"
        if "checkpoints" not in block:
            continue
        for kind in block.get("figures", []):
            if kind not in CHECKPOINT_FIGURES:
                raise PlanError(
                    f"{where}.figures: {kind} needs a training history, which checkpoints trained "
                    f"elsewhere do not have; allowed: {', '.join(CHECKPOINT_FIGURES)}"
                )
        names = set()
        for index, entry in enumerate(block["checkpoints"]):
            here = f"{where}.checkpoints[{index}]"
            if entry["name"] in names:
                raise PlanError(f"{here}.name: {entry['name']!r} is used twice in {experiment}")
            names.add(entry["name"])
            for key in ("path", "init"):
                if key in entry and not Path(entry[key]).is_file():
                    raise PlanError(f"{here}.{key}: {entry[key]} does not exist")
            if "dataset" in entry and entry["dataset"] not in config["datasets"]:
                raise PlanError(
                    f"{here}.dataset: unknown data set {entry['dataset']!r}; defined in "
                    f"datasets: {', '.join(config['datasets'])}"
                )


def checkpoint_experiments(config: dict) -> list[str]:
    return [name for name, block in config["experiments"].items() if "checkpoints" in block]


def used_datasets(config: dict, planned: dict[tuple[str, str], dict]) -> list[str]:
    """The data sets training jobs and checkpoint experiments read."""
    used = {spec["dataset"] for spec in planned.values()}
    for name in checkpoint_experiments(config):
        used |= {e["dataset"] for e in config["experiments"][name]["checkpoints"] if "dataset" in e}
    return sorted(used)


def jobs(config: dict, source: str = "config") -> dict[tuple[str, str], dict]:
    """Every training job of the config, keyed by (experiment, group), with its full spec.

    `source` names the config file(s) in errors."""
    check_datasets(config, source)
    check_checkpoints(config, source)
    planned: dict[tuple[str, str], dict] = {}
    for experiment, block in config["experiments"].items():
        for index, raw_run in enumerate(block.get("runs", [])):
            run = {**RUN_DEFAULTS, **raw_run}
            dataset = run["dataset"]
            where = f"{source}: experiments.{experiment}.runs[{index}]"
            if dataset not in config["datasets"]:
                raise PlanError(
                    f"{where}.dataset: unknown data set "
                    f"{dataset!r}; defined in datasets: {', '.join(config['datasets'])}"
                )
            if (run["epochs"] is None) == (run["steps"] is None):
                raise PlanError(f"{where}: give exactly one of `epochs` and `steps`")
            if run["batch_norm"] and 1 in as_list(run["batch_size"]):
                raise PlanError(
                    f"{where}.batch_size: 1 with batch_norm (batch statistics of one sample are "
                    "undefined); allowed with batch_norm: batch sizes >= 2"
                )
            forms = as_list(run["wd_function"])
            if run["loss"] == "ce" and "target_abs" in forms:
                raise PlanError(
                    f"{where}.wd_function: target_abs needs a regression target (loss mse); "
                    "allowed with ce: constant, input_norm"
                )
            members = [
                {"lr": float(lr), "weight_decay": float(wd), "seed": int(seed), "wd_function": g}
                for seed, lr, wd, g in itertools.product(
                    as_list(run["seeds"]), as_list(run["lr"]), as_list(run["weight_decay"]), forms
                )
            ]
            chunk = run["members_per_job"] or len(members)
            conv: dict[str, Any] = {}
            if run["arch"] != "mlp":
                arch, image_shape = conv_shape(config, run, raw_run, where)
                run["depth"], run["width"], run["batch_norm"] = arch.depth, arch.width, True
                conv = {
                    "arch": run["arch"],
                    "channels": list(run["channels"]),
                    "image_shape": list(image_shape),
                    "augment": dict(run["augment"]),
                    "ensemble": run["ensemble"],
                }
            for depth, width, batch_size in itertools.product(
                *(as_list(run[axis]) for axis in SHAPE_AXES)
            ):
                for start in range(0, len(members), chunk):
                    group = group_name(run, depth, width, batch_size, start // chunk)
                    if (experiment, group) in planned:
                        raise PlanError(
                            f"{where}: job {group!r} is produced "
                            "by two runs; give one of them a distinct `name`"
                        )
                    planned[(experiment, group)] = {
                        "experiment": experiment,
                        "group": group,
                        "dataset": dataset,
                        "loss": run["loss"],
                        "depth": int(depth),
                        "width": int(width),
                        "batch_size": int(batch_size),
                        "output_bias": bool(run["output_bias"]),
                        "batch_norm": bool(run["batch_norm"]),
                        "bias_decay": bool(run["bias_decay"]),
                        "epochs": run["epochs"],
                        "steps": run["steps"],
                        "log_every": run["log_every"],
                        "lr_milestones": [int(m) for m in run["lr_milestones"]],
                        "lr_gamma": float(run["lr_gamma"]),
                        "eval_batch": int(run["eval_batch"]),
                        "device": config.get("device", "auto"),
                        "dtype": config.get("dtype", "float32"),
                        "metrics": config.get("metrics", {}),
                        "members": [
                            {"member": start + i, **member}
                            for i, member in enumerate(members[start : start + chunk])
                        ],
                        **conv,
                    }
    return planned


def training_spec(spec: dict) -> dict:
    """The part of a job spec that changes what training writes: the train rule's params
    (`lr_gamma` only where there are milestones to apply it at)."""
    kept = {key: value for key, value in spec.items() if key not in MEASURE_KEYS}
    if not spec.get("lr_milestones"):
        kept.pop("lr_gamma", None)
    metrics = spec.get("metrics", {})
    return kept | {"metrics": {key: metrics[key] for key in TRAINING_METRICS if key in metrics}}


def measure_settings(spec: dict) -> dict:
    """The job spec's keys only measurement reads (merged back onto the recorded spec)."""
    return {key: spec[key] for key in MEASURE_KEYS if key != "device"}


def experiment_figures(block: dict) -> list[str]:
    default = DEFAULT_CHECKPOINT_FIGURES if "checkpoints" in block else DEFAULT_FIGURES
    return list(block.get("figures") or default)


def dataset_source(config: dict, dataset: str) -> str:
    return config["datasets"][dataset]["source"]


def raw_manifest(config: dict, dataset: str) -> str | None:
    """The manifest of a data set's verified raw files: one per source, one per user table
    (rankbias.tables), none for generated data."""
    source = dataset_source(config, dataset)
    if source in USER_SOURCES:
        return f"resources/raw/tables/{dataset}/manifest.json"
    return f"resources/raw/{source}/manifest.json" if source in SOURCES else None


def raw_sources(config: dict) -> list[str]:
    """Sources that need downloaded files (generated ones such as `teacher` do not)."""
    used = {dataset_source(config, d) for d in config["datasets"]}
    return sorted(s for s in used if s in SOURCES and s not in GENERATED_SOURCES)
