"""The preflight: before the first training job, check on the training device what CI (no GPU)
cannot, so a broken CUDA path stops the run before any GPU-hour is spent.

On the job's device it trains three tiny ensembles (a two-layer regression net with Paper A's
eps_batch hook, a depth-3 batch-normalised classifier, a small conv net with augmentation) and
checks that
- every member agrees with the same ensemble trained on the CPU, in float64 and in float32, to
  the stated tolerances (a GPU with TF32 matmuls, or a kernel that is wrong, misses them);
- a member equals the same model trained alone (members must not leak into each other);
- a run stopped at a checkpoint and resumed ends bit-identical to an uninterrupted one.
It records the device, driver and torch build. On a machine without a GPU the device is the CPU:
the first check then compares the CPU with itself and says so.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rankbias.checkpoint import Checkpointer
from rankbias.convshapes import ConvArch
from rankbias.stop_signals import Preempted
from rankbias.train import train_ensemble

# Largest relative difference ||W_device - W_cpu||_F / ||W_cpu||_F allowed per weight matrix
# after the preflight's 48 steps: float64 sums in another order (~1e-15 a step); float32's ~1e-7
# a step stays below 1e-4, TF32 (10-bit mantissa) does not.
AGREEMENT = {"float64": 1e-10, "float32": 1e-4}
ALONE = 1e-12  # a member trained alone (float64): the same numbers up to summation order
CNN_SHAPE = ConvArch("cnn", (1, 8, 8), 3, (4, "M", 4))  # 3 classes: the teacher's argmax
CNN = {  # that conv net, grouped on every device, with augmentation
    "loss": "ce",
    "arch": CNN_SHAPE.name,
    "channels": list(CNN_SHAPE.channels),
    "image_shape": list(CNN_SHAPE.in_shape),
    "depth": CNN_SHAPE.depth,
    "width": CNN_SHAPE.width,
    "batch_norm": True,
    "ensemble": "grouped",
    "augment": {"crop": 1, "flip": True, "rotate": 10},
}
MEMBERS = [  # three members of different step sizes and decay
    {"member": i, "lr": lr, "weight_decay": wd, "seed": i, "wd_function": "constant"}
    for i, (lr, wd) in enumerate([(0.05, 0.0), (0.05, 0.01), (0.02, 0.03)])
]


def problems() -> dict[str, tuple[dict, dict[str, np.ndarray]]]:
    """The two tiny training problems: name -> (spec without dtype and device, arrays)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((320, 12)).astype(np.float32)
    teacher = rng.standard_normal((12, 3)).astype(np.float32)
    targets = np.tanh(x @ teacher)
    arrays = {"x_train": x[:256], "x_test": x[256:]}
    regression = {
        **arrays,
        "y_train": targets[:256, :1].copy(),
        "y_test": targets[256:, :1].copy(),
    }
    labels = targets.argmax(axis=1)
    images = np.tanh(x @ rng.standard_normal((12, 64))).astype(np.float32)  # 8 × 8 pictures
    classification = {**arrays, "y_train": labels[:256], "y_test": labels[256:]}
    common = {
        "experiment": "preflight",
        "dataset": "preflight",
        "batch_size": 16,
        "epochs": 3,
        "steps": None,
        "log_every": 1,
        "lr_milestones": [],
        "metrics": {"eps_log_epochs": 1},
        "members": MEMBERS,
    }
    return {
        "two_layer_mse": (
            {**common, "group": "two_layer_mse", "loss": "mse", "depth": 2, "width": 16},
            regression,
        ),
        "depth3_batch_norm_ce": (
            {
                **common,
                "group": "depth3_batch_norm_ce",
                "loss": "ce",
                "depth": 3,
                "width": 16,
                "batch_norm": True,
            },
            classification,
        ),
        "small_cnn_ce": (  # the conv path: grouped convolutions, batch norm, augmentation
            {**common, "group": "small_cnn_ce", **CNN},
            {**classification, "x_train": images[:256], "x_test": images[256:]},
        ),
    }


Trainer = Callable[..., object]  # rankbias.train.train_ensemble's signature and result


def _train(
    trainer: Trainer, spec: dict, arrays: dict, checkpointer: Checkpointer | None = None
) -> dict:
    return trainer(spec, arrays, log=lambda _: None, checkpointer=checkpointer).final


def _difference(first: dict, second: dict, member: slice = slice(None)) -> float:
    """The largest relative Frobenius difference over the weight matrices (and biases)."""
    worst = 0.0
    for name, value in second.items():
        other = first[name][member].astype(np.float64)
        value = value.astype(np.float64)
        scale = max(np.linalg.norm(value), 1e-300)
        worst = max(worst, float(np.linalg.norm(other - value) / scale))
    return worst


def _resumed_equals(trainer: Trainer, spec: dict, arrays: dict, uninterrupted: dict) -> bool:
    """Stop at the 5th checkpoint (mid-epoch), resume in a new Checkpointer, compare bitwise."""
    with tempfile.TemporaryDirectory() as folder:
        stopping = Checkpointer(Path(folder), every_s=0, stop_after=5, log=lambda _: None)
        try:
            _train(trainer, spec, arrays, stopping)
            return False  # it should have stopped
        except Preempted:
            pass
        resuming = Checkpointer(Path(folder), every_s=0, log=lambda _: None)
        resumed = _train(trainer, spec, arrays, resuming)
    return all(np.array_equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def device_facts(device: str) -> dict:
    """What ran the preflight: the device, its driver, the torch build."""
    facts = {
        "device": device,
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
        try:
            facts["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                check=True,
                timeout=20,
            ).stdout.split()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            facts["driver"] = "unknown (nvidia-smi not available)"
    return facts


def run_preflight(device: str, trainer: Trainer | None = None) -> dict:
    """Every check on `device` (as rankbias.devices.job_device chose it); `passed` is whether
    all hold. `trainer` defaults to rankbias.train.train_ensemble (tests hand in faulty ones)."""
    trainer = trainer or train_ensemble
    checks = []

    def check(text: str, value: float, tolerance: float) -> None:
        checks.append(
            {"check": text, "value": value, "tolerance": tolerance, "passed": value <= tolerance}
        )

    for name, (spec, arrays) in problems().items():
        on_device = {}  # dtype -> final weights: the agreement runs serve the other checks too
        for dtype, tolerance in AGREEMENT.items():
            typed = {**spec, "dtype": dtype}
            on_device[dtype] = _train(trainer, {**typed, "device": device}, arrays)
            on_cpu = _train(trainer, {**typed, "device": "cpu"}, arrays)
            difference = _difference(on_device[dtype], on_cpu)
            check(f"{name}, {dtype}: {device} agrees with the CPU", difference, tolerance)
        f64 = {**spec, "dtype": "float64", "device": device}
        alone = _train(trainer, {**f64, "members": MEMBERS[1:2]}, arrays)
        difference = _difference(on_device["float64"], alone, slice(1, 2))
        check(f"{name}: member 1 equals the same model trained alone", difference, ALONE)
        f32 = {**spec, "dtype": "float32", "device": device}
        differs = not _resumed_equals(trainer, f32, arrays, on_device["float32"])
        check(f"{name}: stopped at a checkpoint and resumed, bit-identical", float(differs), 0.0)
    facts = device_facts(device)
    if torch.device(device).type == "cpu":
        facts["note"] = "no GPU: the device-against-CPU checks compare the CPU with itself"
    return {**facts, "checks": checks, "passed": all(check["passed"] for check in checks)}
