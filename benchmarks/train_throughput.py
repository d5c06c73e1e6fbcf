"""Training throughput: rankbias's ensemble trainer against autograd and the textbook loop.

    python benchmarks/train_throughput.py                 # three regimes, ~25 minutes on 2 cores
    python benchmarks/train_throughput.py --workflow      # + the default audit under /usr/bin/time
    python benchmarks/train_throughput.py --workflow-only --keep results/audit  # the audit alone

For each regime the same models (same architecture, data, batch size, learning rates, weight
decays, number of steps) are trained by every method, each in a fresh process so that its peak
memory is its own, five times (`--repeats`), alternating the methods; the median repeat counts
and the spread is kept:
  - `ensemble`: rankbias.train.train_ensemble, every member stepping together (batched matmuls,
    fused manual backward), timed over its SGD steps (`steps_s`);
  - `autograd` and `func`: the same stacked members, exact decay and data order, the gradient
    from `losses.sum().backward()` or torch.func's vmap(grad) instead of the manual backward
    (`run_autograd`); the manual backward stays only if it is KEEP_MANUAL_AT (1.2×) faster than
    the better of the two in the compute-bound and the mixed regime (`backward_decision`);
  - `reference`: one model at a time, `nn.Sequential` + `torch.optim.SGD(momentum=0,
    weight_decay=wd)` + a shuffling `DataLoader` over a `TensorDataset` (Paper B's public code's
    pattern), on a subset of the members (per-model cost does not depend on the others).
Reported: model-steps per second, the speed-up, training FLOP/s (the GEMM work a step cannot
avoid, rankbias.models.Arch.step_flops) against the machine's dense float32 matmul rate measured
in the same process just before and just after the training (the roofline, sustained and peak;
this shared machine's speed drifts, so each repeat is compared with its own), the measurement stage
(rankbias.measure.measure_job: SVDs, eps_batch, bounds) as a fraction of training time, and peak
RSS of the training (the roofline probe's matrices excluded). Results:
benchmarks/results/throughput.csv and .md, backward_decision.json; with --workflow also
workflow.json and paper_cost.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rankbias.models import Arch  # noqa: E402

REGIMES = {  # name -> what it stresses and its models
    "housing_2layer": {
        "bound": "overhead",
        "dataset": {"source": "california_housing", "clip": 5.0},
        "loss": "mse",
        "depth": 2,
        "width": 256,
        "batch_size": 16,
        "members": 16,
        "epochs": 2,
        "reference_members": 2,
    },
    "mnist_width1024": {
        "bound": "compute",
        "dataset": {"source": "mnist", "train_size": 10000},
        "loss": "ce",
        "depth": 2,
        "width": 1024,
        "batch_size": 256,
        "members": 8,
        "epochs": 6,
        "reference_members": 2,
    },
    "mnist_deep6": {
        "bound": "mixed",
        "dataset": {"source": "mnist", "train_size": 10000},
        "loss": "ce",
        "depth": 6,
        "width": 256,
        "batch_size": 64,
        "members": 8,
        "epochs": 2,
        "reference_members": 2,
    },
}
REPEATS = 5  # fresh processes per method and regime; the median counts
AUTOGRAD_ARMS = ("autograd", "func")  # the ensemble's step with autograd's gradient
METHODS = ("ensemble", *AUTOGRAD_ARMS, "reference")
KEEP_MANUAL_AT = 1.2  # the manual backward stays if this much faster than autograd's best arm
WEIGHT_DECAYS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def members(regime: dict) -> list[dict]:
    return [
        {
            "member": i,
            "lr": 0.01,
            "weight_decay": WEIGHT_DECAYS[i % len(WEIGHT_DECAYS)],
            "seed": i // len(WEIGHT_DECAYS),
            "wd_function": "constant",
        }
        for i in range(regime["members"])
    ]


def spec_of(name: str, regime: dict) -> dict:
    return {
        "experiment": "benchmark",
        "group": name,
        "dataset": name,
        "loss": regime["loss"],
        "depth": regime["depth"],
        "width": regime["width"],
        "batch_size": regime["batch_size"],
        "epochs": regime["epochs"],
        "steps": None,
        "log_every": regime["epochs"],
        "eval_batch": 4096,
        "device": "auto",
        "dtype": "float32",
        "metrics": {"eps_log_epochs": 0},  # eps_batch of the measurement stage, not of logging
        "members": members(regime),
    }


def arch_of(arrays: dict, regime: dict) -> Arch:
    y_train = arrays["y_train"]
    n_out = int(y_train.max()) + 1 if regime["loss"] == "ce" else y_train.shape[1]
    return Arch(arrays["x_train"].shape[1], regime["width"], regime["depth"], n_out)


# ----------------------------------------------------------------------------- child processes


def run_ensemble(arrays: dict, name: str, regime: dict) -> dict:
    import torch

    from rankbias.measure import measure_job
    from rankbias.train import train_ensemble

    spec = spec_of(name, regime)
    result = train_ensemble(spec, arrays, log=lambda _: None)
    train_s = result.steps_s  # the SGD steps alone, as the reference loop times them
    started = time.perf_counter()
    measure_job(spec, result.final, result.init, result.history, result.diverged_epoch, arrays)
    measure_s = time.perf_counter() - started
    steps = regime["epochs"] * -(-len(arrays["x_train"]) // regime["batch_size"])
    final = {name: torch.as_tensor(value) for name, value in result.final.items()}
    return {
        "models": regime["members"],
        "steps": steps,
        "seconds": train_s,
        "measure_s": measure_s,
        "final_norm": _weight_norm(final),
    }


def run_autograd(arrays: dict, name: str, regime: dict, gradient: str) -> dict:
    """The ensemble's own step (stacked members, exact decay as scale·stored, same data order),
    its gradient from autograd instead of the manual backward: `autograd` is
    `losses.sum().backward()` on the stacked tensors, `func` is torch.func's vmap(grad) of one
    member's loss over the stacked parameters. The update, per stored tensor T whose forward pass
    used scale s (so that dL/dT = s·dL/dW): T <- T - lr·dL/dT / (s·s'), s' = s·(1 - lr·wd), the
    same W <- (1 - lr·wd)·W - lr·dL/dW as train_ensemble."""
    import torch

    from rankbias.decay import ExactDecay, fold_interval
    from rankbias.models import forward, init_params, member_losses
    from rankbias.train import DATA_SEED_OFFSET

    chosen = members(regime)
    depth, loss, batch_size = regime["depth"], regime["loss"], regime["batch_size"]
    x_train = torch.as_tensor(arrays["x_train"], dtype=torch.float32)
    y_train = torch.as_tensor(
        arrays["y_train"], dtype=torch.long if loss == "ce" else torch.float32
    )
    params = init_params(arch_of(arrays, regime), [m["seed"] for m in chosen], torch.float32, "cpu")
    lr = torch.tensor([m["lr"] for m in chosen], dtype=torch.float64)
    wd = torch.tensor([m["weight_decay"] for m in chosen], dtype=torch.float64)
    decay = ExactDecay(params, torch.float32, fold_interval(float((lr * wd).max())))
    decay.set_rates(lr * wd, lr * wd)
    alive = torch.ones(len(chosen), dtype=torch.bool)
    generators = [torch.Generator().manual_seed(m["seed"] + DATA_SEED_OFFSET) for m in chosen]
    member_gradient = torch.func.vmap(torch.func.grad(_member_loss), in_dims=(0, 0, 0, 0, None))
    n_train, steps = len(x_train), 0
    started = time.perf_counter()
    for _ in range(regime["epochs"]):
        order = torch.stack([torch.randperm(n_train, generator=g) for g in generators])
        for position in range(0, n_train, batch_size):
            index = order[:, position : position + batch_size]
            scales = {name: decay.cast[row] for name, row in decay.index.items()}
            if gradient == "func":
                grads = member_gradient(params, scales, x_train[index], y_train[index], loss)
            else:
                for tensor in params.values():
                    tensor.requires_grad_(True)
                step_params, weight_scales = decay.forward_inputs(params)
                outputs = forward(step_params, x_train[index], depth, None, True, weight_scales)
                member_losses(outputs, y_train[index], loss).sum().backward()
                grads = {name: tensor.grad for name, tensor in params.items()}
            with torch.no_grad():
                before = decay.scales.clone()
                decay.step(alive)
                coefficients = (lr / (before * decay.scales)).to(torch.float32)
                for name, row in decay.index.items():
                    grad = grads[name]
                    params[name].sub_(grad * coefficients[row].view(-1, *[1] * (grad.dim() - 1)))
                    params[name].grad = None
                decay.after_step(params)
            steps += 1
    seconds = time.perf_counter() - started
    final = decay.effective({name: tensor.detach() for name, tensor in params.items()})
    return {
        "models": len(chosen),
        "steps": steps,
        "seconds": seconds,
        "final_norm": _weight_norm(final),
    }


def _member_loss(params: dict, scales: dict, x, y, loss: str):
    """One member's mean loss on its batch (torch.func arm): layer l is (x W~^T)·s + b~·s_b."""
    import torch.nn.functional as F

    hidden, depth = x, sum(name[0] == "W" for name in params)
    for layer in range(1, depth + 1):
        hidden = (hidden @ params[f"W{layer}"].mT) * scales[f"W{layer}"]
        if f"b{layer}" in params:
            hidden = hidden + params[f"b{layer}"] * scales[f"b{layer}"]
        if layer < depth:
            hidden = hidden.relu()
    if loss == "ce":
        return F.cross_entropy(hidden, y)
    return 0.5 * (hidden - y).square().sum(dim=-1).mean()


def _weight_norm(params: dict) -> float:
    """Σ ||W_l||_F over members and layers: the same training must give the same number."""
    return float(sum(value.double().norm() for name, value in params.items() if name[0] == "W"))


def run_reference(arrays: dict, name: str, regime: dict) -> dict:
    """One model at a time: nn.Module, torch.optim.SGD and a DataLoader, as most code does."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.as_tensor(arrays["x_train"], dtype=torch.float32)
    if regime["loss"] == "ce":
        y = torch.as_tensor(arrays["y_train"], dtype=torch.long)
    else:
        y = torch.as_tensor(arrays["y_train"], dtype=torch.float32)
    shapes = arch_of(arrays, regime).layer_shapes()
    chosen = members(regime)[: regime["reference_members"]]
    steps = 0
    started = time.perf_counter()
    for member in chosen:
        torch.manual_seed(member["seed"])
        layers: list[nn.Module] = []
        for layer, (fan_out, fan_in) in enumerate(shapes, start=1):  # biases as in Arch
            layers += [nn.Linear(fan_in, fan_out, bias=layer < len(shapes)), nn.ReLU()]
        model = nn.Sequential(*layers[:-1])
        optimiser = torch.optim.SGD(
            model.parameters(), lr=member["lr"], momentum=0, weight_decay=member["weight_decay"]
        )
        generator = torch.Generator().manual_seed(member["seed"])
        loader = DataLoader(
            TensorDataset(x, y), batch_size=regime["batch_size"], shuffle=True, generator=generator
        )
        for _ in range(regime["epochs"]):
            for inputs, targets in loader:
                outputs = model(inputs)
                if regime["loss"] == "ce":
                    loss = F.cross_entropy(outputs, targets)
                else:
                    loss = 0.5 * (outputs - targets).square().sum(dim=1).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                steps += 1
    seconds = time.perf_counter() - started
    return {"models": len(chosen), "steps": steps // len(chosen), "seconds": seconds}


def matmul_rates(seconds: float = 2.0, size: int = 2048) -> tuple[float, float]:
    """Dense float32 GEMM FLOP/s with torch's current threads: (sustained, peak).

    Square GEMMs run back to back for `seconds`: sustained is their FLOPs over their time, peak
    the fastest one. On this shared machine single GEMMs vary by a factor of two within seconds
    (12 s of 2048² here: 128 to 253 GFLOP/s, median 213), so a training, itself a time average,
    is compared with the sustained rate; the peak shows the best the hardware did."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm up
    times: list[float] = []
    while sum(times) < seconds:
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    flops = 2 * size**3
    return flops * len(times) / sum(times), flops / min(times)


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux >= 4.0), so that the probe's matrices do not count."""
    with contextlib.suppress(OSError):  # elsewhere the peak includes the probe (~200 MB)
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; getrusage's ru_maxrss would include the
    forking parent's, which Linux carries across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child(method: str, name: str, data_path: str) -> None:
    """One timed training, between two roofline probes; prints its numbers as JSON."""
    import torch

    from rankbias import data

    torch.set_num_threads(int(os.environ.get("RANKBIAS_BENCH_THREADS", os.cpu_count() or 1)))
    arrays, _ = data.load_prepared(data_path)
    before = matmul_rates()
    reset_peak_rss()
    regime = REGIMES[name]
    if method in AUTOGRAD_ARMS:
        result = run_autograd(arrays, name, regime, method)
    else:
        result = (run_ensemble if method == "ensemble" else run_reference)(arrays, name, regime)
    result["peak_rss_mb"] = peak_rss_mb()
    after = matmul_rates()
    result["matmul_sustained"] = (before[0] + after[0]) / 2  # the training lies in between
    result["matmul_peak"] = max(before[1], after[1])
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


