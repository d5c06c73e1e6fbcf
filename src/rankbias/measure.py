"""Measure a finished training job: one tidy row per (member, layer) at the final weights.

Besides the rank metrics of W it measures those of the learned part W − s_T·W_0 and the decay
controls (rankbias.controls), whether the decisive metrics had levelled off (plateau), and labels
each member `ok`, `diverged` or `collapsed` (science.md): a network that died (rank 0, chance
accuracy, train R² < 0.1) is excluded from rank evidence, never counted as a low-rank bias.
Spectra are saved separately for plots.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rankbias.bounds import model_bounds
from rankbias.controls import PLATEAU_TOL, control_columns, plateau
from rankbias.convnets import kernel_matrix, operator_norms
from rankbias.convshapes import ConvArch, Layer
from rankbias.paper_a import KINK_TOL, applies, eps_batch, theorem_26, unit_states
from rankbias.paper_b import bound_columns, norm_ratios
from rankbias.spectra import rank_metrics, rank_tolerances, singular_values
from rankbias.train import DTYPES, lr_factor, member_decay_weights
from rankbias.vocabulary import BOUND_COLUMNS, PLATEAU_METRICS

COLLAPSE_MARGIN = 0.05  # accuracy points above chance below which a classifier has collapsed
COLLAPSE_R2 = 0.1  # train R² below which a regression net has collapsed


def constant_predictor_loss(y_train: np.ndarray, loss: str) -> float:
    """Loss of the best input-independent prediction: what a collapsed network achieves."""
    if loss == "mse":
        return float(0.5 * np.square(y_train - y_train.mean(axis=0)).sum(axis=1).mean())
    share = np.bincount(y_train) / len(y_train)
    share = share[share > 0]
    return float(-(share * np.log(share)).sum())


def chance_accuracy(y_train: np.ndarray) -> float:
    """Accuracy of always predicting the majority class."""
    return float(np.bincount(y_train).max() / len(y_train))


def member_status(
    final: pd.DataFrame, diverged_epoch: np.ndarray, const_loss: float, chance: float | None
) -> tuple[list[str], list[str]]:
    statuses, reasons = [], []
    for row, epoch in zip(final.itertuples(), diverged_epoch, strict=True):
        if epoch >= 0 or not np.isfinite(row.train_loss):
            statuses.append("diverged")
            reasons.append(f"non-finite mini-batch loss by epoch {epoch}")
        elif chance is not None and row.train_acc <= chance + COLLAPSE_MARGIN:
            statuses.append("collapsed")
            reasons.append(
                f"train accuracy {row.train_acc:.3f} <= chance {chance:.3f} + {COLLAPSE_MARGIN}"
            )
        elif chance is None and 1 - row.train_loss / const_loss < COLLAPSE_R2:
            statuses.append("collapsed")
            reasons.append(
                f"train R² {1 - row.train_loss / const_loss:.3f} < {COLLAPSE_R2} (train loss "
                f"{row.train_loss:.4g}, constant predictor's {const_loss:.4g})"
            )
        else:
            statuses.append("ok")
            reasons.append("")
    return statuses, reasons


def live_rank_metrics(
    volume: torch.Tensor, live: torch.Tensor, tolerances: dict
) -> dict[str, torch.Tensor]:
    """Rank metrics of V over its live units only (suffix `_live`): dead and collapsed rows
    cannot pass for a low-rank bias. NaN for a member with no live unit."""
    rows = []
    for member in range(volume.shape[0]):
        kept = volume[member][live[member]].unsqueeze(0)
        if kept.shape[1] == 0:
            kept = torch.zeros(1, 1, volume.shape[2], dtype=torch.float64)
        rows.append(rank_metrics(singular_values(kept), **tolerances))
    return {f"{name}_live": torch.cat([row[name] for row in rows]) for name in rows[0]}


def paper_a_columns(
    spec: dict,
    final_weights: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    fro_norm: torch.Tensor,
    residual_2: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """eps_batch (max, mean, full batch), Thm 2.6's bound and ratio, distance to rank 2, and
    unit states, per member: the V-only columns of the first-layer rows."""
    settings = spec.get("metrics", {})
    loss, members = spec["loss"], spec["members"]
    dtype = DTYPES[spec.get("dtype", "float32")]  # eps in the training precision; units in float64
    params = {k: torch.as_tensor(v, dtype=dtype) for k, v in final_weights.items()}
    finite = torch.stack([torch.isfinite(v.flatten(1)).all(dim=1) for v in params.values()]).all(0)
    params = {k: torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in params.items()}
    x_train = torch.as_tensor(arrays["x_train"], dtype=dtype)
    y_train = torch.as_tensor(arrays["y_train"], dtype=torch.long if loss == "ce" else dtype)
    weight_decay = torch.tensor([m["weight_decay"] for m in members], dtype=dtype)
    v_weights = member_decay_weights(members, arrays, dtype, torch.device("cpu"))
    eps = eps_batch(
        params,
        x_train,
        y_train,
        spec["depth"],
        loss,
        spec["batch_size"],
        weight_decay,
        [m["seed"] for m in members],
        settings.get("eps_epochs", 3),
        v_weights,
        spec.get("eval_batch", 4096),
    )
    states, live = unit_states(params, x_train, settings.get("kink_tol", KINK_TOL))
    columns = {
        **eps,
        **theorem_26(eps["eps_batch_max"], weight_decay, spec["batch_size"], fro_norm),
        "dist_rank2": residual_2 * fro_norm,
        **states,
        **live_rank_metrics(params["W1"], live, rank_tolerances(settings)),
    }
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return {name: torch.where(finite, value.double(), nan) for name, value in columns.items()}


def generalization_columns(
    spec: dict, final_weights: dict[str, np.ndarray], arrays: dict[str, np.ndarray], rank_first
) -> dict[str, torch.Tensor]:
    """The bounds of rankbias.bounds per member (NaN for members with non-finite weights)."""
    params = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in final_weights.items()}
    finite = torch.stack([torch.isfinite(v.flatten(1)).all(dim=1) for v in params.values()]).all(0)
    params = {k: torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in params.items()}
    x_train = torch.as_tensor(arrays["x_train"], dtype=torch.float64)
    y_train = torch.as_tensor(arrays["y_train"])
    columns = model_bounds(params, spec["depth"], x_train, y_train, spec["loss"], rank_first)
    # vacuous: at least the trivial value, 1 for an error gap, the constant predictor's loss else
    trivial = 1.0 if spec["loss"] == "ce" else constant_predictor_loss(arrays["y_train"], "mse")
    for name in ("bound_grs", "bound_spectral"):
        columns[f"{name}_vacuous"] = (columns[name] >= trivial).double()
    return {name: torch.where(finite, value, float("nan")) for name, value in columns.items()}


def member_rows(
    spec: dict, history: pd.DataFrame, diverged_epoch: np.ndarray, arrays: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per member: its hyper-parameters, final losses, gap and status (every layer's
    row repeats them)."""
    y_train = arrays["y_train"]
    loss = spec["loss"]
    at_end = history[history["epoch"] == history["epoch"].max()].sort_values("member")
    last = at_end[at_end["layer"] == 1].reset_index(drop=True)
    const_loss = constant_predictor_loss(y_train, loss)
    chance = chance_accuracy(y_train) if loss == "ce" else None
    status, reason = member_status(last, diverged_epoch, const_loss, chance)
    if loss == "ce":
        gap = (1 - last["test_acc"]) - (1 - last["train_acc"])
    else:
        gap = last["test_loss"] - last["train_loss"]
    return pd.DataFrame(
        {
            "experiment": spec["experiment"],
            "group": spec["group"],
            "dataset": spec["dataset"],
            "loss": loss,
            "depth": spec["depth"],
            "width": spec["width"],
            "batch_norm": bool(spec.get("batch_norm", False)),
            "batch_size": spec["batch_size"],
            "epochs": int(history["epoch"].max()),
            # SGD steps taken: whole epochs of ceil(N / B) batches (B2 compares equal step counts)
            "steps": int(history["epoch"].max()) * -(-len(y_train) // spec["batch_size"]),
            "member": last["member"],
            "seed": last["seed"],
            "lr": last["lr"],
            "weight_decay": last["weight_decay"],
            "wd_function": last.get("wd_function", "constant"),
            "train_loss": last["train_loss"],
            "test_loss": last["test_loss"],
            "train_acc": last["train_acc"],
            "test_acc": last["test_acc"],
            "gap": gap,
            "train_r2": 1 - last["train_loss"] / const_loss if loss == "mse" else np.nan,
            "val_loss": last.get("val_loss", np.nan),
            "val_acc": last.get("val_acc", np.nan),
            "const_loss": const_loss,
            "status": status,
            "status_reason": reason,
        }
    )


def layer_rows(
    spec: dict,
    layer: int,
    members: pd.DataFrame,
    final_weights: dict[str, np.ndarray],
    init_weights: dict[str, np.ndarray],
    layer_end: pd.DataFrame,
    arrays: dict[str, np.ndarray],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Layer `layer`'s rows (the member rows plus its rank metrics, Paper B's bounds, the
    controls, and Paper A's columns on V) and its singular values [M, r]. `layer_end`: the
    layer's history rows at the last epoch (its init factor and decay horizon)."""
    tolerances = rank_tolerances(spec.get("metrics", {}))
    last_epoch = int(layer_end["epoch"].max())
    final_lr = torch.tensor([m["lr"] for m in spec["members"]]) * lr_factor(spec, last_epoch)
    weight_decay = torch.tensor([m["weight_decay"] for m in spec["members"]])
    weights = kernel_matrix(torch.as_tensor(final_weights[f"W{layer}"], dtype=torch.float64))
    finite = torch.isfinite(weights).all(dim=(1, 2))
    cleaned = torch.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0)
    sigma = torch.linalg.svdvals(cleaned)
    sigma[~finite] = float("nan")
    metrics = rank_metrics(sigma, **tolerances)
    frame = members.copy()
    frame["layer"] = layer
    frame["is_output"] = layer == spec["depth"]
    frame["rows"], frame["cols"] = weights.shape[1], weights.shape[2]
    shape = layer_shape(spec, final_weights, layer)
    frame["layer_kind"], frame["kernel"] = shape.role, shape.kernel
    frame["positions"] = shape.positions  # Paper B's m_l: 1 for a dense layer
    for name, value in metrics.items():
        frame[name] = value.numpy()
    for name, value in bound_columns(
        sigma, spec["batch_size"], final_lr, weight_decay, shape.positions
    ).items():
        frame[name] = value.numpy()
    controls = control_columns(
        cleaned,
        kernel_matrix(torch.as_tensor(init_weights[f"W{layer}"], dtype=torch.float64)),
        torch.tensor(layer_end["init_factor"].to_numpy()),
        torch.tensor(layer_end["decay_horizon"].to_numpy()),
        tolerances,
    )
    for name, value in controls.items():
        frame[name] = torch.where(finite, value.double(), float("nan")).numpy()
    if layer == 1 and applies(spec):
        for name, value in paper_a_columns(
            spec, final_weights, arrays, metrics["fro_norm"], metrics["residual_2"]
        ).items():
            frame[name] = value.numpy()
    return frame, sigma.numpy()


def layer_shape(spec: dict, final_weights: dict[str, np.ndarray], layer: int) -> Layer:
    """Layer `layer` of the job's net: a conv of its conv net, or a dense layer (kernel 0, one
    position) of an MLP."""
    if spec.get("arch", "mlp") == "mlp":
        rows, cols = final_weights[f"W{layer}"].shape[1:]
        return Layer(cols, rows, 0, 1, 1, "head" if layer == spec["depth"] else "dense")
    return conv_arch(spec, final_weights).layers()[layer - 1]


def conv_arch(spec: dict, final_weights: dict[str, np.ndarray]) -> ConvArch:
    out_dim = final_weights[f"W{spec['depth']}"].shape[1]
    return ConvArch(spec["arch"], tuple(spec["image_shape"]), out_dim, tuple(spec["channels"]))


def conv_bound_columns(
    spec: dict, final_weights: dict[str, np.ndarray], frames: list[pd.DataFrame]
) -> None:
    """Each layer's `operator_norm` (the conv as the map it applies, rankbias.convnets) beside
    the reshaped kernel's `spectral_norm`. The model-level bounds of rankbias.bounds are defined
    for fully connected nets and stay NaN for conv nets (config/README.md, "Conv nets")."""
    weights = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in final_weights.items()}
    finite = torch.stack([torch.isfinite(v.flatten(1)).all(dim=1) for v in weights.values()]).all(0)
    weights = {k: torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in weights.items()}
    norms = operator_norms(conv_arch(spec, final_weights), weights)
    for frame, layer in zip(frames, sorted(norms), strict=True):
        frame["operator_norm"] = torch.where(finite, norms[layer], float("nan")).numpy()
        for name in BOUND_COLUMNS:
            frame[name] = np.nan


