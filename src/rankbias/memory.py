"""A training job's peak memory, estimated from its shapes before it starts.

The peak is the process's base (Python with torch, numpy and pandas loaded), what lives for the
whole job (the data, copies of the weights), and the largest of the passes that come and go: a
training step, evaluating a split in chunks, the spectra of a logged epoch, and Paper A's
eps_batch at a logged epoch. Each term counts the tensors the code allocates (rankbias.train,
models, paper_a, spectra), so the estimate follows a change of members, width, depth, batch,
data, dtype. `tests/test_memory.py` checks it against measured peaks, and the workflow declares it
as a training job's `mem_mb` and refuses a config whose job cannot fit the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
from collections.abc import Iterator
from pathlib import Path

from rankbias.convshapes import CONV_EVAL_CHUNK, ConvArch
from rankbias.plan import EVAL_CHUNK

MB = 2**20
# Conv nets: oneDNN's and autograd's buffers beyond the terms of conv_terms. Fit 2026-12-01 on
# tests/test_memory.py's conv job at B = 16, 64, 128 (two runs each): the step term's slope
# matched the measured peaks' (423 MB against 418 MB), the rest of the peak was 35-66 MB above
# the other terms with 60 here; the same job's peak varies by ±40 MB between runs (828-897 MB at
# B = 128), once 809 MB at B = 64 against a median of 665 MB.
CONV_RUNTIME_MB = 100
BASE_MB = 260  # python -c "import torch, numpy, pandas" and rankbias: 252 MB peak RSS here (CPU)
DTYPE_BYTES = {"float32": 4, "float64": 8}
EPS_SAMPLES = 512  # rankbias.paper_a's, here without importing torch (tests check they agree)
WEIGHT_COPIES = 4  # W_0, W, the effective W of a logged epoch, the checkpoint being written


def layer_shapes(spec: dict, features: int, outputs: int) -> list[tuple[int, int]]:
    """(rows, columns) of W1 ... WL."""
    widths = [features] + [spec["width"]] * (spec["depth"] - 1) + [outputs]
    return list(zip(widths[1:], widths[:-1], strict=True))


def conv_terms(spec: dict, shape: tuple[int, int, int, int]) -> dict[str, float]:
    """A conv-net job's terms on a CPU (on a GPU the activations live on the device): autograd
    keeps, per conv, its input, its output, batch norm's and the ReLU's outputs (and max
    pooling's indices) for every sample of the batch (of every member when grouped, of one in a
    loop, rankbias.convtrain); evaluation runs one member at a time; torch's conv and autograd
    machinery adds CONV_RUNTIME_MB."""
    features, outputs, train_rows, test_rows = shape
    members, batch = len(spec["members"]), spec["batch_size"]
    size = DTYPE_BYTES[spec.get("dtype", "float32")]
    arch = ConvArch(spec["arch"], tuple(spec["image_shape"]), outputs, tuple(spec["channels"]))
    layers = arch.layers()
    per_member = sum(math.prod(layer.matrix_shape) + 4 * layer.out_channels for layer in layers)
    activations = [layer.out_channels * layer.positions for layer in layers]
    grouped = spec.get("ensemble", "auto") != "loop"  # `auto` is grouped (rankbias.convtrain)
    rows = train_rows + test_rows
    chunk = min(CONV_EVAL_CHUNK, max(train_rows, test_rows))
    return {
        "base": (BASE_MB + CONV_RUNTIME_MB) * MB,
        "data": rows * features * (8 + size) + rows * 8,  # float64 as loaded, the training copy
        "weights": (WEIGHT_COPIES + 3) * members * per_member * size,
        "step": (members if grouped else 1) * batch * (features + 4 * sum(activations)) * size,
        "evaluation": chunk * (features + 3 * max(activations)) * size,
        "spectra": 3 * max(math.prod(layer.matrix_shape) for layer in layers) * members * 8,
    }


def training_terms(spec: dict, shape: tuple[int, int, int, int]) -> dict[str, float]:
    """Bytes of each part of a training job's peak; `shape` is data.planned_shape's."""
    if spec.get("arch", "mlp") != "mlp":
        return conv_terms(spec, shape)
    features, outputs, train_rows, test_rows = shape
    members, width, batch = len(spec["members"]), spec["width"], spec["batch_size"]
    size = DTYPE_BYTES[spec.get("dtype", "float32")]
    rows = train_rows + test_rows
    label = 8 if spec["loss"] == "ce" else 4 * outputs
    layers = layer_shapes(spec, features, outputs)
    weights = members * sum(r * c + r for r, c in layers)
    first = members * layers[0][0] * layers[0][1]  # W1, the largest matrix of a wide input
    largest = members * max(r * c for r, c in layers)
    data = rows * (features * 4 + label)  # float32 arrays as prepared
    if size != 4:  # float64 training: torch copies the inputs
        data += rows * features * size
    chunk = min(EVAL_CHUNK, max(train_rows, test_rows))
    terms = {
        "base": BASE_MB * MB,
        "data": data,
        "weights": WEIGHT_COPIES * weights * size,
        # a step: the input batch, each layer's cached input and its pre-activation, the deltas
        "step": members * batch * (features + 3 * width * (spec["depth"] - 1)) * size,
        # a chunk through a layer: its input and its output (the first layer's bias is added in
        # a second tensor); batch norm holds the normalised copy and its output besides
        "evaluation": members
        * chunk
        * ((2 + 2 * spec.get("batch_norm", False)) * width + outputs)
        * size,
        # float64 singular values of W and of W - s·W_0 (LAPACK's copy and workspace)
        "spectra": 3 * largest * 8,
    }
    if spec["depth"] == 2 and spec.get("metrics", {}).get("eps_log_epochs", 1):
        samples = max(1, EPS_SAMPLES // batch) * batch
        full = members * chunk * 2 * width + first  # a chunk's activations, then the gradient
        passes = members * samples * (features + 4 * width)  # batches' gradient norms
        terms["eps_batch"] = 8 * (train_rows * features + 2 * weights + max(full, passes))
    return terms


def training_mb(spec: dict, shape: tuple[int, int, int, int]) -> int:
    """Estimated peak resident memory of one training job, in MB: what lives throughout plus
    the largest pass."""
    terms = training_terms(spec, shape)
    lasting = terms["base"] + terms["data"] + terms["weights"]
    passes = max(
        terms[name] for name in ("step", "evaluation", "spectra", "eps_batch") if name in terms
    )
    return math.ceil((lasting + passes) / MB)


class MemoryPlanError(ValueError):
    """A planned training job cannot fit the machine's memory."""


