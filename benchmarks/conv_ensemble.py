"""Conv ensembles on a CPU: rankbias's grouped and loop modes against one model at a time.

    python benchmarks/conv_ensemble.py            # the audit's CNN at B = 8, 16, 32, 64; ~4 min

The same five models (the default audit's `conv_fashion` CNN on 1 × 28 × 28 images, their own
seeds, learning rates and weight decays) take the same number of SGD steps three ways, one thread:
  - `grouped`: rankbias.train.train_ensemble, all members in one grouped-convolution call;
  - `loop`: the same trainer, members one after another within each step;
  - `reference`: one model at a time, `nn.Sequential` + `torch.optim.SGD(momentum=0,
    weight_decay=wd)`, Paper B's code's pattern (the baseline "one model at a time").
Each arm runs `--repeats` times, alternating; the median of the SGD steps' time counts. Reported:
model-steps per second, each mode against the reference, and whether `ensemble: auto`
(rankbias.convtrain.ensemble_mode) picked the faster mode. Results:
benchmarks/results/conv_ensemble.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rankbias.convshapes import ConvArch  # noqa: E402
from rankbias.convtrain import ensemble_mode  # noqa: E402
from rankbias.train import train_ensemble  # noqa: E402

CHANNELS = (8, "M", 16, "M", 16)  # config/config.yaml, conv_fashion
ARCH = ConvArch("cnn", (1, 28, 28), 10, CHANNELS)
SETTINGS = [(0.1, 0.0), (0.1, 0.06), (0.1, 0.12), (0.05, 0.12), (0.2, 0.12)]  # (lr, wd)
MEMBERS = [(seed, lr, wd) for seed, (lr, wd) in enumerate(SETTINGS)]
STEPS = 64  # per measurement: one epoch of STEPS·B images


def arrays(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in (("train", STEPS * batch), ("test", 16)):
        out[f"x_{split}"] = rng.normal(size=(count, 784)).astype(np.float32)
        out[f"y_{split}"] = rng.integers(0, 10, count)
    return out


def run_trainer(data: dict, batch: int, mode: str) -> float:
    """Seconds of the SGD steps (one epoch, STEPS of them) of every member."""
    spec = {
        "experiment": "bench",
        "group": "g",
        "dataset": "d",
        "loss": "ce",
        "arch": "cnn",
        "channels": list(CHANNELS),
        "image_shape": [1, 28, 28],
        "depth": ARCH.depth,
        "width": ARCH.width,
        "batch_norm": True,
        "batch_size": batch,
        "steps": STEPS,
        "log_every": 10**6,
        "ensemble": mode,
        "dtype": "float32",
        "device": "cpu",
        "metrics": {},
        "members": [
            {"member": i, "seed": s, "lr": lr, "weight_decay": wd, "wd_function": "constant"}
            for i, (s, lr, wd) in enumerate(MEMBERS)
        ],
    }
    return train_ensemble(spec, data, log=lambda _: None).steps_s


def reference_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 1
    for item in CHANNELS:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False), nn.BatchNorm2d(item)]
            layers.append(nn.ReLU())
            channels = item
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(ARCH.layers()[-1].in_channels, 10))


def run_reference(data: dict, batch: int) -> float:
    """Seconds of STEPS SGD steps of each model, one model after another."""
    images = torch.as_tensor(data["x_train"]).view(-1, 1, 28, 28)
    labels = torch.as_tensor(data["y_train"])
    total = 0.0
    for seed, lr, wd in MEMBERS:
        model = reference_model(seed).train()
        optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=0, weight_decay=wd)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        for step in range(STEPS):
            index = order[step * batch : (step + 1) * batch]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
            optimiser.step()
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for batch in args.batches:
        data = arrays(batch)
        seconds: dict[str, list[float]] = {"grouped": [], "loop": [], "reference": []}
        run_trainer(data, batch, "grouped")  # warm-up: oneDNN's kernels for these shapes
        for _ in range(args.repeats):
            for mode in ("grouped", "loop"):
                seconds[mode].append(run_trainer(data, batch, mode))
            seconds["reference"].append(run_reference(data, batch))
        median = {arm: statistics.median(values) for arm, values in seconds.items()}
        model_steps = len(MEMBERS) * STEPS
        auto = ensemble_mode("auto")
        faster = min(("grouped", "loop"), key=median.get)
        rows.append(
            {
                "batch_size": batch,
                **{f"{arm}_model_steps_per_s": model_steps / t for arm, t in median.items()},
                "grouped_vs_reference": median["reference"] / median["grouped"],
                "loop_vs_reference": median["reference"] / median["loop"],
                "spread": {arm: [min(v), max(v)] for arm, v in seconds.items()},
                "auto": auto,
                "faster_mode": faster,
                "auto_vs_reference": median["reference"] / median[auto],
            }
        )
        print(json.dumps(rows[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conv_ensemble.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| B | grouped model-steps/s | loop | one at a time | grouped ÷ one | loop ÷ one | auto |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch_size']} | {row['grouped_model_steps_per_s']:.1f} | "
            f"{row['loop_model_steps_per_s']:.1f} | {row['reference_model_steps_per_s']:.1f} | "
            f"{row['grouped_vs_reference']:.2f}× | {row['loop_vs_reference']:.2f}× | "
            f"{row['auto']} ({row['auto_vs_reference']:.2f}×) |"
        )
    (args.out / "conv_ensemble.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