def measure_job(
    spec: dict,
    final_weights: dict[str, np.ndarray],
    init_weights: dict[str, np.ndarray],
    history: pd.DataFrame,
    diverged_epoch: np.ndarray,
    arrays: dict[str, np.ndarray],
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Tidy metrics table and spectra {"W{layer}": [M, r]} for one training job: `layer_rows`
    for every layer, the model-level generalization columns, norm ratios and plateaus."""
    members = member_rows(spec, history, diverged_epoch, arrays)
    at_end = history[history["epoch"] == history["epoch"].max()].sort_values("member")
    frames, spectra = [], {}
    for layer in range(1, spec["depth"] + 1):
        layer_end = at_end[at_end["layer"] == layer]
        frame, spectra[f"W{layer}"] = layer_rows(
            spec, layer, members, final_weights, init_weights, layer_end, arrays
        )
        frames.append(frame)
    if spec.get("arch", "mlp") != "mlp":
        conv_bound_columns(spec, final_weights, frames)
    else:
        first_rank = torch.tensor(frames[0]["rank_galanti"].to_numpy())
        for name, value in generalization_columns(spec, final_weights, arrays, first_rank).items():
            for frame in frames:  # model-level numbers, repeated on each layer's row
                frame[name] = value.numpy()
        for frame in frames:  # a dense layer's operator norm is its spectral norm
            frame["operator_norm"] = frame["spectral_norm"]
    table = pd.concat(frames, ignore_index=True)
    table = table.merge(norm_ratios(history), on=["member", "layer"], how="left")
    tolerance = spec.get("metrics", {}).get("plateau_tol", PLATEAU_TOL)
    for metric in PLATEAU_METRICS:
        table = table.merge(plateau(history, metric, tolerance), on=["member", "layer"])
    return table, spectra