# ----------------------------------------------------------------------------- the parent


def in_child(method: str, name: str = "", data_path: str = "") -> dict:
    command = [sys.executable, __file__, "--child", method, name, data_path]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(workdir: Path) -> dict[str, Path]:
    """Each regime's data set prepared from the raw files ($RANKBIAS_DATA_MIRROR or download)."""
    from rankbias import data

    prepared = {}
    for name, regime in REGIMES.items():
        spec = regime["dataset"]
        raw = workdir / "raw" / spec["source"]
        if not (raw / data.MANIFEST).exists():
            data.fetch(spec["source"], raw)
        arrays, info = data.prepare(spec, raw)
        prepared[name] = workdir / f"{name}.npz"
        data.write_prepared(
            arrays, info, str(prepared[name]), str(prepared[name].with_suffix(".json"))
        )
    return prepared


def benchmark_rows(workdir: Path, repeats: int = REPEATS) -> list[dict]:
    from rankbias import data

    rows = []
    for name, path in prepare(workdir).items():
        regime = REGIMES[name]
        arrays, _ = data.load_prepared(path)
        flops_per_model_step = arch_of(arrays, regime).step_flops(regime["batch_size"])
        runs: dict[str, list[dict]] = {method: [] for method in METHODS}
        for _ in range(repeats):  # alternating, so that a slow spell hits both methods
            for method, results in runs.items():
                results.append(in_child(method, name, str(path)))
        for method, results in runs.items():
            for result in results:
                result["model_steps_per_s"] = result["models"] * result["steps"] / result["seconds"]
                achieved = flops_per_model_step * result["model_steps_per_s"]
                result["fraction"] = achieved / result["matmul_sustained"]
                result["fraction_of_peak"] = achieved / result["matmul_peak"]
            speeds = sorted(result["model_steps_per_s"] for result in results)
            median = sorted(results, key=lambda result: result["model_steps_per_s"])[repeats // 2]
            rows.append(
                {
                    "regime": name,
                    "bound": regime["bound"],
                    "method": method,
                    "models": median["models"],
                    "steps_per_model": median["steps"],
                    "repeats": repeats,
                    "seconds": median["seconds"],
                    "model_steps_per_s": median["model_steps_per_s"],
                    "model_steps_per_s_min": speeds[0],
                    "model_steps_per_s_max": speeds[-1],
                    "gflops": flops_per_model_step * median["model_steps_per_s"] / 1e9,
                    "roofline_fraction": float(np.median([r["fraction"] for r in results])),
                    "roofline_fraction_min": min(r["fraction"] for r in results),
                    "roofline_fraction_max": max(r["fraction"] for r in results),
                    "roofline_fraction_of_peak": float(
                        np.median([r["fraction_of_peak"] for r in results])
                    ),
                    "matmul_sustained_gflops": np.median([r["matmul_sustained"] for r in results])
                    / 1e9,
                    "matmul_peak_gflops": max(r["matmul_peak"] for r in results) / 1e9,
                    "measure_fraction": median.get("measure_s", np.nan) / median["seconds"],
                    "peak_rss_mb": max(result["peak_rss_mb"] for result in results),
                    "threads": median["threads"],
                }
            )
        regime_rows = {row["method"]: row for row in rows[-len(METHODS) :]}
        manual = runs["ensemble"][0]["final_norm"]
        textbook = regime_rows["reference"]["model_steps_per_s"]
        for method, row in regime_rows.items():
            row["speedup"] = row["model_steps_per_s"] / textbook
            same_models = method != "reference"  # the reference draws its own init and order
            row["final_norm_rel_diff"] = (
                abs(runs[method][0]["final_norm"] / manual - 1) if same_models else np.nan
            )
    return rows


def backward_decision(rows: list[dict]) -> dict:
    """Per regime, the manual backward's speed over the best autograd arm's; it stays only if
    that is >= KEEP_MANUAL_AT in the compute-bound and the mixed regime (issue 19)."""
    ratios = {}
    for regime in REGIMES:
        speed = {row["method"]: row["model_steps_per_s"] for row in rows if row["regime"] == regime}
        best = max(AUTOGRAD_ARMS, key=speed.get)
        ratios[regime] = {
            "best_autograd": best,
            "manual_over_best": speed["ensemble"] / speed[best],
        }
    deciding = [name for name, regime in REGIMES.items() if regime["bound"] in ("compute", "mixed")]
    keep = all(ratios[name]["manual_over_best"] >= KEEP_MANUAL_AT for name in deciding)
    return {"regimes": ratios, "deciding": deciding, "threshold": KEEP_MANUAL_AT, "keep": keep}


# ----------------------------------------------------------------------------- the workflow


def workflow_run(workdir: Path) -> dict:
    """The default audit in a fresh folder under /usr/bin/time -v; peak RSS of the whole process
    tree sampled from /proc every 0.5 s (time -v gives the largest single process)."""
    project = workdir / "audit"
    (project / "config").mkdir(parents=True)
    (project / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    command = ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "snakemake")]
    command += [
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(project),
        "--cores",
        "all",
    ]
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    tree_peak = [0.0]
    sampler = threading.Thread(target=_sample_tree, args=(process, tree_peak), daemon=True)
    sampler.start()
    stderr = process.communicate()[1]
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"the default audit failed:\n{stderr[-3000:]}")
    fields = dict(line.strip().rsplit(": ", 1) for line in stderr.splitlines() if ": " in line)
    wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"]
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    train_s, measure_s = (_benchmark_seconds(project, kind) for kind in ("train", "measure"))
    return {
        "wall_s": seconds,
        "max_rss_single_process_mb": int(fields["Maximum resident set size (kbytes)"]) / 1024,
        "peak_rss_process_tree_mb": tree_peak[0],
        "train_jobs_s": train_s,
        "measure_jobs_s": measure_s,
        "measure_fraction": measure_s / train_s,
    }


