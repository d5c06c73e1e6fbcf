"""What a config costs to train, projected from the training times measured on this machine.

    python benchmarks/paper_cost.py                       # config/paper.yaml over config.yaml
    python benchmarks/paper_cost.py --config my.yaml --measured results/runs

A cost model `time = steps * step_overhead + flops / flop_rate` is fitted (least squares, both
terms >= 0) to the training jobs of a finished run (`results/runs/*/*/result.json`: spec and
wall time), one model for the MLPs and one for the conv nets, then applied to every job the
config plans. A step's FLOPs are the work it cannot avoid (rankbias.models.Arch.step_flops,
rankbias.convshapes.ConvArch.step_flops) for every member, which leaves out evaluation and logging.

The GPU projection is not a measurement (we have no GPU): each job takes, per step, the slower of
a floor (kernel launches: `US_PER_STEP`, plus `--conv-layer-us` per weight layer of a conv net,
whose autograd step launches kernels layer by layer) and its FLOPs at a sustained rate
(`TFLOPS`), in an optimistic and a pessimistic scenario. An ensemble job pays the floor once a
step for all its members (grouped convolutions, rankbias.convtrain); one model at a time pays it
once per member: the `ensemble gain` column is that ratio, the GPU's reason for ensembles.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rankbias import plan  # noqa: E402
from rankbias.convshapes import ConvArch  # noqa: E402
from rankbias.data import IMAGE_SHAPES, RAW_SHAPES  # noqa: E402
from rankbias.models import Arch  # noqa: E402
from rankbias.train import schedule  # noqa: E402

# Training rows, features and classes of each raw source (rankbias.data.RAW_SHAPES)
FULL_SIZES = {source: shape[2] for source, shape in RAW_SHAPES.items()}
FEATURES = {source: shape[0] for source, shape in RAW_SHAPES.items()}
CLASSES = {source: shape[1] for source, shape in RAW_SHAPES.items() if source in IMAGE_SHAPES}


def merged(base: dict, override: dict) -> dict:
    """Snakemake's --configfile merge: mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def train_size(dataset: dict) -> int:
    if dataset["source"] == "teacher":
        return dataset.get("train_size", 2000)
    if dataset["source"] == "california_housing":
        split = round(FULL_SIZES["california_housing"] * (1 - dataset.get("test_fraction", 0.2)))
        return min(dataset.get("train_size", split), split)
    return dataset.get("train_size", FULL_SIZES[dataset["source"]])


def family(spec: dict) -> str:
    return "mlp" if spec.get("arch", "mlp") == "mlp" else "conv"


def job_work(spec: dict, dataset: dict) -> tuple[float, float]:
    """(SGD steps, training FLOPs) of one ensemble job."""
    n_train = train_size(dataset)
    source = dataset["source"]
    n_in = dataset.get("input_dim", 20) if source == "teacher" else FEATURES[source]
    n_out = CLASSES.get(source, 1) if spec["loss"] == "ce" else 1
    if family(spec) == "conv":
        arch = ConvArch(spec["arch"], IMAGE_SHAPES[source], n_out, tuple(spec["channels"]))
    else:
        arch = Arch(n_in, spec["width"], spec["depth"], n_out)
    epochs, _ = schedule(spec, n_train)  # `steps` round up to whole epochs, as in training
    steps = epochs * math.ceil(n_train / spec["batch_size"])
    members = len(spec["members"])
    return float(steps), float(arch.step_flops(spec["batch_size"]) * members * steps)


def measured_jobs(runs: Path, config: dict, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, flops, seconds) of every finished training job of family `kind` under `runs`."""
    rows = []
    for path in sorted(runs.glob("*/*/result.json")):
        record = json.loads(path.read_text())
        spec = record["spec"]
        if spec["dataset"] not in config["datasets"] or family(spec) != kind:
            continue
        steps, flops = job_work(spec, config["datasets"][spec["dataset"]])
        rows.append((steps, flops, record["wall_time_s"]))
    if not rows:
        raise SystemExit(f"no finished {kind} training jobs under {runs}: run the default audit")
    return tuple(np.array(column) for column in zip(*rows, strict=True))


def fit(steps: np.ndarray, flops: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Non-negative (seconds per step, seconds per FLOP), relative error weighted."""
    design = np.column_stack([steps, flops]) / seconds[:, None]
    best, best_loss = (0.0, 0.0), math.inf
    for support in ([0, 1], [0], [1]):  # the NNLS solution is one of these least squares
        coef = np.zeros(2)
        coef[support] = np.linalg.lstsq(design[:, support], np.ones(len(seconds)), rcond=None)[0]
        loss = float(np.sum((design @ coef - 1) ** 2))
        if (coef >= 0).all() and loss < best_loss:
            best, best_loss = (float(coef[0]), float(coef[1])), loss
    return best