# declared = estimate x this. Estimates fall within 25 % of measured peaks (tests/test_memory.py);
# over the default audit's 44 training jobs the estimate was 0.78-1.07 of the measured peak, so a
# margin of 25 % would have left a few jobs short.
MARGIN = 1.5


def machine_mb() -> int:
    """This machine's physical memory, in MB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MB


def declared_mb(spec: dict, shape: tuple[int, int, int, int], attempt: int = 1) -> int:
    """A training job's `mem_mb`: the estimate with its margin, grown with every retry (a job
    killed for memory is not retried with the same amount)."""
    return math.ceil(training_mb(spec, shape) * MARGIN * (1 + 0.5 * (attempt - 1)))


def members_that_fit(spec: dict, shape: tuple[int, int, int, int], limit_mb: int) -> int:
    """The most members of this job's shapes whose declared memory fits `limit_mb` (0: none)."""
    fitting = 0
    for count in range(1, len(spec["members"]) + 1):
        if declared_mb({**spec, "members": spec["members"][:count]}, shape) > limit_mb:
            break
        fitting = count
    return fitting


def check_fits(jobs: dict, shapes: dict, limit_mb: int, source: str) -> None:
    """Refuse, before any job runs, a plan with a training job that cannot fit `limit_mb`,
    naming the job, the memory it needs and what would fit."""
    for (experiment, group), spec in jobs.items():
        shape = shapes[spec["dataset"]]
        need = declared_mb(spec, shape)
        if need > limit_mb:
            fitting = members_that_fit(spec, shape, limit_mb)
            advice = (
                f"at most {fitting} members per job fit (members_per_job)"
                if fitting
                else "not even one member fits: lower width or batch_size"
            )
            raise MemoryPlanError(
                f"{source}: experiments.{experiment}, job {group}: needs an estimated {need:,} MB "
                f"({len(spec['members'])} members, width {spec['width']}, depth "
                f"{spec['depth']}, batch {spec['batch_size']}, {spec.get('dtype', 'float32')}), "
                f"more than max_mem_mb = {limit_mb:,} MB; {advice}, or raise max_mem_mb"
            )


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
# While a logged epoch evaluates, large temporaries go back at once (and the heap's free top);
# between, glibc's own ceilings, so a step's tensors reuse the heap instead of fresh pages.
LOGGING = {M_MMAP_THRESHOLD: 4 * MB, M_TRIM_THRESHOLD: 128 * 1024}
TRAINING = {M_MMAP_THRESHOLD: 32 * MB, M_TRIM_THRESHOLD: 64 * MB}


def _tune_heap(settings: dict[int, int]) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        libc = ctypes.CDLL("libc.so.6")
        for parameter, value in settings.items():
            libc.mallopt(parameter, value)


@contextlib.contextmanager
def returned_heap() -> Iterator[None]:
    """Within: freed tensors of 4 MB and more go back to the system. A logged epoch's many
    large temporaries (eps_batch, evaluation chunks) otherwise stay in glibc's heap, and grew a
    30-member job's peak to 1.9x its live tensors. Not for the SGD steps: a large batch's
    activations would then be fresh pages at every step (a batch-1,800 job took 2.7x as long)."""
    _tune_heap(LOGGING)
    try:
        yield
    finally:
        _tune_heap(TRAINING)


def peak_rss_mb() -> float:
    """This program's peak resident memory so far, in MB: VmHWM, the high-water mark of its own
    address space. getrusage's ru_maxrss is not that on Linux: exec keeps the parent's peak at
    the fork, so a job started by a 1.3 GB process (pytest late in the suite) reports 1.3 GB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def arrays_shape(arrays: dict, loss: str) -> tuple[int, int, int, int]:
    """data.planned_shape's tuple, read from prepared arrays."""
    outputs = int(arrays["y_train"].max()) + 1 if loss == "ce" else arrays["y_train"].shape[1]
    train_rows = len(arrays["x_train"]) + len(arrays.get("x_val", ()))
    return arrays["x_train"].shape[1], outputs, train_rows, len(arrays["x_test"])
