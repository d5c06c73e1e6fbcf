"""Measure a model trained elsewhere: every 2-D weight and conv kernel of a checkpoint, no training.

A checkpoint is a `safetensors` file or a PyTorch state dict read with `weights_only=True`: a
file that would need arbitrary unpickling (a pickled module, optimizer objects of custom classes)
is refused, because unpickling can run any code. Conv kernels [out, in, k, …] are measured
reshaped to out × in·k·… as Paper B's code does. With the training hyper-parameters (B, lr, wd)
Paper B's bound is computed; with the number of steps and an initial checkpoint, the learned part
W_T − s_T·W_0 (science.md, Controls); with data, the norm-based bounds of rankbias.bounds, for a
plain ReLU MLP whose dense layers chain from the data's features to its outputs.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rankbias.bounds import model_bounds
from rankbias.controls import control_columns
from rankbias.models import forward
from rankbias.paper_b import bound_columns
from rankbias.spectra import rank_metrics, rank_tolerances, singular_values
from rankbias.vocabulary import BOUND_COLUMNS, DERIVED_COLUMNS, METRICS

SAFE_SAVE = (
    "save the weights alone: `safetensors.torch.save_file(model.state_dict(), "
    "'model.safetensors')` (pip install safetensors), or `torch.save(model.state_dict(), "
    "'model.pt')`"
)


class AuditError(ValueError):
    """A checkpoint cannot be audited; the message names the file and the tensor."""


@dataclass(frozen=True)
class Training:
    """What the user says about how the checkpoint was trained (every key optional)."""

    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    steps: int | None = None
    init_factor: float | None = None  # s_T; default (1 − lr·wd)^steps (a constant lr)
    positions: dict[str, int] = field(default_factory=dict)  # conv tensor -> m_l

    def surviving_init(self) -> float | None:
        """s_T: the share of W_0 left in W_T, given or from a constant lr; None if unknown."""
        if self.init_factor is not None:
            return self.init_factor
        if None in (self.lr, self.weight_decay, self.steps):
            return None
        return (1 - self.lr * self.weight_decay) ** self.steps

    def horizon(self) -> float:
        if self.init_factor is not None:
            return -math.log(self.init_factor) if self.init_factor > 0 else math.inf
        if None in (self.lr, self.weight_decay, self.steps):
            return math.nan
        return self.lr * self.weight_decay * self.steps


@dataclass(frozen=True)
class Weight:
    name: str
    matrix: torch.Tensor  # float64 [out, in·k·…]
    kind: str  # dense or conv
    kernel: int  # conv kernel side (its first spatial size), 0 for dense
    shape: tuple[int, ...]  # as stored


def natural_key(name: str) -> list:
    """`layers.10.weight` after `layers.2.weight`: the order a model's layers come in."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def flatten(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a (possibly nested) state dict, keys joined by dots (`state_dict.0.weight`)."""
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        return {prefix or "tensor": state}
    if isinstance(state, dict):
        for key, value in state.items():
            tensors |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, list | tuple):
        for index, value in enumerate(state):
            tensors |= flatten(value, f"{prefix}.{index}" if prefix else str(index))
    return tensors


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, in its layers' order, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise AuditError(f"{path}: not a readable safetensors file ({error})") from None
        return {name: state[name] for name in sorted(state, key=natural_key)}
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f": it holds {found.group(1)}, not only tensors" if found else ""
        raise AuditError(
            f"{path}: refused: loading it needs arbitrary unpickling, which can run any code"
            f"{what} (torch.load with weights_only=True stopped). Where it was trained, "
            f"{SAFE_SAVE}"
        ) from None
    except (RuntimeError, OSError, EOFError) as error:
        raise AuditError(f"{path}: not a PyTorch checkpoint ({error})") from None
    return flatten(loaded)