def _benchmark_seconds(project: Path, kind: str) -> float:
    import pandas as pd

    files = (project / "results" / "benchmarks" / kind).rglob("*.tsv")
    return float(sum(pd.read_csv(path, sep="\t")["s"].iloc[0] for path in files))


def _sample_tree(process: subprocess.Popen, peak: list[float]) -> None:
    while process.poll() is None:
        peak[0] = max(peak[0], _tree_rss_mb(process.pid))
        time.sleep(0.5)


def _tree_rss_mb(root: int) -> float:
    children: dict[int, list[int]] = {}
    rss: dict[int, float] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue
        pid = int(status.parent.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = float(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0.0)
        stack += children.get(pid, [])
    return total


# ----------------------------------------------------------------------------- output


def markdown(rows: list[dict], workflow: dict | None) -> str:
    lines = [
        "| regime | bound | method | models × steps | model-steps/s (min–max) | speed-up | "
        "GFLOP/s | of sustained matmul (min–max) | of peak matmul | measure / train | "
        "peak RSS MB | Σ‖W‖ vs ensemble |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        measure = "" if np.isnan(row["measure_fraction"]) else f"{row['measure_fraction']:.0%}"
        drift = row["final_norm_rel_diff"]
        drift = "" if np.isnan(drift) else f"{drift:.1e}"
        lines.append(
            f"| {row['regime']} | {row['bound']} | {row['method']} | {row['models']} × "
            f"{row['steps_per_model']} | {row['model_steps_per_s']:,.0f} "
            f"({row['model_steps_per_s_min']:,.0f}–{row['model_steps_per_s_max']:,.0f}) | "
            f"{row['speedup']:.1f}× | {row['gflops']:.1f} | {row['roofline_fraction']:.0%} "
            f"({row['roofline_fraction_min']:.0%}–{row['roofline_fraction_max']:.0%}) | "
            f"{row['roofline_fraction_of_peak']:.0%} | {measure} | {row['peak_rss_mb']:.0f} | "
            f"{drift} |"
        )
    sustained = [row["matmul_sustained_gflops"] for row in rows]
    lines.append(
        f"\nMedians of {rows[0]['repeats']} fresh processes per method, alternating; the speed-up "
        "is the ratio of the medians. GFLOP/s count the GEMM work a step needs "
        "(`Arch.step_flops`). Dense float32 matmul (2048², "
        f"{rows[0]['threads']} threads, 2 s before and 2 s after every training, same process): "
        f"sustained {min(sustained):.0f}–{max(sustained):.0f} GFLOP/s (median per regime), "
        f"peak {max(row['matmul_peak_gflops'] for row in rows):.0f} GFLOP/s. "
        "Σ‖W‖ vs ensemble: the relative difference of the trained weights' summed Frobenius "
        "norms from the manual backward's (same members, init and data order; the reference "
        "loop draws its own)."
    )
    decision = backward_decision(rows)
    ratios = ", ".join(
        f"{name} {ratio['manual_over_best']:.2f}× ({ratio['best_autograd']})"
        for name, ratio in decision["regimes"].items()
    )
    verdict = "kept" if decision["keep"] else "replaced by autograd"
    lines.append(
        f"\nManual backward over the best autograd arm: {ratios}. Rule: keep it only if ≥ "
        f"{decision['threshold']}× in {' and '.join(decision['deciding'])}; here it is "
        f"**{verdict}**."
    )
    if workflow:
        lines.append(
            f"\nDefault audit (`snakemake --cores all`, /usr/bin/time -v): wall "
            f"{workflow['wall_s'] / 60:.1f} min; peak RSS of the whole process tree "
            f"{workflow['peak_rss_process_tree_mb']:.0f} MB (largest single process "
            f"{workflow['max_rss_single_process_mb']:.0f} MB); measurement jobs "
            f"{workflow['measure_fraction']:.0%} of training jobs' time "
            f"({workflow['measure_jobs_s']:.0f} s / {workflow['train_jobs_s']:.0f} s)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--workflow", action="store_true", help="also time the default audit")
    parser.add_argument(
        "--workflow-only", action="store_true", help="time the default audit, no regimes"
    )
    parser.add_argument("--keep", type=Path, help="run the audit in this folder and keep it")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="processes per method")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    if args.workflow_only:
        with tempfile.TemporaryDirectory(prefix="rankbias-bench-") as tmp:
            workflow = workflow_run(args.keep or Path(tmp))
        (args.out / "workflow.json").write_text(json.dumps(workflow, indent=2) + "\n")
        print(json.dumps(workflow, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="rankbias-bench-") as tmp:
        rows = benchmark_rows(Path(tmp), args.repeats)
        audit_dir = args.keep or Path(tmp)
        workflow = workflow_run(audit_dir) if args.workflow else None
        if workflow:  # config/paper.yaml's cost, projected from the audit just timed
            runs = audit_dir / "audit" / "results" / "runs"
            command = [sys.executable, str(ROOT / "benchmarks" / "paper_cost.py")]
            projection = subprocess.run(
                [*command, "--measured", str(runs)], capture_output=True, text=True, check=True
            )
            (args.out / "paper_cost.md").write_text(projection.stdout)
    pd.DataFrame(rows).to_csv(args.out / "throughput.csv", index=False)
    decision = json.dumps(backward_decision(rows), indent=2)
    (args.out / "backward_decision.json").write_text(decision + "\n")
    if workflow:
        (args.out / "workflow.json").write_text(json.dumps(workflow, indent=2) + "\n")
    text = markdown(rows, workflow)
    (args.out / "throughput.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
