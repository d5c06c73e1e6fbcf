"""Render the self-contained HTML report: tables, inline figures, methods and provenance.

One file, no external requests: figures are embedded as SVG data URIs with alt text, CSS is inline.
Every number in it is read from the workflow's tables; nothing is typed in by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from rankbias import __version__
from rankbias.figures import FIGURE_FILES, add_setting
from rankbias.plan import format_number
from rankbias.storage import read_json, write_text

RANK_COLUMNS = (
    "train_loss",
    "test_loss",
    "test_acc",
    "gap",
    "rank_galanti",
    "rank_rel",
    "effective_rank",
    "stable_rank",
    "residual_1",
    "residual_2",
)
PAPER_A_COLUMNS = (
    "eps_batch_max",
    "eps_batch_mean",
    "eps_full",
    "thm26_bound",
    "thm26_ratio",
    "dist_rank2",
    "units_collapsed",
    "units_dead",
    "units_linear",
    "units_zero_input",
)
FIGURES = {
    "spectra.svg": (
        "Singular-value spectra of the first-layer matrix W1 (= V)",
        "Normalised singular values sigma_i/sigma_1 of W1 against their index (log scale), "
        "median over seeds of the members that trained normally; one line per value of the "
        "swept hyper-parameter. The dotted line marks index 2: an approximately rank-two V drops "
        "sharply after it.",
    ),
    "rank.svg": (
        "Rank metrics of W1 against the swept hyper-parameter",
        "rank_galanti, effective_rank, stable_rank and residual_2 of W1 per seed (blue points) and "
        "their median (orange line); crosses are excluded members.",
    ),
    "paper_a.svg": (
        "Paper A's quantities against the swept hyper-parameter",
        "eps_batch_max (Assumption 2.5's gradient bound, max over every batch of fresh epochs), "
        "thm26_ratio (Theorem 2.6's bound 2·B·eps/µ_V over ||V||_F, log scale; >= 1 is vacuous) "
        "and the fractions of dead, always-active (linear) and zero-input hidden units, per seed "
        "and median. Members with wd = 0 have an infinite bound and are not drawn in that panel.",
    ),
    "dynamics.svg": (
        "Training dynamics: train loss, effective rank of W1 and eps_batch over epochs",
        "Median over seeds at each logged epoch (epoch 0 is initialisation), one line per value "
        "of the swept hyper-parameter; eps_batch here is the max over one fresh epoch of batches "
        "at that epoch's weights (concern C1: does training reach a small-eps regime?).",
    ),
}
PACKAGES = ("torch", "numpy", "pandas", "seaborn", "matplotlib", "snakemake", "jinja2")


def _number(value, digits: int = 3) -> str:
    """Table text: 3 significant digits, integers as such, ∞ for infinite bounds, – for missing."""
    if value is None or np.isnan(value):
        return "–"
    if np.isinf(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(value, int | np.integer) or (float(value).is_integer() and abs(value) < 1e6):
        return f"{int(value)}"
    return f"{value:.{digits}g}"


def run_table(table: pd.DataFrame, columns: tuple[str, ...], sweep: str) -> list[dict]:
    """Median over seeds per (setting, swept value) of the members that trained normally."""
    first = add_setting(table[table["layer"] == 1], sweep)
    columns = tuple(c for c in columns if c in first and first[c].notna().any())
    rows = []
    for (setting, value), group in first.groupby(["setting", sweep], sort=True):
        ok = group[group["status"] == "ok"]
        row = {
            "setting": setting,
            sweep: value if isinstance(value, str) else format_number(value),
            "ok / runs": f"{len(ok)}/{len(group)}",
        }
        for column in columns:
            row[column] = _number(ok[column].median()) if len(ok) else "–"
        rows.append(row)
    return rows


def settings_table(table: pd.DataFrame) -> list[dict]:
    first = table[table["layer"] == 1]
    rows = []
    for dataset, group in first.groupby("dataset"):
        rows.append(
            {
                "data set": dataset,
                "loss": ", ".join(sorted(group["loss"].unique())),
                "depth L": _values(group["depth"]),
                "width H": _values(group["width"]),
                "batch B": _values(group["batch_size"]),
                "epochs": _values(group["epochs"]),
                "lr": _values(group["lr"]),
                "weight decay": _values(group["weight_decay"]),
                "V decay g": _values(group["wd_function"]),
                "seeds": _values(group["seed"]),
                "members": len(group),
            }
        )
    return rows


def _values(column: pd.Series) -> str:
    return ", ".join(v if isinstance(v, str) else format_number(v) for v in sorted(column.unique()))


def _figure_uri(path: Path) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()


def provenance(runs: list[dict], meta: dict) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    return {
        "rankbias": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": commit,
        "config_sha256": hashlib.sha256(
            json.dumps(meta.get("config", {}), sort_keys=True).encode()
        ).hexdigest()[:16],
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "devices": sorted({run["device"] for run in runs}),
        "jobs": [
            {
                "job": f"{run['spec']['experiment']}/{run['spec']['group']}",
                "members": len(run["spec"]["members"]),
                "device": run["device"],
                "threads": run.get("threads", "–"),
                "train_s": f"{run['wall_time_s']:.1f}",
            }
            for run in runs
        ],
        "train_total_s": f"{sum(run['wall_time_s'] for run in runs):.0f}",
    }


def build_context(
    meta: dict, tables: list[Path], figures: list[Path], data_infos: list[Path], runs: list[Path]
) -> dict:
    figure_paths = {(path.parent.name, path.name): path for path in figures}
    experiments = []
    for path in tables:
        name = path.stem
        table = pd.read_csv(path)
        first = table[table["layer"] == 1]
        excluded = first[first["status"] != "ok"]
        block = meta.get("experiments", {}).get(name, {})
        sweep = block.get("sweep") or "weight_decay"
        experiments.append(
            {
                "name": name,
                "title": block.get("title", name),
                "description": block.get("description", ""),
                "claims": block.get("claims", []),
                "settings": settings_table(table),
                "sweep": sweep,
                "runs": run_table(table, RANK_COLUMNS, sweep),
                "paper_a": run_table(table, PAPER_A_COLUMNS, sweep),
                "counts": first["status"].value_counts().to_dict(),
                "excluded": excluded[
                    ["group", "member", "seed", "lr", "weight_decay", "status", "status_reason"]
                ].to_dict(orient="records"),
                "figures": [
                    {
                        "id": f"{name}-{file.removesuffix('.svg')}",
                        "title": FIGURES[file][0],
                        "caption": FIGURES[file][1],
                        "uri": _figure_uri(figure_paths[(name, file)]),
                    }
                    for file in FIGURE_FILES  # the files figures.py writes, in its order
                ],
            }
        )
    run_records = [read_json(path) for path in runs]
    return {
        "experiments": experiments,
        "datasets": [read_json(path) | {"name": path.stem} for path in data_infos],
        "provenance": provenance(run_records, meta),
        "metric_table": METRIC_DEFINITIONS,
    }


METRIC_DEFINITIONS = [
    ("rank_galanti", "#{σ_i / ‖W‖_F > tol}, tol = 1e-3 (Paper B's code)"),
    ("rank_rel", "#{σ_i / σ_1 > τ}, τ = 1e-3 (Paper B's text)"),
    ("stable_rank", "‖W‖_F² / σ_1²"),
    ("effective_rank", "exp(−Σ p_i ln p_i), p_i = σ_i / Σ_j σ_j (Roy & Vetterli 2007)"),
    ("residual_k", "‖W − W_k‖_F / ‖W‖_F, W_k the best rank-k approximation, k = 1, 2"),
    (
        "eps_batch_max / _mean",
        "max / mean over every batch of `eps_epochs` freshly shuffled epochs "
        "(training batch size) of ‖∂L_S'/∂V‖_F, L_S' the regularized mini-batch loss: "
        "a lower bound on the sup over all batches that Assumption 2.5 needs",
    ),
    ("eps_full", "the same gradient norm on the whole training set"),
    (
        "thm26_bound",
        "2·B·eps_batch_max / µ_V with µ_V = wd/2: Theorem 2.6 as the reviewers "
        "evaluated it (the paper's own constant is unknown); ∞ at wd = 0",
    ),
    ("thm26_ratio", "thm26_bound / ‖V‖_F; ≥ 1 means vacuous (the zero matrix is that close)"),
    ("dist_rank2", "‖V − V_2‖_F, the measured distance that Theorem 2.6 bounds"),
    (
        "units_*",
        "fractions of the m hidden units of V with z_j(x) = V_j·x + b_j over the training "
        "inputs: collapsed (‖V_j‖ + |b_j| < 1e-6·max), dead (z ≤ 0 for all x), linear (z > 0 for "
        "all x), zero_input (|z| < 1e-8 for some x); a unit can be in several",
    ),
    ("gap", "test − train loss (regression); test − train error (classification)"),
]


def render(template_dir: Path, context: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("index.html.j2").render(**context)


def write_report(
    out: Path,
    template_dir: Path,
    meta: dict,
    tables: list[Path],
    figures: list[Path],
    data_infos: list[Path],
    runs: list[Path],
) -> None:
    context = build_context(meta, tables, figures, data_infos, runs)
    write_text(out, render(template_dir, context))