def weight_matrices(state: dict[str, torch.Tensor], source: str) -> list[Weight]:
    """Every floating tensor with two or more dimensions: dense weights as they are, conv
    kernels reshaped to out × in·k·…; non-finite values anywhere are refused by tensor."""
    weights = []
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor)
        if bad.any():
            where = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise AuditError(
                f"{source}: tensor {name!r} {tuple(tensor.shape)} has {int(bad.sum())} "
                f"non-finite value(s), the first at index {where} "
                f"({tensor[where].item()}): the model diverged or the file is damaged"
            )
        if tensor.dim() < 2:
            continue
        kind = "dense" if tensor.dim() == 2 else "conv"
        matrix = tensor.detach().double().reshape(tensor.shape[0], -1)
        kernel = int(tensor.shape[2]) if kind == "conv" else 0
        weights.append(Weight(name, matrix, kind, kernel, tuple(tensor.shape)))
    if not weights:
        found = ", ".join(f"{n} {tuple(t.shape)}" for n, t in list(state.items())[:12]) or "none"
        raise AuditError(
            f"{source}: no 2-D weight or conv kernel to measure; tensors found: {found}"
        )
    return weights


def mlp_chain(
    state: dict[str, torch.Tensor], weights: list[Weight], features: int, outputs: int
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """W1…WL and b1…bL of a plain ReLU MLP (the dense weights in order, each layer's input the
    previous one's output, from the data's features to its outputs), or None and why not."""
    if any(w.kind != "dense" for w in weights):
        return None, "the model has conv kernels (the norm bounds are for fully connected nets)"
    names = {w.name for w in weights}
    biases = {n.removesuffix("weight") + "bias" for n in names if n.endswith("weight")}
    other = [n for n, t in state.items() if n not in names | biases and t.is_floating_point()]
    if other:
        return None, f"tensors other than dense weights and biases ({', '.join(other[:4])})"
    shapes = [tuple(w.matrix.shape) for w in weights]
    chained = all(shapes[i + 1][1] == shapes[i][0] for i in range(len(shapes) - 1))
    if not chained or shapes[0][1] != features or shapes[-1][0] != outputs:
        return None, (
            f"the dense layers {' → '.join(f'{o}×{i}' for o, i in shapes)} do not chain from the "
            f"data's {features} features to its {outputs} outputs"
        )
    params = {}
    for layer, weight in enumerate(weights, start=1):
        params[f"W{layer}"] = weight.matrix.unsqueeze(0)
        bias = weight.name.removesuffix("weight") + "bias"
        if weight.name.endswith("weight") and bias in state:
            params[f"b{layer}"] = state[bias].detach().double().reshape(1, -1)
    return params, ""


def data_columns(
    params: dict[str, torch.Tensor], arrays: dict[str, np.ndarray], loss: str, rank_first
) -> dict[str, float]:
    """Losses, accuracies and the model-level bounds of a ReLU MLP on prepared data."""
    depth = sum(key.startswith("W") for key in params)
    columns: dict[str, float] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays or not len(arrays[f"x_{split}"]):
            continue
        x = torch.as_tensor(arrays[f"x_{split}"], dtype=torch.float64)
        y = torch.as_tensor(arrays[f"y_{split}"])
        with torch.no_grad():
            out = forward(params, x, depth)[0]
        if loss == "ce":
            columns[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(out, y))
            columns[f"{split}_acc"] = float((out.argmax(dim=1) == y).double().mean())
        else:
            columns[f"{split}_loss"] = float(0.5 * (out - y.double()).square().sum(dim=1).mean())
    x_train = torch.as_tensor(arrays["x_train"], dtype=torch.float64)
    y_train = torch.as_tensor(arrays["y_train"])
    bounds = model_bounds(params, depth, x_train, y_train, loss, rank_first)
    return columns | {name: float(value[0]) for name, value in bounds.items()}


def audit(
    final: dict[str, torch.Tensor],
    source: str,
    training: Training,
    init: dict[str, torch.Tensor] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    loss: str | None = None,
    metrics: dict | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], str]:
    """One row per weight (rank metrics, Paper B's counts and bound, the learned part, the
    model bounds), the spectra by tensor name, and a note on what could not be computed."""
    weights = weight_matrices(final, source)
    tolerances = rank_tolerances(metrics or {})
    init_weights = {w.name: w for w in weight_matrices(init, f"{source} (init)")} if init else {}
    s_init = training.surviving_init()
    given = None not in (training.batch_size, training.lr, training.weight_decay)
    notes = []
    rows, spectra = [], {}
    for layer, weight in enumerate(weights, start=1):
        sigma = singular_values(weight.matrix.unsqueeze(0))
        spectra[weight.name] = sigma[0].numpy()
        row = {
            "layer": layer,
            "tensor": weight.name,
            "layer_kind": weight.kind if layer < len(weights) else "head",
            "shape": "×".join(map(str, weight.shape)),
            "rows": weight.matrix.shape[0],
            "cols": weight.matrix.shape[1],
            "kernel": weight.kernel,
            **{name: float(value[0]) for name, value in rank_metrics(sigma, **tolerances).items()},
        }
        positions = training.positions.get(weight.name, 1 if weight.kind == "dense" else None)
        row["positions"] = positions if positions is not None else math.nan
        counts = bound_columns(
            sigma,
            training.batch_size or 1,
            torch.tensor([training.lr or 1.0], dtype=torch.float64),
            torch.tensor([training.weight_decay or 0.0], dtype=torch.float64),
            positions or 1,
        )
        for name, value in counts.items():
            bound = name.startswith("galanti_bound")
            row[name] = float(value[0]) if (given and positions) or not bound else math.nan
        if weight.kind == "dense":
            row["operator_norm"] = row["spectral_norm"]
        if s_init is not None:  # the decay controls need the training, not the init
            row |= {"init_factor": s_init, "decay_horizon": training.horizon()}
        if weight.name in init_weights and s_init is not None:
            start = init_weights[weight.name].matrix
            if start.shape != weight.matrix.shape:
                raise AuditError(
                    f"{source}: tensor {weight.name!r} is {weight.shape} but "
                    f"{init_weights[weight.name].shape} in the initial checkpoint"
                )
            controls = control_columns(
                weight.matrix.unsqueeze(0),
                start.unsqueeze(0),
                torch.tensor([s_init], dtype=torch.float64),
                torch.tensor([training.horizon()], dtype=torch.float64),
                tolerances,
            )
            row |= {name: float(value[0]) for name, value in controls.items()}
        rows.append(row)
    if not given:
        notes.append("Paper B's bound needs --batch-size, --lr and --weight-decay")
    elif any(w.kind == "conv" and w.name not in training.positions for w in weights):
        notes.append("a conv layer's bound needs its output positions m_l (--positions NAME=N)")
    if init and s_init is None:
        notes.append("the learned part needs s_T: --lr, --weight-decay and --steps (or s_T)")
    elif init:
        missing = [w.name for w in weights if w.name not in init_weights]
        if missing:
            notes.append(f"not in the initial checkpoint: {', '.join(missing)}")
    table = pd.DataFrame(rows)
    if arrays is not None:
        outputs = int(arrays["y_train"].max()) + 1 if loss == "ce" else arrays["y_train"].shape[1]
        params, why = mlp_chain(final, weights, arrays["x_train"].shape[1], outputs)
        if params is None:
            notes.append(f"no norm bounds: {why}")
        else:
            model = data_columns(params, arrays, loss, torch.tensor([table["rank_galanti"][0]]))
            for name, value in model.items():
                table[name] = value
    else:
        notes.append("the norm bounds need data (--data)")
    for name in BOUND_COLUMNS:
        if name not in table:
            table[name] = math.nan
    return table, spectra, "; ".join(notes)


