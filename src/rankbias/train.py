"""Train an ensemble of ReLU MLPs or conv nets with plain mini-batch SGD and coupled weight decay.

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

Conv nets (rankbias.convnets) share all of this but the step: theirs is autograd's, with Paper
B's augmentation, in rankbias.convtrain; their kernels are measured reshaped to out × in·k·k.

The loop is data and a few functions: `Setup` is what a run reads and never changes (spec, data
on the device, initialisation, schedule), `TrainState` everything it changes (parameters, decay
scales, generators, position, alive mask, history, timers); a checkpoint is the state saved and a
resume the state loaded. `train_ensemble` is set up → restore → per epoch `run_epoch` and
`log_snapshot`; per-epoch extras of the first layer (Paper A's eps_batch) come in as hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from rankbias import convnets, convtrain, paper_a
from rankbias.checkpoint import Checkpointer, array_digest, spec_digest
from rankbias.controls import control_columns
from rankbias.convnets import kernel_matrix
from rankbias.convshapes import CONV_EVAL_CHUNK, ConvArch
from rankbias.decay import ExactDecay, fold_interval
from rankbias.memory import returned_heap
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
from rankbias.plan import EVAL_CHUNK
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


def network_outputs(
    arch: Arch | ConvArch, params: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Every member's outputs [M, N, out] on shared inputs, in evaluation mode."""
    if isinstance(arch, ConvArch) and x.device.type == "cpu":  # one member at a time:
        members = params["W1"].shape[0]  # 1.7x faster than grouped for 15 members here
        parts = [{k: v[m : m + 1] for k, v in params.items()} for m in range(members)]
        return torch.cat([convnets.forward(arch, part, x) for part in parts])
    if isinstance(arch, ConvArch):
        return convnets.forward(arch, params, x)
    return forward(params, x, arch.depth)