def gpu_hours(
    work: list[tuple[float, float]],
    specs: list[dict],
    scenario: tuple[float, float],
    layer_us: float,
    one_at_a_time: bool = False,
) -> float:
    """Per job the slower of a per-step floor (us, plus `layer_us` per weight layer of a conv
    net) and a sustained rate (TFLOP/s); `one_at_a_time` pays the floor once per member."""
    step_us, tflops = scenario
    hours = 0.0
    for (steps, flops), spec in zip(work, specs, strict=True):
        floor = (step_us + (layer_us * spec["depth"] if family(spec) == "conv" else 0)) * 1e-6
        members = len(spec["members"]) if one_at_a_time else 1
        hours += members * max(steps * floor, flops / members / (tflops * 1e12))
    return hours / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=ROOT / "config" / "config.yaml", type=Path)
    parser.add_argument("--config", default=ROOT / "config" / "paper.yaml", type=Path)
    parser.add_argument("--measured", default=ROOT / "results" / "runs", type=Path)
    scenario = {"nargs": 2, "type": float, "metavar": ("US_PER_STEP", "TFLOPS")}
    parser.add_argument("--fast-gpu", default=(300.0, 10.0), help="optimistic GPU", **scenario)
    parser.add_argument("--slow-gpu", default=(1000.0, 2.0), help="pessimistic GPU", **scenario)
    parser.add_argument(
        "--conv-layer-us", default=20.0, type=float, help="GPU floor per conv-net layer and step"
    )
    args = parser.parse_args()

    base = yaml.safe_load(args.base.read_text())
    config = merged(base, yaml.safe_load(args.config.read_text()))
    models = {}
    for kind in ("mlp", "conv"):
        steps, flops, seconds = measured_jobs(args.measured, base, kind)
        models[kind] = fit(steps, flops, seconds)
        step_s, flop_s = models[kind]
        error = np.median(np.abs((steps * step_s + flops * flop_s) / seconds - 1))
        rate = f"{1 / flop_s / 1e9:.1f} GFLOP/s" if flop_s else "no FLOP term"
        print(
            f"{kind} cost model fitted on {len(seconds)} measured training jobs "
            f"({args.measured}): {step_s * 1e6:.0f} us per step + {rate}; median error {error:.0%}"
        )
    jobs = plan.jobs(config)
    header = (
        "experiment",
        "jobs",
        "model-steps",
        "PFLOP",
        "CPU core-h",
        "GPU-h fast",
        "GPU-h slow",
        "GPU-h fast, one at a time",
        "ensemble gain (fast)",
    )
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    totals = np.zeros(6)
    for experiment in config["experiments"]:
        specs = [spec for (exp, _), spec in jobs.items() if exp == experiment]
        work = [job_work(spec, config["datasets"][spec["dataset"]]) for spec in specs]
        cpu_s = 0.0
        for (steps, flops), spec in zip(work, specs, strict=True):
            step_s, flop_s = models[family(spec)]
            cpu_s += steps * step_s + flops * flop_s
        gpu = [
            gpu_hours(work, specs, scenario, args.conv_layer_us, alone)
            for scenario, alone in (
                (args.fast_gpu, False),
                (args.slow_gpu, False),
                (args.fast_gpu, True),
            )
        ]
        row = np.array(
            [
                sum(s * len(spec["members"]) for (s, _), spec in zip(work, specs, strict=True)),
                sum(f for _, f in work) / 1e15,
                cpu_s / 3600,
                *gpu,
            ]
        )
        totals += row
        print(f"| {experiment} | {len(specs)} | " + format_row(row))
    print(f"| total | {len(jobs)} | " + format_row(totals))
    print(
        "\nCPU core-h: the fitted cost models, one thread per job on this machine. GPU-h: assumed, "
        "not measured (no GPU here): fast = {:g} us per step or {:g} TFLOP/s, slow = {:g} us per "
        "step or {:g} TFLOP/s, whichever is slower for each job, plus {:g} us per layer and step "
        "for conv nets; one at a time pays the per-step floor once per member.".format(
            *args.fast_gpu, *args.slow_gpu, args.conv_layer_us
        )
    )


def format_row(row: np.ndarray) -> str:
    gain = row[5] / row[3] if row[3] else float("nan")
    return (
        f"{row[0]:.3g} | {row[1]:.2f} | {row[2]:.1f} | {row[3]:.2f} | {row[4]:.2f} | "
        f"{row[5]:.2f} | {gain:.1f}× |"
    )


if __name__ == "__main__":
    main()