SHOWN = (
    "tensor",
    "layer_kind",
    "shape",
    "rank_galanti",
    "rank_cut",
    "stable_rank",
    "effective_rank",
    "residual_2",
    "sv_above_0.1",
    "galanti_bound_0.1",
    "effective_rank_learned",
    "movement",
)


def text_table(table: pd.DataFrame, columns: tuple[str, ...] = SHOWN) -> str:
    """The table as Markdown, the columns that have values, numbers to 4 significant digits."""
    shown = [c for c in columns if c in table and table[c].notna().any()]

    def cell(value) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row[c]) for c in shown) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- an experiment


def checkpoint_training(entry: dict) -> Training:
    """An experiment's checkpoint entry (config `experiments.<name>.checkpoints[i]`) as Training."""
    return Training(
        entry.get("batch_size"),
        entry.get("lr"),
        entry.get("weight_decay"),
        entry.get("steps"),
        entry.get("init_factor"),
        dict(entry.get("positions", {})),
    )


def measure_checkpoint(
    entry: dict,
    experiment: str,
    arrays: dict[str, np.ndarray] | None,
    info: dict | None,
    metrics: dict,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One checkpoint of a workflow experiment as rows of results/tables/<experiment>.csv: the
    columns rankbias.measure writes for a trained job (one member, the checkpoint's own
    hyper-parameters), NaN where a trained job's history would be needed (plateaus, norm
    ratios), so the statistics, figures and verdict rules read it unchanged."""
    from rankbias.measure import chance_accuracy, constant_predictor_loss, member_status

    loss = None if info is None else "ce" if info["task"] == "classification" else "mse"
    final = load_state(entry["path"])
    init = load_state(entry["init"]) if entry.get("init") else None
    table, spectra, note = audit(
        final, entry["path"], checkpoint_training(entry), init, arrays, loss, metrics
    )
    depth = len(table)
    members = {
        "experiment": experiment,
        "group": entry["name"],
        "dataset": entry.get("dataset", ""),
        "loss": loss or "",
        "depth": depth,
        "width": int(table["rows"].iloc[:-1].max()) if depth > 1 else int(table["rows"].iloc[0]),
        "batch_norm": False,
        "batch_size": entry.get("batch_size", math.nan),
        "epochs": math.nan,
        "steps": entry.get("steps", math.nan),
        "member": 0,
        "seed": entry.get("seed", 0),
        "lr": entry.get("lr", math.nan),
        "weight_decay": entry.get("weight_decay", math.nan),
        "wd_function": "constant",
        "checkpoint": entry["path"],
        "not_computed": note,
    }
    for split in ("train", "val", "test"):
        for what in ("loss", "acc"):
            members.setdefault(f"{split}_{what}", table.get(f"{split}_{what}", [math.nan])[0])
    status, reason = "ok", ""
    if arrays is not None:
        const_loss = constant_predictor_loss(arrays["y_train"], loss)
        members["const_loss"] = const_loss
        chance = chance_accuracy(arrays["y_train"]) if loss == "ce" else None
        if loss == "mse":
            members["train_r2"] = 1 - members["train_loss"] / const_loss
        final_row = pd.DataFrame([members])
        [status], [reason] = member_status(final_row, np.array([-1]), const_loss, chance)
        members["gap"] = (  # as rankbias.measure: error gap (classifier) or loss gap
            members["train_acc"] - members["test_acc"]
            if loss == "ce"
            else members["test_loss"] - members["train_loss"]
        )
    members |= {"status": status, "status_reason": reason}
    rows = table.drop(columns=[c for c in members if c in table])
    rows.insert(0, "is_output", rows["layer"] == depth)
    for name, value in reversed(members.items()):
        rows.insert(0, name, value)
    for name in METRICS:  # what only a training history gives (plateaus, norm ratios): NaN
        if name not in rows and name not in DERIVED_COLUMNS:
            rows[name] = math.nan
    keyed = {
        f"W{layer}": spectra[name][None, :]
        for layer, name in zip(rows["layer"], rows["tensor"], strict=True)
    }
    return rows, keyed