@torch.no_grad()
def split_loss_accuracy(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    arch: Arch | ConvArch,
    loss: str,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy (NaN for regression) of every member on a whole split."""
    members = params["W1"].shape[0]
    loss_sum = torch.zeros(members, dtype=torch.float64, device=x.device)
    correct = torch.zeros(members, dtype=torch.float64, device=x.device)
    for start in range(0, len(x), chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        outputs = network_outputs(arch, params, xb)
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
        matrix, init_matrix = (kernel_matrix(p[weight]) for p in (params, init_weights))
        metrics = rank_metrics(singular_values(matrix), **tolerances)
        metrics |= control_columns(matrix, init_matrix, *decay.controls(weight), tolerances)
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


@dataclass(frozen=True)
class Setup:
    """What a training run reads and never changes: the spec, its data on the device, the
    initialisation W_0 and the schedule."""

    spec: dict
    device: torch.device
    dtype: torch.dtype
    arch: Arch
    x_train: torch.Tensor
    y_train: torch.Tensor
    evaluated: dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (x, y), train first
    init: dict[str, torch.Tensor]  # W_0 and the other initial tensors, [M, ...]
    seeds: list[int]
    lr: torch.Tensor  # [M] float64: the decay factors (1 - lr·wd) must be exact
    wd: torch.Tensor
    bias_wd: torch.Tensor
    v_weights: torch.Tensor | None  # [M, N] Paper A's g per sample, None for constant g
    epochs: int
    log_every: int
    fold_every: int  # rankbias.decay
    tolerances: dict
    chunk: int  # evaluation batch
    job_digest: str  # spec, prepared arrays and code: what a checkpoint must match ("" if unsaved)
    ensemble: str = ""  # conv nets: "loop" or "grouped" (rankbias.convtrain)
    augment: dict = field(default_factory=dict)  # conv nets: Paper B's transforms (convtrain)
    fill: torch.Tensor | None = None  # [C] the darkest training pixel: augmentation's padding

    @property
    def members(self) -> int:
        return len(self.seeds)

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def batch_size(self) -> int:
        return self.spec["batch_size"]


class Stopwatch:
    """Seconds summed over intervals, across the runs of a resumed job (the total travels in the
    checkpoint)."""

    def __init__(self, total: float = 0.0) -> None:
        self.total, self._since = total, None

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> None:
        self.total, self._since = self.seconds(), None

    def seconds(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self.total + running


@dataclass
class TrainState:
    """Everything training changes: a checkpoint is this object saved (`saved`), a resumed run
    this object loaded (`load`)."""

    params: dict[str, torch.Tensor]  # stored tensors: actual = scale·stored (rankbias.decay)
    decay: ExactDecay
    generators: list[torch.Generator]  # each member's data order
    alive: torch.Tensor  # [M] bool, False from a member's first non-finite batch loss on
    diverged_epoch: np.ndarray  # [M], the first logged epoch that saw it dead; -1 if never
    loss_sum: torch.Tensor  # [M] float64, this epoch's batch losses summed (read once an epoch)
    epoch: int = 1  # the epoch in progress, 1-based
    position: int = 0  # of the next batch in `order`
    order: torch.Tensor | None = None  # [M, N] this epoch's data order; None until it starts
    history: list[dict] = field(default_factory=list)  # logged rows (`log_snapshot`)
    resumed: list[str] = field(default_factory=list)  # where each resume started
    wall: Stopwatch = field(default_factory=Stopwatch)  # training, from after epoch 0's log
    steps: Stopwatch = field(default_factory=Stopwatch)  # of which SGD steps alone

    def where(self, n_train: int) -> str:
        return f"epoch {self.epoch}, sample {self.position} of {n_train}"

    def saved(self, n_train: int) -> dict:
        """The checkpoint's content: every field, tensors on the CPU, and the global RNG."""
        return {
            "params": {name: value.cpu() for name, value in self.params.items()},
            "decay": self.decay.state(),
            "alive": self.alive.cpu(),
            "loss_sum": self.loss_sum.cpu(),
            "diverged_epoch": self.diverged_epoch.tolist(),  # weights_only: no numpy
            "generators": [generator.get_state() for generator in self.generators],
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "position": self.position,
            "order": self.order.cpu(),
            "history": self.history,
            "wall_s": self.wall.seconds(),
            "steps_s": self.steps.seconds(),
            "where": self.where(n_train),
            "resumed": self.resumed,
        }

    def load(self, saved: dict) -> None:
        """Continue from a checkpoint written by `saved`, in place (tensors stay on the device)."""
        for name, value in saved["params"].items():
            self.params[name].copy_(value)
        self.decay.load(saved["decay"])
        self.alive.copy_(saved["alive"])
        self.loss_sum.copy_(saved["loss_sum"])
        self.diverged_epoch[:] = saved["diverged_epoch"]
        for generator, generator_state in zip(self.generators, saved["generators"], strict=True):
            generator.set_state(generator_state)
        torch.set_rng_state(saved["torch_rng"])
        self.epoch, self.position = saved["epoch"], saved["position"]
        self.history = saved["history"]
        self.order = saved["order"].to(self.alive.device)
        self.resumed = saved["resumed"] + [saved["where"]]
        self.wall, self.steps = Stopwatch(saved["wall_s"]), Stopwatch(saved["steps_s"])


# A hook adds per-member columns of the first layer to every logged epoch: (setup, the actual
# parameters, epoch) -> {column: [M] tensor}.
Hook = Callable[[Setup, dict[str, torch.Tensor], int], dict[str, torch.Tensor]]


def eps_batch_hook(setup: Setup, params: dict[str, torch.Tensor], epoch: int) -> dict:
    """Paper A's Assumption 2.5 during training: eps_batch of V at this epoch's weights, over
    `eps_log_epochs` freshly shuffled epochs (seeded by member seed + epoch)."""
    spec = setup.spec
    return paper_a.eps_batch(
        params,
        setup.x_train,
        setup.y_train,
        spec["depth"],
        spec["loss"],
        setup.batch_size,
        setup.wd,
        [seed + epoch for seed in setup.seeds],
        spec.get("metrics", {}).get("eps_log_epochs", 1),
        setup.v_weights,
        setup.chunk,
    )


def default_hooks(setup: Setup) -> list[Hook]:
    """eps_batch where Paper A's theory applies and `metrics.eps_log_epochs` is not 0."""
    eps_epochs = setup.spec.get("metrics", {}).get("eps_log_epochs", 1)
    return [eps_batch_hook] if eps_epochs and paper_a.applies(setup.spec) else []


def prepare_setup(spec: dict, arrays: dict[str, np.ndarray], checkpointed: bool = False) -> Setup:
    """Check the prepared arrays and the spec, move the data to the device, draw W_0; with
    `checkpointed`, also the job's digest (hashing the data: 0.08 s for MNIST's 75 MB here)."""
    device = resolve_device(spec.get("device", "auto"))
    dtype = DTYPES[spec.get("dtype", "float32")]
    loss, batch_size, members = spec["loss"], spec["batch_size"], spec["members"]
    label_dtype = torch.long if loss == "ce" else dtype
    splits = ("train", "val", "test") if len(arrays.get("x_val", ())) else ("train", "test")
    for name in (f"{kind}_{split}" for split in splits for kind in "xy"):
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{name} holds non-finite values: the prepared data are unusable")
    evaluated = {  # the splits every logged epoch evaluates (train is also trained on)
        split: (
            torch.as_tensor(arrays[f"x_{split}"], dtype=dtype, device=device),
            torch.as_tensor(arrays[f"y_{split}"], dtype=label_dtype, device=device),
        )
        for split in splits
    }
    conv = spec.get("arch", "mlp") != "mlp"
    if conv:  # the conv nets take images [N, C, H, W]
        shape = spec["image_shape"]
        evaluated = {split: (x.view(-1, *shape), y) for split, (x, y) in evaluated.items()}
    if conv and device.type == "cuda":
        # full float32 convolutions, as on the CPU (cuDNN's default TF32 misses the preflight's
        # 1e-4), and deterministic kernels: same config and seed, same numbers
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    x_train, y_train = evaluated["train"]
    out_dim = int(y_train.max().item()) + 1 if loss == "ce" else y_train.shape[1]
    arch = network_arch(spec, tuple(x_train.shape[1:]), out_dim)
    if getattr(arch, "batch_norm", False) and (batch_size == 1 or len(x_train) % batch_size == 1):
        raise ValueError(
            f"batch_norm needs every mini-batch to hold >= 2 samples; batch_size {batch_size} "
            f"with {len(x_train)} training samples leaves a batch of 1"
        )
    seeds = [m["seed"] for m in members]
    lr = torch.tensor([m["lr"] for m in members], dtype=torch.float64, device=device)
    wd = torch.tensor([m["weight_decay"] for m in members], dtype=torch.float64, device=device)
    v_weights = member_decay_weights(members, arrays, torch.float64, device)
    epochs, log_every = schedule(spec, len(x_train))
    max_h = float(v_weights.max()) if v_weights is not None else 1.0
    max_factor = max(lr_factor(spec, e) for e in range(1, epochs + 1))
    max_rate = float((lr * wd).max()) * max_factor * max(1.0, max_h)
    return Setup(
        spec=spec,
        device=device,
        dtype=dtype,
        arch=arch,
        x_train=x_train,
        y_train=y_train,
        evaluated=evaluated,
        init=(convnets.init_params if conv else init_params)(arch, seeds, dtype, device),
        seeds=seeds,
        lr=lr,
        wd=wd,
        bias_wd=wd if spec.get("bias_decay", True) else torch.zeros_like(wd),
        v_weights=v_weights,
        epochs=epochs,
        log_every=log_every,
        fold_every=fold_interval(max_rate),
        tolerances=rank_tolerances(spec.get("metrics", {})),
        chunk=CONV_EVAL_CHUNK if conv else EVAL_CHUNK,
        job_digest=spec_digest(spec, array_digest(arrays)) if checkpointed else "",
        ensemble=convtrain.ensemble_mode(spec.get("ensemble", "auto")) if conv else "",
        augment=dict(spec.get("augment") or {}),
        fill=x_train.amin(dim=(0, 2, 3)).cpu() if conv else None,
    )


def network_arch(spec: dict, input_shape: tuple[int, ...], out_dim: int) -> Arch | ConvArch:
    """The MLP of `width` and `depth`, or the conv net `arch` names, for inputs of this shape."""
    name = spec.get("arch", "mlp")
    if name == "mlp":
        return Arch(
            input_shape[0],
            spec["width"],
            spec["depth"],
            out_dim,
            spec.get("output_bias", False),
            spec.get("batch_norm", False),
        )
    return ConvArch(name, input_shape, out_dim, tuple(spec.get("channels") or ()))


def initial_state(setup: Setup) -> TrainState:
    """Epoch 1 at its start: W = W_0, every member alive, data orders from their seeds."""
    params = {name: value.clone() for name, value in setup.init.items()}
    count, device = setup.members, setup.device
    return TrainState(
        params=params,
        decay=ExactDecay(params, setup.dtype, setup.fold_every),
        generators=[torch.Generator().manual_seed(s + DATA_SEED_OFFSET) for s in setup.seeds],
        alive=torch.ones(count, dtype=torch.bool, device=device),
        diverged_epoch=np.full(count, -1),
        loss_sum=torch.zeros(count, dtype=torch.float64, device=device),
    )


def log_snapshot(
    setup: Setup, state: TrainState, epoch: int, hooks: Sequence[Hook], log: Callable
) -> None:
    """Append epoch `epoch`'s rows to the history: every split's loss and accuracy, the hooks'
    first-layer columns, rank metrics and decay controls (`_history_rows`). Its temporaries go
    back to the system when freed (memory.returned_heap), so a job's peak follows its estimate."""
    with returned_heap():
        _log_snapshot(setup, state, epoch, hooks, log)


def _log_snapshot(
    setup: Setup, state: TrainState, epoch: int, hooks: Sequence[Hook], log: Callable
) -> None:
    current = state.decay.effective(state.params)
    dead = (~state.alive).cpu().numpy() & (state.diverged_epoch < 0)
    state.diverged_epoch[dead] = epoch
    values = {"diverged": (~state.alive).cpu()}
    for split, (x_split, y_split) in setup.evaluated.items():
        split_loss, split_acc = split_loss_accuracy(
            current, x_split, y_split, setup.arch, setup.spec["loss"], setup.chunk
        )
        values |= {f"{split}_loss": split_loss, f"{split}_acc": split_acc}
    first_layer = {}
    for hook in hooks:
        first_layer |= hook(setup, current, epoch)
    alive = state.alive
    median = np.nanmedian(values["train_loss"].numpy()) if alive.any() else float("nan")
    log(
        f"  logged epoch {epoch}: median train loss {median:.4g}, "
        f"alive {int(alive.sum())}/{setup.members}"
    )
    state.history += _history_rows(
        epoch,
        current,
        setup.init,
        state.decay,
        setup.arch.depth,
        values,
        first_layer,
        setup.tolerances,
    )


def train_batch(setup: Setup, state: TrainState, step_lr: torch.Tensor) -> None:
    """One SGD step of every member on its next mini-batch; a member whose batch loss is not
    finite is frozen (its step is zero from then on)."""
    params, decay, alive = state.params, state.decay, state.alive
    index = state.order[:, state.position : state.position + setup.batch_size]
    if isinstance(setup.arch, ConvArch):
        images = setup.x_train[index]
        if setup.augment:
            images = convtrain.augment(images, setup.augment, state.generators, setup.fill)
        batch_losses = convtrain.sgd_step(
            setup.arch,
            params,
            decay,
            images,
            setup.y_train[index],
            setup.spec["loss"],
            step_lr.view(-1),
            alive,
            setup.ensemble,
        )
        state.loss_sum += batch_losses.double() * index.shape[1]
        state.position += setup.batch_size
        return
    cache: list = []
    forward_inputs = decay.forward_inputs(params)
    step_params, weight_scales = forward_inputs
    inputs = setup.x_train[index]
    outputs = forward(step_params, inputs, setup.arch.depth, cache, True, weight_scales)
    batch_losses, delta = losses_and_gradient(outputs, setup.y_train[index], setup.spec["loss"])
    alive &= torch.isfinite(batch_losses)
    state.loss_sum += batch_losses.double() * index.shape[1]
    v_rate = None
    if setup.v_weights is not None:  # this batch's V decay: wd · mean of g over the batch
        batch_g = torch.gather(setup.v_weights, 1, index).mean(dim=1)
        v_rate = decay.rate_table[decay.index["W1"]] * batch_g * alive
    step = torch.where(alive.view(-1, 1, 1), delta, 0.0).mul_(step_lr)
    sgd_step(params, decay, forward_inputs, cache, step, alive, v_rate)
    if setup.arch.batch_norm:
        update_running_stats(params, cache, index.shape[1], alive)
    decay.after_step(params)
    state.position += setup.batch_size


def run_epoch(setup: Setup, state: TrainState, checkpointer: Checkpointer | None) -> None:
    """The rest of epoch `state.epoch` (all of it unless resumed mid-epoch), saving the state
    whenever the checkpointer says so (its time is not a step's)."""
    if state.order is None:  # a new epoch (a resumed one comes with its order)
        orders = [torch.randperm(setup.n_train, generator=g) for g in state.generators]
        state.order, state.position = torch.stack(orders).to(setup.device), 0
        state.loss_sum.zero_()
    epoch_lr = setup.lr * lr_factor(setup.spec, state.epoch)  # float64 [M]
    state.decay.set_rates(epoch_lr * setup.wd, epoch_lr * setup.bias_wd)
    step_lr = epoch_lr.to(setup.dtype).view(-1, 1, 1)
    state.steps.start()
    while state.position < setup.n_train:
        train_batch(setup, state, step_lr)
        if checkpointer and checkpointer.due():
            state.steps.stop()
            where = state.where(setup.n_train)
            checkpointer.save(state.saved(setup.n_train), setup.job_digest, where)
            state.steps.start()
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)  # once an epoch, so that steps are the GPU's time
    state.steps.stop()


