"""Train an ensemble of ReLU MLPs with plain mini-batch SGD and coupled weight decay.

Every member has its own initialisation and data order (both from its seed), its own learning rate
and weight decay; all members share architecture and batch size and step together as stacked
tensors. The update is `torch.optim.SGD(lr, momentum=0, weight_decay=wd)`'s,
W <- W - lr * (grad L_batch + wd * W), i.e. the penalty (wd/2)||W||_F^2 (science.md conventions),
with the decay applied exactly at every lr·wd: every tensor is a float64 scale per member times a
stored tensor, and the factor (1 - lr·wd) goes to the scale (rankbias.decay; a float32 factor
rounds to 1 at lr·wd < 3e-8). The backward pass is written out by hand (ReLU MLP, mse or ce), with
the update fused into the gradient GEMM (`W~.baddbmm_(-(lr/scale)*delta^T, a)`), so a step never
materialises a gradient or a temporary of weight size. A member whose mini-batch loss becomes
non-finite gets learning rate 0 from then on and is marked diverged; the others go on. There is no
host synchronisation inside an epoch. Every logged epoch records, per member and layer, the rank
metrics of W and of its learned part W - s_t·W_0, the init factor s_t, the decay horizon and the
movement from W_0. With a `Checkpointer`, the whole state is saved at step boundaries (every so
many seconds, and on SIGTERM/SIGUSR1) and a restarted job resumes from it bit-identically
(rankbias.checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from rankbias import paper_a
from rankbias.checkpoint import Checkpointer
from rankbias.controls import control_columns
from rankbias.decay import ExactDecay, fold_interval
from rankbias.models import (
    NORM_PARAMS,
    Arch,
    backward,
    forward,
    init_params,
    losses_and_gradient,
    member_losses,
    update_running_stats,
)
from rankbias.spectra import rank_metrics, rank_tolerances, singular_values

DATA_SEED_OFFSET = 1_000_003  # data order and initialisation come from different streams
DTYPES = {"float32": torch.float32, "float64": torch.float64}
WD_FUNCTIONS = ("constant", "input_norm", "target_abs")


@dataclass
class TrainResult:
    init: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    history: pd.DataFrame
    diverged_epoch: np.ndarray  # -1 for members that never diverged
    wall_time_s: float  # summed over every run of a resumed job
    device: str
    resumed: list[str]  # where each resume started ("epoch e, sample s of N")
    steps_s: float = 0.0  # of the wall time: SGD steps only (no evaluation, logging, checkpoints)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


@torch.no_grad()
def sgd_step(
    params: dict[str, torch.Tensor],
    decay: ExactDecay,
    forward_inputs: tuple[dict, dict],
    cache: list,
    step: torch.Tensor,
    alive: torch.Tensor,
    first_rate: torch.Tensor | None = None,
) -> None:
    """W <- (1 - lr*wd) W - lr * grad, layer by layer from the output, backprop by hand.

    `params` hold the stored tensors of `decay` (actual = scale·stored): the float64 scale takes
    the decay (this epoch's rates, `decay.set_rates`, for the `alive` members), the stored tensor
    the gradient step divided by the new scale. `step` is lr * dLoss/d(output), zero for frozen
    members. Backpropagation is linear in it, so every layer's delta arrives already scaled by its
    member's learning rate. `first_rate` [M], when given, is W1 = V's decay rate this step (a
    data-dependent weight decay, Paper A's g(x, y)). `forward_inputs` are what the forward pass
    that filled `cache` took.
    """
    decay.step(alive, first_rate)

    def update(
        layer: int, step_layer: torch.Tensor, inputs: torch.Tensor, norm_steps: tuple | None
    ) -> None:
        bias = f"b{layer}"
        if bias in params:
            bias_step = step_layer.sum(dim=1)
            params[bias].sub_(bias_step.mul_(decay.inverse_scale(bias, bias_step)))
        if norm_steps is not None:  # batch norm's scale and shift decay like biases
            for kind, norm_step in zip(NORM_PARAMS, norm_steps, strict=True):
                name = f"{kind}{layer}"
                params[name].sub_(norm_step.mul_(decay.inverse_scale(name, norm_step)))
        weight = f"W{layer}"
        step_layer.mul_(decay.inverse_scale(weight, step_layer))  # used: backward's contract
        params[weight].baddbmm_(step_layer.mT, inputs, alpha=-1)

    step_params, weight_scales = forward_inputs
    backward(step_params, cache, step, update, weight_scales)


@torch.no_grad()
def evaluate(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    depth: int,
    loss: str,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy (NaN for regression) of every member on a whole split."""
    members = params["W1"].shape[0]
    loss_sum = torch.zeros(members, dtype=torch.float64, device=x.device)
    correct = torch.zeros(members, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        outputs = forward(params, xb, depth)
        targets = yb.expand(members, *yb.shape)
        loss_sum += member_losses(outputs, targets, loss).double() * len(xb)
        if loss == "ce":
            correct += (outputs.argmax(dim=-1) == yb).sum(dim=1).double()
    accuracy = correct / len(x) if loss == "ce" else torch.full_like(correct, float("nan"))
    return (loss_sum / len(x)).cpu(), accuracy.cpu()


def _history_rows(
    epoch: int,
    params: dict[str, torch.Tensor],
    init_weights: dict[str, torch.Tensor],
    decay: ExactDecay,
    depth: int,
    values: dict[str, torch.Tensor],
    first_layer: dict[str, torch.Tensor],
    tolerances: dict,
) -> list[dict]:
    """One row per (member, layer): member-level `values`, V-only `first_layer`, rank metrics of
    W and of its learned part, the decay controls."""
    rows = []
    for layer in range(1, depth + 1):
        weight = f"W{layer}"
        metrics = rank_metrics(singular_values(params[weight]), **tolerances)
        metrics |= control_columns(
            params[weight], init_weights[weight], *decay.controls(weight), tolerances
        )
        for member in range(params["W1"].shape[0]):
            row = {"epoch": epoch, "member_index": member, "layer": layer}
            row.update({name: value[member].item() for name, value in values.items()})
            row.update({name: value[member].item() for name, value in metrics.items()})
            if layer == 1:
                row.update({name: value[member].item() for name, value in first_layer.items()})
            rows.append(row)
    return rows


def decay_weights(form: str, x_train: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Per-sample weights h_i, mean 1 over the training set, of V's data-dependent weight decay.

    Paper A lets µ_V(S') = (1/B) Σ_{j in S'} g(x_j, y_j); we use g = (wd/2)·h, so a batch decays V
    by wd·mean(h over the batch) and the average decay equals ordinary weight decay's.
    `constant`: h = 1 (ordinary weight decay); `input_norm`: h ∝ ||x||²; `target_abs`: h ∝ |y|
    summed over outputs (regression only).
    """
    if form == "constant":
        weights = np.ones(len(x_train))
    elif form == "input_norm":
        weights = np.square(x_train).sum(axis=1)
    elif form == "target_abs":
        if y_train.ndim != 2 or not np.issubdtype(y_train.dtype, np.floating):
            raise ValueError("wd_function target_abs needs a regression target (loss mse)")
        weights = np.abs(y_train).sum(axis=1)
    else:
        raise ValueError(f"unknown wd_function {form!r}; allowed: {', '.join(WD_FUNCTIONS)}")
    return weights / weights.mean()


def member_decay_weights(
    members: list[dict], arrays: dict[str, np.ndarray], dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """[M, N] V-decay weights of every member, or None when every member uses constant g."""
    forms = [m.get("wd_function", "constant") for m in members]
    if all(form == "constant" for form in forms):
        return None
    weights = [decay_weights(form, arrays["x_train"], arrays["y_train"]) for form in forms]
    return torch.as_tensor(np.stack(weights), dtype=dtype, device=device)


def schedule(spec: dict, n_train: int) -> tuple[int, int]:
    """Epochs (from `epochs`, or `steps` rounded up to whole epochs) and the logging interval."""
    steps_per_epoch = -(-n_train // spec["batch_size"])
    epochs = spec.get("epochs") or -(-spec["steps"] // steps_per_epoch)
    return epochs, spec.get("log_every") or max(1, epochs // 6)


def lr_factor(spec: dict, epoch: int) -> float:
    """Multi-step decay (Paper B's protocol, torch's MultiStepLR): the learning rate of the
    `epoch`-th epoch (1-based) is lr·gamma^(number of milestones passed)."""
    passed = sum(milestone < epoch for milestone in spec.get("lr_milestones") or ())
    return spec.get("lr_gamma", 0.1) ** passed


def train_ensemble(
    spec: dict,
    arrays: dict[str, np.ndarray],
    log: Callable[[str], None] = print,
    checkpointer: Checkpointer | None = None,
) -> TrainResult:
    """Train every member of `spec["members"]` on the prepared arrays; see the module docstring.

    With a `checkpointer`, resume from its checkpoint when one of this spec exists, and save the
    whole state at step boundaries when it is due; the result equals an uninterrupted run's.
    """
    device = resolve_device(spec.get("device", "auto"))
    dtype = DTYPES[spec.get("dtype", "float32")]
    loss, depth, batch_size = spec["loss"], spec["depth"], spec["batch_size"]
    members = spec["members"]
    count = len(members)
    label_dtype = torch.long if loss == "ce" else dtype
    splits = ("train", "val", "test") if len(arrays.get("x_val", ())) else ("train", "test")
    for name in (f"{kind}_{split}" for split in splits for kind in "xy"):
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{name} holds non-finite values: the prepared data are unusable")
    x_train = torch.as_tensor(arrays["x_train"], dtype=dtype, device=device)
    y_train = torch.as_tensor(arrays["y_train"], dtype=label_dtype, device=device)
    evaluated = {  # the splits every logged epoch evaluates (train is also trained on)
        split: (
            torch.as_tensor(arrays[f"x_{split}"], dtype=dtype, device=device),
            torch.as_tensor(arrays[f"y_{split}"], dtype=label_dtype, device=device),
        )
        for split in splits[1:]
    }
    evaluated = {"train": (x_train, y_train), **evaluated}
    out_dim = int(y_train.max().item()) + 1 if loss == "ce" else y_train.shape[1]
    arch = Arch(
        x_train.shape[1],
        spec["width"],
        depth,
        out_dim,
        spec.get("output_bias", False),
        spec.get("batch_norm", False),
    )
    if arch.batch_norm and (batch_size == 1 or len(x_train) % batch_size == 1):
        raise ValueError(
            f"batch_norm needs every mini-batch to hold >= 2 samples; batch_size {batch_size} "
            f"with {len(x_train)} training samples leaves a batch of 1"
        )

    seeds = [m["seed"] for m in members]
    params = init_params(arch, seeds, dtype, device)
    init = {name: value.cpu().numpy().copy() for name, value in params.items()}
    init_weights = {name: value.clone() for name, value in params.items() if name[0] == "W"}
    # learning rates and weight decays in float64: the decay factors (1 - lr·wd) must be exact
    lr = torch.tensor([m["lr"] for m in members], dtype=torch.float64, device=device)
    wd = torch.tensor([m["weight_decay"] for m in members], dtype=torch.float64, device=device)
    bias_wd = wd if spec.get("bias_decay", True) else torch.zeros_like(wd)
    v_weights = member_decay_weights(members, arrays, torch.float64, device)
    data_generators = [torch.Generator().manual_seed(s + DATA_SEED_OFFSET) for s in seeds]
    alive = torch.ones(count, dtype=torch.bool, device=device)
    diverged_epoch = np.full(count, -1)
    settings = spec.get("metrics", {})
    tolerances = rank_tolerances(settings)
    chunk = spec.get("eval_batch", 4096)
    n_train = len(x_train)
    epochs, log_every = schedule(spec, n_train)
    max_h = float(v_weights.max()) if v_weights is not None else 1.0
    max_factor = max(lr_factor(spec, e) for e in range(1, epochs + 1))
    max_rate = float((lr * wd).max()) * max_factor * max(1.0, max_h)
    decay = ExactDecay(params, dtype, fold_interval(max_rate))

    def snapshot(epoch: int) -> list[dict]:
        current = decay.effective(params)
        dead = (~alive).cpu().numpy() & (diverged_epoch < 0)
        diverged_epoch[dead] = epoch
        values = {"diverged": (~alive).cpu()}
        for split, (x_split, y_split) in evaluated.items():
            split_loss, split_acc = evaluate(current, x_split, y_split, depth, loss, chunk)
            values |= {f"{split}_loss": split_loss, f"{split}_acc": split_acc}
        train_loss = values["train_loss"]
        first_layer = {}
        if settings.get("eps_log_epochs", 1) and paper_a.applies(spec):
            first_layer = paper_a.eps_batch(
                current,
                x_train,
                y_train,
                depth,
                loss,
                batch_size,
                wd,
                [s + epoch for s in seeds],
                settings.get("eps_log_epochs", 1),
                v_weights,
                chunk,
            )
        median = np.nanmedian(train_loss.numpy()) if alive.any() else float("nan")
        log(
            f"  logged epoch {epoch}: median train loss {median:.4g}, "
            f"alive {int(alive.sum())}/{count}"
        )
        return _history_rows(
            epoch, current, init_weights, decay, depth, values, first_layer, tolerances
        )

    # Progress: the epoch in progress, its data order, the position of the next batch in it.
    epoch, position, order = 1, 0, None
    loss_sum = torch.zeros(count, dtype=torch.float64, device=device)  # read once per epoch
    earlier_wall, resumed, steps_s = 0.0, [], 0.0
    saved = checkpointer.load(spec) if checkpointer else None
    if saved is None:
        history = None
    else:
        for name, value in saved["params"].items():
            params[name].copy_(value)
        decay.load(saved["decay"])
        alive.copy_(saved["alive"])
        loss_sum.copy_(saved["loss_sum"])
        diverged_epoch[:] = saved["diverged_epoch"]
        for generator, state in zip(data_generators, saved["generators"], strict=True):
            generator.set_state(state)
        torch.set_rng_state(saved["torch_rng"])
        epoch, position, history = saved["epoch"], saved["position"], saved["history"]
        order = saved["order"].to(device)
        earlier_wall, resumed = saved["wall_s"], saved["resumed"] + [saved["where"]]
        steps_s = saved["steps_s"]
        log(f"resumed from {checkpointer.path} at {saved['where']}")

    def save_checkpoint() -> None:
        where = f"epoch {epoch}, sample {position} of {n_train}"
        state = {
            "params": {name: value.cpu() for name, value in params.items()},
            "decay": decay.state(),
            "alive": alive.cpu(),
            "loss_sum": loss_sum.cpu(),
            "diverged_epoch": diverged_epoch.copy(),
            "generators": [generator.get_state() for generator in data_generators],
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "position": position,
            "order": order.cpu(),
            "history": history,
            "wall_s": earlier_wall + time.perf_counter() - started,
            "steps_s": steps_s + time.perf_counter() - epoch_started,
            "where": where,
            "resumed": resumed,
        }
        checkpointer.save(state, spec, where)

    log(
        f"training {count} members {arch} on {device} ({dtype}), batch {batch_size}, "
        f"{epochs} epochs of {-(-n_train // batch_size)} steps"
    )
    if history is None:
        history = snapshot(0)
    started = time.perf_counter()
    first_epoch = epoch
    progress_every = max(1, epochs // 50)
    while epoch <= epochs:
        if order is None:  # a new epoch (a resumed one comes with its order)
            order = torch.stack([torch.randperm(n_train, generator=g) for g in data_generators])
            order, position = order.to(device), 0
            loss_sum.zero_()
        epoch_lr = lr * lr_factor(spec, epoch)  # float64 [M]
        decay.set_rates(epoch_lr * wd, epoch_lr * bias_wd)
        step_lr = epoch_lr.to(dtype).view(-1, 1, 1)
        epoch_started = time.perf_counter()
        while position < n_train:
            index = order[:, position : position + batch_size]
            cache: list = []
            forward_inputs = decay.forward_inputs(params)
            step_params, weight_scales = forward_inputs
            outputs = forward(step_params, x_train[index], depth, cache, True, weight_scales)
            batch_losses, delta = losses_and_gradient(outputs, y_train[index], loss)
            alive &= torch.isfinite(batch_losses)
            loss_sum += batch_losses.double() * index.shape[1]
            v_rate = None
            if v_weights is not None:  # this batch's V decay: wd · mean of g over the batch
                batch_g = torch.gather(v_weights, 1, index).mean(dim=1)
                v_rate = decay.rate_table[decay.index["W1"]] * batch_g * alive
            step = torch.where(alive.view(-1, 1, 1), delta, 0.0).mul_(step_lr)
            sgd_step(params, decay, forward_inputs, cache, step, alive, v_rate)
            if arch.batch_norm:
                update_running_stats(params, cache, index.shape[1], alive)
            decay.after_step(params)
            position += batch_size
            if checkpointer and checkpointer.due():
                saving_started = time.perf_counter()
                save_checkpoint()
                epoch_started += time.perf_counter() - saving_started  # not a step's time
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once an epoch, so that steps_s is the GPU's time
        steps_s += time.perf_counter() - epoch_started
        if epoch % progress_every == 0 or epoch == epochs:
            elapsed = time.perf_counter() - started
            live = (loss_sum / n_train)[alive]
            epoch_loss = live.median().item() if len(live) else float("nan")
            done = epoch - first_epoch + 1
            log(
                f"epoch {epoch}/{epochs} mean batch loss (median over live members) "
                f"{epoch_loss:.4g} elapsed {elapsed:.1f}s eta "
                f"{elapsed / done * (epochs - epoch):.1f}s"
            )
        if epoch % log_every == 0 or epoch == epochs:
            history += snapshot(epoch)
        epoch, order = epoch + 1, None
    wall = earlier_wall + time.perf_counter() - started
    final = {name: value.cpu().numpy().copy() for name, value in decay.effective(params).items()}
    frame = pd.DataFrame(history)
    ids = pd.DataFrame(members)
    ids["member_index"] = range(count)
    frame = ids.merge(frame, on="member_index").drop(columns="member_index")
    return TrainResult(init, final, frame, diverged_epoch, wall, str(device), resumed, steps_s)