def log_progress(setup: Setup, state: TrainState, first_epoch: int, log: Callable) -> None:
    """The epoch's median batch loss over live members, this run's time and what is left."""
    elapsed = state.wall.seconds() - state.wall.total  # this run's: `wall` runs from its start
    live = (state.loss_sum / setup.n_train)[state.alive]
    epoch_loss = live.median().item() if len(live) else float("nan")
    eta = elapsed / (state.epoch - first_epoch + 1) * (setup.epochs - state.epoch)
    log(
        f"epoch {state.epoch}/{setup.epochs} mean batch loss (median over live members) "
        f"{epoch_loss:.4g} elapsed {elapsed:.1f}s eta {eta:.1f}s"
    )


def train_ensemble(
    spec: dict,
    arrays: dict[str, np.ndarray],
    log: Callable[[str], None] = print,
    checkpointer: Checkpointer | None = None,
    hooks: Sequence[Hook] | None = None,
) -> TrainResult:
    """Train every member of `spec["members"]` on the prepared arrays; see the module docstring.

    With a `checkpointer`, resume from its checkpoint when one of this spec exists, and save the
    whole state at step boundaries when it is due; the result equals an uninterrupted run's.
    `hooks` default to `default_hooks`.
    """
    setup = prepare_setup(spec, arrays, checkpointed=checkpointer is not None)
    hooks = default_hooks(setup) if hooks is None else hooks
    state = initial_state(setup)
    saved = checkpointer.load(setup.job_digest) if checkpointer else None
    if saved is not None:
        state.load(saved)
        log(f"resumed from {checkpointer.path} at {saved['where']}")
    log(
        f"training {setup.members} members {setup.arch} on {setup.device} ({setup.dtype}), "
        f"batch {setup.batch_size}, {setup.epochs} epochs of "
        f"{-(-setup.n_train // setup.batch_size)} steps"
    )
    if saved is None:
        log_snapshot(setup, state, 0, hooks, log)
    state.wall.start()
    first_epoch, progress_every = state.epoch, max(1, setup.epochs // 50)
    while state.epoch <= setup.epochs:
        run_epoch(setup, state, checkpointer)
        if state.epoch % progress_every == 0 or state.epoch == setup.epochs:
            log_progress(setup, state, first_epoch, log)
        if state.epoch % setup.log_every == 0 or state.epoch == setup.epochs:
            log_snapshot(setup, state, state.epoch, hooks, log)
        state.epoch, state.order = state.epoch + 1, None
    state.wall.stop()
    return _result(setup, state)


def _result(setup: Setup, state: TrainState) -> TrainResult:
    """The arrays and the history frame (member keys first) the training command writes."""
    final = state.decay.effective(state.params)
    frame = pd.DataFrame(state.history)
    ids = pd.DataFrame(setup.spec["members"])
    ids["member_index"] = range(setup.members)
    frame = ids.merge(frame, on="member_index").drop(columns="member_index")
    return TrainResult(
        {name: value.cpu().numpy().copy() for name, value in setup.init.items()},
        {name: value.cpu().numpy().copy() for name, value in final.items()},
        frame,
        state.diverged_epoch,
        state.wall.seconds(),
        str(setup.device),
        state.resumed,
        state.steps.seconds(),
    )
