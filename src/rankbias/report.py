"""Render the self-contained HTML report: tables, inline figures, methods and provenance.

One file, no external requests: figures are inline SVG (text as text, ids made unique per
figure) labelled with what they show, CSS is inline. Every number in it is read from the
workflow's tables; nothing is typed in by hand.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import platform
import re
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import yaml
from markupsafe import Markup

from rankbias import __version__
from rankbias.figures import SETTING_AXES, add_setting, hidden_layers
from rankbias.plan import DEFAULT_FIGURES, format_number
from rankbias.registry import BOUND_COLUMNS, PAPER_A_COLUMNS
from rankbias.storage import read_json, write_text

RANK_COLUMNS = (
    "train_loss",
    "test_loss",
    "test_acc",
    "gap",
    "rank_galanti",
    "rank_rel",
    "rank_cut",
    "effective_rank",
    "stable_rank",
    "residual_1",
    "residual_2",
)
# W beside its learned part W − s_T·W_0, and whether training reached the regime
CONTROL_COLUMNS = (
    "init_factor",
    "decay_horizon",
    "movement",
    "effective_rank",
    "effective_rank_learned",
    "rank_cut",
    "rank_cut_learned",
    "plateau_change_effective_rank",
)
LARGE_T_HORIZON = 3.0  # h >= 3: the init below 5 % (Paper B's "large T", science.md)
MOVED = 0.05  # movement >= 0.05: the weights moved ("no effect" claims need it)
FIGURES = {  # kind -> (title, caption); the kinds are plan.FIGURE_KINDS
    "spectra": (
        "Singular-value spectra of the first-layer matrix W1 (= V)",
        "Normalised singular values sigma_i/sigma_1 of W1 against their index (log scale), "
        "median over seeds of the members that trained normally; one line per value of the "
        "swept hyper-parameter. The dotted line marks index 2: an approximately rank-two V drops "
        "sharply after it.",
    ),
    "rank": (
        "Rank metrics of W1 against the swept hyper-parameter",
        "rank_galanti, rank_cut (singular values above a tenth of the largest), effective_rank, "
        "effective_rank_learned (of the learned part W1 - s_T·W1_0, what remains once the "
        "decayed initialisation is taken out), stable_rank, residual_1, residual_2 and "
        "residual_2_learned of W1 per seed (blue points) and their median (orange line); crosses "
        "are excluded members. Axes start at zero. Dashed green lines are the thresholds of the "
        "rules that read a panel, labelled with their claim ids (the first claim's passing side "
        "shaded); a trend rule's panel states the spread it needs and the spread the medians "
        "move.",
    ),
    "paper_a": (
        "Paper A's quantities against the swept hyper-parameter",
        "eps_batch_max (Assumption 2.5's gradient bound, max over every batch of fresh epochs), "
        "eps_rel (eps_batch_max over wd·||V||_F, A5's rule), thm26_ratio (Theorem 2.6's bound "
        "2·B·eps/µ_V over ||V||_F, log scale; >= 1 is vacuous) and the fractions of dead, "
        "always-active (linear), switching (C8) and zero-input (C7) hidden units, per seed and "
        "median, with the rules' thresholds as dashed lines. Members with wd = 0 have an "
        "infinite bound and are not drawn in that panel.",
    ),
    "dynamics": (
        "Training dynamics: train loss, effective rank of W1 and eps_batch over epochs",
        "Median over seeds at each logged epoch (epoch 0 is initialisation), one line per value "
        "of the swept hyper-parameter; eps_batch here is the max over one fresh epoch of batches "
        "at that epoch's weights (concern C1: does training reach a small-eps regime?).",
    ),
    "grid": (
        "Rank of every hidden layer against the swept hyper-parameter, one line per colour axis",
        "rank_galanti and effective_rank of each hidden layer W_l (columns) and the test accuracy "
        "(test loss for regression), median over seeds of the members that trained normally; one "
        "line per value of the colour axis (batch size unless configured). Crosses are excluded "
        "members (diverged, or collapsed to chance accuracy): their rank is not low-rank bias.",
    ),
    "heatmap": (
        "Rank over the grid of the two swept hyper-parameters",
        "Median rank_galanti (top row) and effective_rank (bottom row) of each hidden layer, and "
        "the median test accuracy (test loss for regression), in every cell of the grid. Colours "
        "run from 0 to the layer's full rank (accuracy: 0 to 1), stated in each title, so a "
        "rank of 120 or 128 in a 128-wide layer looks alike, as it is; the numbers are in the "
        "cells. Cells marked excl. have no member that trained normally.",
    ),
    "depth": (
        "Rank of each hidden layer against its position, one line per network depth",
        "rank_galanti, effective_rank and stable_rank of hidden layer l of networks of depth L "
        "(number of weight matrices), median over seeds; line style distinguishes weight "
        "decays (claim B1: is every layer low rank, and which most? concern C6).",
    ),
    "bound": (
        "Measured rank against Paper B's Theorem 3.3 bound",
        "For each ε B7's rule reads: the count it compares (sv_above_ε = #{σ_i/‖W‖_F > ε}) of "
        "every hidden layer of every member with wd > 0 that trained normally, against "
        "galanti_bound_ε = B·log(2/ε)/(2·lr·λ), λ = wd/2 (log scale). Points in the shaded "
        "region below the dashed diagonal (the rule: measured ≤ bound) respect the bound; right "
        "of the dotted line (the layer's smaller side) the bound is trivially true and the case "
        "undecided.",
    ),
    "generalization": (
        "Generalization gap and bounds against the swept hyper-parameter",
        "Median over seeds (members with status ok) of the measured gap and of bound_grs, "
        "bound_spectral, bound_paramcount_full and bound_paramcount_rankr on a symmetric-log "
        "axis (linear within ±0.001, so negative gaps are drawn); the dotted line is the trivial "
        "value (1 for an error gap, the constant predictor's loss for a regressor): a bound "
        "above it is vacuous; A7's line (rank-r term < 1) is dashed. Infinite bounds are left "
        "out; the tables have them.",
    ),
    "test_error": (
        "Test error against weight decay, with the rules of A4 and B6",
        "Test error (1 − accuracy; test loss for regression) of every member that trained "
        "normally (points; bars: the seed range) and its median over seeds (line), one panel per "
        "setting. The dashed line is the median at wd = 0: A4 needs the wd > 0 picked on the "
        "validation split significantly below it; B6 needs the benefit between 0 and 2 points "
        "(shaded band). The verdicts use paired seed differences, not these medians.",
    ),
    "rank_gap": (
        "Generalization gap against the effective rank of W1",
        "One point per member that trained normally, coloured by weight decay (claims A4, A7, "
        "B6; concern C4): if low rank bought generalization, points would rise to the right.",
    ),
    "norm_ratio": (
        "Norm ratio of each hidden layer over training",
        "‖W_l‖_F at the previous logged epoch over ‖W_l‖_F at this one, median over seeds, one "
        "line per value of the swept hyper-parameter; Theorem 3.3 assumes it tends to 1. The "
        "dashed lines and shaded band are B8's rule (|norm_ratio − 1| within its threshold).",
    ),
}
PAPER_B_COLUMNS = (
    "sv_above_0.1",
    "rank_eps_0.1",
    "galanti_bound_0.1",
    "sv_above_0.5",
    "rank_eps_0.5",
    "galanti_bound_0.5",
    "norm_ratio",
    "test_acc",
)
GENERALIZATION_COLUMNS = ("gap", *BOUND_COLUMNS)
GENERALIZATION_NOTE = (
    "Model-level numbers (formulas with constants in the methods section). The paramcount terms "
    "have unknown constants: compare their ratios and how they order the gap, not their size. "
    "bound_grs and bound_spectral are vacuous where they reach the trivial value: 1 for a "
    "classifier's error gap, the constant predictor's loss for a regressor (see the τ table)."
)
TAU_NOTE = (
    "Kendall's tau-b between each measure (rank metrics of W1, bounds) and the gap over the models "
    "with status ok; granulated_tau (Jiang et al. 2019): tau within groups of models that differ "
    "in one hyper-parameter only, averaged over groups, then over hyper-parameters. vacuous: "
    "models whose bound reaches the trivial value, out of those with a finite bound."
)
MATCHED_NOTE = (
    "Per matched setting (same data, lr, B, depth, width, g): the wd > 0 with the lowest mean "
    "validation error (a split carved from the training set; no peeking at the test set) against "
    "wd = 0, paired by seed (same initialisation and data order) on the test error (test loss for "
    "regression). improvement = mean of err(wd = 0) − err(best wd), its 95 % t interval "
    "(ci_low, ci_high) and the one-sided p of an exact sign-flip test that it is above 0."
)
REGIME_NOTE = (
    "ok: trained normally (not diverged, not collapsed). plateaued: effective_rank of W1 changed "
    "by at most metrics.plateau_tol (5 %) over the logged epochs of the last quarter of "
    "training; undecided when fewer than two logged epochs fall there. h is the decay horizon "
    "Σ lr_t·wd (the init survives as e^-h); Paper B's large-T regime is h ≥ 3. moved: "
    "||W_T - W_0|| / ||W_0|| ≥ 0.05."
)
CONTROL_NOTE = (
    "init_factor s_T = Π(1 - lr_t·wd) is the share of the random initialisation W_0 left in W_T; "
    "the learned part is W_T - s_T·W_0. A rank that falls in W but not in its learned part is "
    "explained by the initialisation fading away, not by a learned low-rank structure. "
    "plateau_change_effective_rank: relative change over the last quarter of training."
)
PAPER_A_NOTE = (
    "µ_V = wd/2. thm26_bound uses the constant 2·B/µ_V as the reviewers evaluated Theorem 2.6; "
    "the paper's exact constant is unknown. eps_batch_max is a lower bound on the supremum over "
    "all mini-batches that Assumption 2.5 requires."
)
CORRELATION_NOTE = (
    "Per hidden layer (W1 of a two-layer net), swept axis, rank metric and slice (every other axis "
    "fixed): Spearman's rho of the axis with the metric within each seed, averaged over seeds "
    "(rho), and the p-values of a seed-stratified permutation test that the rank falls (p_falling) "
    "or rises (p_rising) with the axis; separately for settings with wd > 0 and wd = 0. "
    "grid_spread = (max − min)/max of the per-point medians: how far the rank moves at all. Paper "
    "B's direction with wd > 0: rising with batch size, falling with lr and wd (B2–B4); with wd = "
    "0 it predicts minimal effect (B5)."
)
PAPER_B_NOTE = (
    "galanti_bound_ε = B·log(2/ε)/(2·lr·λ) with λ = wd/2 (∞ at wd = 0), at the last epoch's "
    "learning rate; sv_above_ε = #{σ_i/‖W‖_F > ε}; rank_eps_ε = the smallest rank within ε of "
    "W/‖W‖_F in Frobenius norm. The bound says something only below the layer's smaller side. "
    "norm_ratio = ‖W‖_F at the previous logged epoch over ‖W‖_F at the last (claim B8: → 1)."
)
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


def run_table(
    table: pd.DataFrame, columns: tuple[str, ...], sweep: str, layers: str = "first"
) -> list[dict]:
    """Median over seeds per (setting, swept value[, layer]) of the members that trained normally.

    `layers`: "first" (W1 only, Paper A's V), "hidden" (every hidden layer, a row each) or
    "output" (the last layer, which Paper B reports apart)."""
    if layers == "first":
        rows_in = table[table["layer"] == 1]
    elif layers == "hidden":
        rows_in = hidden_layers(table)
    else:
        rows_in = table[table["layer"] == table["depth"]]
    rows_in = add_setting(rows_in, sweep)
    columns = tuple(c for c in columns if c in rows_in and rows_in[c].notna().any())
    keys = ["setting", sweep] + (["layer"] if layers == "hidden" else [])
    # settings in numeric order of their axes (B=16 before B=256), then the swept value, then layer
    order = ["dataset", *(a for a in SETTING_AXES if a != sweep and a in rows_in), sweep, "layer"]
    rows_in = rows_in.sort_values(order, kind="stable")
    rows = []
    for key, group in rows_in.groupby(keys, sort=False):
        ok = group[group["status"] == "ok"]
        value = key[1]
        row = {
            "setting": key[0],
            sweep: value if isinstance(value, str) else format_number(value),
            **({"layer": f"W{key[2]}"} if layers == "hidden" else {}),
            "ok / runs": f"{len(ok)}/{len(group)}",
        }
        for column in columns:
            row[column] = _number(ok[column].median()) if len(ok) else "–"
        rows.append(row)
    return rows if columns else []


def trend_rows(summary: dict) -> list[dict]:
    """The statistics rule's seed-combined trends, formatted."""
    numeric = ("rho", "p_falling", "p_rising", "grid_spread")
    return _formatted(pd.DataFrame(summary.get("trends", [])), numeric)


def _formatted(frame: pd.DataFrame, numeric: tuple[str, ...]) -> list[dict]:
    records = frame.to_dict(orient="records")
    return [{k: _number(v) if k in numeric else v for k, v in r.items()} for r in records]


def experiment_tables(
    table: pd.DataFrame, block: dict, sweep: str, summary: dict | None = None
) -> list[dict]:
    """The tables of one experiment's section, each {title, note, rows}; empty ones dropped.
    `summary`: the experiment's statistics (results/statistics/<experiment>.json)."""
    summary = summary or {}
    deep = bool((table["depth"] > 2).any() or table.get("batch_norm", pd.Series(False)).any())
    paper_b = deep or {"B7", "B8"} & set(block.get("claims") or [])
    layers = "hidden" if deep else "first"
    where = "every hidden layer" if deep else "W1"
    tables = [
        {
            "title": f"Final losses and rank metrics of {where} (median over seeds, by {sweep})",
            "note": "",
            "rows": run_table(table, RANK_COLUMNS, sweep, layers),
        },
        {
            "title": "Members in each claim's regime",
            "note": REGIME_NOTE,
            "rows": regime_table(table),
        },
        {
            "title": f"The learned part of {where} beside W (median over seeds, by {sweep})",
            "note": CONTROL_NOTE,
            "rows": run_table(table, CONTROL_COLUMNS, sweep, layers),
        },
        {
            "title": f"Paper A's quantities (median over seeds, by {sweep})",
            "note": PAPER_A_NOTE,
            "rows": run_table(table, PAPER_A_COLUMNS, sweep),
        },
        {
            "title": "Seed-combined Spearman trend of rank with each swept axis, per slice",
            "note": CORRELATION_NOTE,
            "rows": trend_rows(summary),
        },
    ]
    tables += [
        {
            "title": f"Generalization: gap and bounds per model (median over seeds, by {sweep})",
            "note": GENERALIZATION_NOTE,
            "rows": run_table(table, GENERALIZATION_COLUMNS, sweep),
        },
        {
            "title": "Which measure tracks the gap? Kendall τ over the healthy models",
            "note": TAU_NOTE,
            "rows": _formatted(pd.DataFrame(summary.get("tau", [])), ("tau", "granulated_tau")),
        },
        {
            "title": "Does weight decay buy test error? Best wd > 0 (on validation) against wd = 0",
            "note": MATCHED_NOTE,
            "rows": _formatted(
                pd.DataFrame(summary.get("wd_benefit", [])),
                ("best_wd", "error_wd0", "error_best", "improvement", "ci_low", "ci_high", "p"),
            ),
        },
    ]
    if paper_b:
        tables += [
            {
                "title": f"Paper B's Theorem 3.3 and norm ratio, {where} (median over seeds)",
                "note": PAPER_B_NOTE,
                "rows": run_table(table, PAPER_B_COLUMNS, sweep, layers),
            },
            {
                "title": "The output layer, reported apart (median over seeds)",
                "note": "",
                "rows": run_table(table, RANK_COLUMNS[4:], sweep, "output"),
            },
        ]
    return [t for t in tables if t["rows"]]


def regime_table(table: pd.DataFrame) -> list[dict]:
    """Per setting, how many members are in each claim's regime (first layer's rows; every
    member counted once): trained normally, plateaued, decay horizon >= 3, moved. Empty for
    tables without the controls (written by an older version)."""
    if not {"decay_horizon", "movement"} <= set(table):
        return []
    rows_in = add_setting(table[table["layer"] == 1], "weight_decay")
    rows = []
    for setting, group in rows_in.groupby("setting", sort=False):
        plateaued = group.get("plateaued_effective_rank", pd.Series(np.nan, group.index))
        rows.append(
            {
                "setting": setting,
                "members": len(group),
                "ok": int((group["status"] == "ok").sum()),
                "plateaued (effective_rank)": int((plateaued == 1).sum()),
                "plateau undecided": int(plateaued.isna().sum()),
                f"h ≥ {LARGE_T_HORIZON:g}": int((group["decay_horizon"] >= LARGE_T_HORIZON).sum()),
                f"moved ≥ {MOVED:g}": int((group["movement"] >= MOVED).sum()),
            }
        )
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
                "batch norm": _values(group["batch_norm"].map({True: "yes", False: "no"}))
                if "batch_norm" in group
                else "no",
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


SVG_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)([^"()]+)')
COMPRESS_ABOVE = 40_000  # bytes: larger figures travel gzip-compressed, unpacked by the browser


def inline_figure(path: Path, prefix: str) -> dict:
    """An SVG figure for inline use: ids (and the references to them) prefixed so that two
    figures never share one, labelled by its <desc> (what it shows) for screen readers. A large
    figure is gzip-compressed (base64), and the page's one script unpacks it in place
    (DecompressionStream: no request, no library); `gz` holds it, `svg` the small ones."""
    text = path.read_text()
    text = text[text.index("<svg") :]
    text = SVG_REFERENCE.sub(lambda m: f"{m[1]}{prefix}-{m[2]}", text)
    found = re.search(r"<desc>(.*?)</desc>", text, flags=re.S)
    alt = found[1] if found else ""  # already XML-escaped
    text = text.replace("<svg", f'<svg role="img" aria-label="{alt}"', 1)
    if len(text.encode()) <= COMPRESS_ABOVE:
        return {"svg": Markup(text), "gz": None, "alt": Markup(alt), "file": str(path)}
    packed = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    return {
        "svg": None,
        "gz": base64.b64encode(packed).decode(),
        "alt": Markup(alt),
        "file": str(path),
    }


def _range(values) -> str:
    values = sorted({v for v in values if v is not None and v == v})
    if not values:
        return "–"
    low, high = format_number(values[0]), format_number(values[-1])
    return low if low == high else f"{low}–{high}"


def setting_summary(table: pd.DataFrame, train_sizes: dict[str, int]) -> str:
    """One experiment's setting in a line: data (training rows), depth, width, training
    length, weight decays, seeds."""
    first = table[table["layer"] == 1]
    data = ", ".join(
        f"{name} ({train_sizes[name]:,} train)" if name in train_sizes else name
        for name in sorted(first["dataset"].unique())
    )
    length = f"{_range(first['epochs'])} epochs"
    if "steps" in first and first["steps"].notna().any():
        length += f" ({_range(first['steps'])} steps)"
    return (
        f"{data}; L = {_range(first['depth'])}, H = {_range(first['width'])}; {length}; "
        f"wd {_range(first['weight_decay'])}; {first['seed'].nunique()} seeds"
    )


def _data_size(name: str, datasets: dict) -> str:
    size = datasets.get(name, {}).get("train_size")
    return f"{name} ({size:,} rows)" if isinstance(size, int) else f"{name} (all rows)"


def paper_scale(path: Path | None) -> list[dict]:
    """What config/paper.yaml runs instead, experiment by experiment (its training lengths,
    data sizes and seeds), so the scope box can say how a paper-scale run differs."""
    if path is None or not path.exists():
        return []
    config = yaml.safe_load(path.read_text()) or {}
    datasets = config.get("datasets", {})
    rows = []
    for name, block in (config.get("experiments") or {}).items():
        runs = block.get("runs", [])
        lengths = sorted(
            {f"{r['steps']} steps" if r.get("steps") else f"{r.get('epochs')} epochs" for r in runs}
        )
        sizes = sorted({_data_size(r["dataset"], datasets) for r in runs})
        seeds = sorted({len(r.get("seeds", [])) for r in runs})
        rows.append(
            {
                "experiment": name,
                "data": ", ".join(sizes),
                "length": ", ".join(lengths),
                "seeds": ", ".join(map(str, seeds)),
            }
        )
    return rows


def run_scope(
    tables: dict[str, pd.DataFrame],
    data_infos: list[dict],
    runs: list[dict],
    verdicts: dict,
    paper_config: Path | None,
) -> dict:
    """The scope-and-fidelity box: what this run is, claim by claim beside the paper's own
    setting, and what a paper-scale run changes."""
    train_sizes = {info["name"]: int(info["n_train"]) for info in data_infos}
    experiments = {name: setting_summary(table, train_sizes) for name, table in tables.items()}
    first = pd.concat([t[t["layer"] == 1] for t in tables.values()]) if tables else pd.DataFrame()
    seeds = sorted({int(s) for t in tables.values() for s in t["seed"].unique()})
    claims = [
        {
            "id": claim["id"],
            "paper": claim.get("paper_setting", ""),
            "run": [
                f"{name}: {experiments[name]}"
                for name in claim["experiments"]
                if name in experiments
            ],
        }
        for claim in verdicts["claims"]
    ]
    return {
        "members": len(first),
        "experiments": len(tables),
        "seeds": f"{len(seeds)} ({_range(seeds)})",
        "epochs": _range(first["epochs"]) if len(first) else "–",
        "steps": _range(first["steps"]) if "steps" in first else "–",
        "data": ", ".join(f"{name} {size:,}" for name, size in sorted(train_sizes.items())),
        "devices": ", ".join(sorted({run["device"] for run in runs})),
        "train_minutes": f"{sum(run['wall_time_s'] for run in runs) / 60:.1f}",
        "claims": claims,
        "paper_scale": paper_scale(paper_config),
    }


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


VERDICT_MARK = {"supported": "✓", "contradicted": "✗", "mixed": "◐", "inconclusive": "?"}
FINDING_MARK = {"borne out": "✓", "not borne out": "✗", "undecided": "?", "context": "·"}
RESULT_MARK = {
    "pass": "✓ pass",
    "fail": "✗ fail",
    "undecided": "– undecided",
    "underpowered": "○ underpowered",
}
CASE_COLUMNS = {  # case key -> column header of the numbers table, in this order
    "case": "case",
    "value": "seed mean",
    "ci": "95 % CI",
    "p": "p",
    "n": "n",
    "median": "median",
    "grid_spread": "grid spread",
    "grid_points": "grid points",
    "best_wd": "best wd (validation)",
    "error_wd0": "test error at wd = 0",
    "error_best": "test error at best wd",
    "relative_to_median": "bound (median)",
    "test": "test",
}
OPEN_CASES = 12  # numbers tables up to this many rows are shown open, longer ones folded


def case_rows(check: dict) -> list[dict]:
    """The numbers table of one check: every case with its outcome, the seed statistic with its
    95 % interval and p-value, and why a case is undecided, underpowered or fails otherwise."""
    keys = [k for k in CASE_COLUMNS if any(case.get(k) is not None for case in check["cases"])]
    rows = []
    for case in check["cases"]:
        row = {}
        for key in keys:
            value = case.get(key)
            if key == "ci":
                value = (
                    f"[{_number(value[0])}, {_number(value[1])}]"
                    if value and None not in value
                    else "–"
                )
            row[CASE_COLUMNS[key]] = (
                value if isinstance(value, str) else _number(np.nan if value is None else value)
            )
        row["outcome"] = RESULT_MARK[case["outcome"]]
        reason = case.get("reason", "")
        if case.get("excluded") and case["outcome"] in ("pass", "fail"):
            reason = (reason + "; " if reason else "") + f"left out: {case['excluded']}"
        row["reason"] = reason
        rows.append(row)
    return rows


def _stability_text(stability: dict) -> str:
    share = f"{stability['agreement']:.0%} of {stability['resamples']} seed resamples agree"
    if stability["stable"] or not stability.get("competing"):
        return share
    return f"unstable: {share}; the competing verdict is {stability['competing']}"


def claim_sections(verdicts: dict, figure_uris: dict, experiment_kinds: dict) -> tuple[list, dict]:
    """Claims in registry order, each figure embedded at its first claim and linked after that.

    Returns the sections and {(experiment, kind): claim id} of the figures placed."""
    placed: dict[tuple[str, str], str] = {}
    sections = []
    for claim in verdicts["claims"]:
        figures = []
        for kind in claim["figures"]:
            for experiment in claim["experiments"]:
                key = (experiment, kind)
                if kind not in experiment_kinds.get(experiment, ()):
                    continue
                figure = {
                    "id": f"fig-{experiment}-{kind}",
                    "experiment": experiment,
                    "title": FIGURES[kind][0],
                    "caption": FIGURES[kind][1],
                    "inline": None if key in placed else figure_uris[key],
                    "shown_in": placed.get(key),
                }
                placed.setdefault(key, claim["id"])
                figures.append(figure)
        sections.append(
            {
                **claim,
                "mark": VERDICT_MARK[claim["verdict"]],
                "stability_text": _stability_text(claim["stability"]),
                "checks": [
                    {
                        **check,
                        "rows": case_rows(check),
                        "open": len(check["cases"]) <= OPEN_CASES,
                        "mark": VERDICT_MARK[check["verdict"]],
                    }
                    for check in claim["checks"]
                ],
                "figure_list": figures,
            }
        )
    return sections, placed


def deciding_share(concern: dict) -> str:
    """The number a concern's finding rests on: how many decided cases point to "borne out",
    against the share its registry entry asks for."""
    toward = "pass" if concern["borne_out_when"] == "supported" else "fail"
    counts = concern["counts"]
    decided = counts.get("pass", 0) + counts.get("fail", 0)
    if not decided:
        return "No case decided: undecided."
    share = concern.get("borne_out_share", 0.5)
    return (
        f"{counts.get(toward, 0)} of {decided} decided cases point to borne out (all: borne "
        f"out; none: not; in between, borne out from {share:.0%} of them)."
    )


def concern_index(verdicts: dict) -> list[dict]:
    """Each concern with its finding, the number that decides it, its evidence and the claims
    whose sections answer it."""
    return [
        {
            **concern,
            "decides": deciding_share(concern) if concern["checks"] else "",
            "mark": FINDING_MARK[concern["finding"]],
            "stability_text": _stability_text(concern["stability"]),
            "checks": [
                {**check, "rows": case_rows(check), "open": len(check["cases"]) <= OPEN_CASES}
                for check in concern["checks"]
            ],
        }
        for concern in verdicts["concerns"]
    ]


def build_context(
    meta: dict,
    tables: list[Path],
    figures: list[Path],
    data_infos: list[Path],
    runs: list[Path],
    claims: Path,
    statistics: list[Path],
    paper_config: Path | None = None,
) -> dict:
    summaries = {path.stem: read_json(path) for path in statistics}
    figure_paths = {(path.parent.name, path.name): path for path in figures}
    figure_uris = {  # short id prefixes: a figure has thousands of references
        (exp, name.removesuffix(".svg")): inline_figure(path, f"f{number}")
        for number, ((exp, name), path) in enumerate(figure_paths.items())
    }
    experiment_kinds = {
        name: block.get("figures") or list(DEFAULT_FIGURES)
        for name, block in meta.get("experiments", {}).items()
    }
    verdicts = read_json(claims)
    claim_list, placed = claim_sections(verdicts, figure_uris, experiment_kinds)
    experiments = []
    tables_by_name = {path.stem: pd.read_csv(path) for path in tables}  # read once
    for name, table in tables_by_name.items():
        first = table[table["layer"] == 1]
        excluded = first[first["status"] != "ok"]
        block = meta.get("experiments", {}).get(name, {})
        sweep = block.get("sweep") or "weight_decay"
        kinds = block.get("figures") or list(DEFAULT_FIGURES)
        experiments.append(
            {
                "name": name,
                "title": block.get("title", name),
                "description": block.get("description", ""),
                "claims": block.get("claims", []),
                "settings": settings_table(table),
                "sweep": sweep,
                "tables": experiment_tables(table, block, sweep, summaries.get(name, {})),
                "counts": first["status"].value_counts().to_dict(),
                "excluded": excluded[
                    ["group", "member", "seed", "lr", "weight_decay", "status", "status_reason"]
                ].to_dict(orient="records"),
                "figures": [
                    {
                        "id": f"fig-{name}-{kind}",
                        "title": FIGURES[kind][0],
                        "caption": FIGURES[kind][1],
                        "inline": None if (name, kind) in placed else figure_uris[(name, kind)],
                        "shown_in": placed.get((name, kind)),
                    }
                    for kind in kinds
                ],
            }
        )
    run_records = [read_json(path) for path in runs]
    data_records = [read_json(path) | {"name": path.stem} for path in data_infos]
    verdict_counts = {v: sum(c["verdict"] == v for c in verdicts["claims"]) for v in VERDICT_MARK}
    return {
        "claims": claim_list,
        "concerns": concern_index(verdicts),
        "papers": verdicts["papers"],
        "verdict_counts": verdict_counts,
        "verdict_marks": VERDICT_MARK,
        "how_sure": verdicts["summary"],
        "alpha": verdicts.get("alpha", 0.05),
        "experiments": experiments,
        "datasets": data_records,
        "scope": run_scope(tables_by_name, data_records, run_records, verdicts, paper_config),
        "provenance": provenance(run_records, meta) | {"registry": verdicts.get("registry", {})},
        "metric_table": METRIC_DEFINITIONS,
    }


METRIC_DEFINITIONS = [
    ("rank_galanti", "#{σ_i / ‖W‖_F > tol}, tol = 1e-3 (Paper B's code)"),
    ("rank_rel", "#{σ_i / σ_1 > τ}, τ = 1e-3 (Paper B's text)"),
    (
        "rank_cut",
        "#{σ_i / σ_1 > 0.1} (metrics.rank_cut): the directions that carry weight; the "
        "planted-rank control compares it with the teacher's k",
    ),
    ("stable_rank", "‖W‖_F² / σ_1²"),
    ("effective_rank", "exp(−Σ p_i ln p_i), p_i = σ_i / Σ_j σ_j (Roy & Vetterli 2007)"),
    ("residual_k", "‖W − W_k‖_F / ‖W‖_F, W_k the best rank-k approximation, k = 1, 2"),
    (
        "init_factor, decay_horizon",
        "s_T = Π_t (1 − lr_t·wd), the share of the random initialisation W_0 left in W_T, and "
        "h = Σ_t lr_t·wd (e^−h ≈ s_T); Paper B's large-T regime is h ≥ 3",
    ),
    ("movement", "‖W_T − W_0‖_F / ‖W_0‖_F"),
    (
        "<metric>_learned",
        "the metric of the learned part L = W_T − s_T·W_0: a rank that falls in W but not in L "
        "is the initialisation fading away, not a learned low-rank structure",
    ),
    (
        "plateaued_<metric>",
        "1 when the metric changed by ≤ 5 % (metrics.plateau_tol) over the logged epochs of the "
        "last quarter of training, 0 when not, empty (undecided) with fewer than two logged "
        "epochs there; plateau_change_<metric> is the change",
    ),
    ("val_loss, val_acc", "on the validation rows carved from the training set (default 10 %)"),
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
        "all x), zero_input (live, and |z| < 1e-6·(‖V_j‖·‖x‖ + |b_j|) for some x: at its kink)",
    ),
    ("<metric>_live", "the metric of V over its live units (neither collapsed nor dead)"),
    (
        "galanti_bound_ε",
        "B·log(2/ε)/(2·lr·λ), λ = wd/2, at the last epoch's learning rate: Paper B's Theorem 3.3 "
        "bound on the rank of a matrix within ε of W/‖W‖; ∞ at wd = 0; ε = 0.1, 0.3, 0.5",
    ),
    ("sv_above_ε", "#{σ_i / ‖W‖_F > ε}, the measured count the bound is compared with"),
    ("rank_eps_ε", "the smallest r with ‖W − W_r‖_F / ‖W‖_F ≤ ε"),
    (
        "norm_ratio",
        "‖W‖_F at the previous logged epoch / ‖W‖_F at the last (Theorem 3.3 assumes → 1, B8)",
    ),
    (
        "rho, grid_spread",
        "Spearman's rho between a swept axis and a rank metric over the grid (one point per "
        "setting, median over seeds of members with status ok), with wd > 0 and wd = 0 apart; "
        "grid_spread = (max − min)/max of those medians; rho_within = median of rho inside "
        "each slice with the other varied axes fixed",
    ),
    ("gap", "test − train loss (regression); test − train error (classification)"),
    (
        "bound_paramcount_full / _rank2 / _rankr",
        "√(p·ln m·ln N / N) with p = m·n, 2·(m + n), r·(m + n) (r = rank_galanti of V), N training "
        "samples: the complexity terms Paper A compares, constants unknown",
    ),
    (
        "bound_grs",
        "B_x·(√(2·ln 2·d) + 1)·Π_j ‖W~_j‖_F / √N (Golowich–Rakhlin–Shamir), B_x = max ‖[x, 1]‖, "
        "d = depth; W~_j absorbs the biases: [[W_j, b_j], [0, 1]] for hidden layers, [W_L, b_L]",
    ),
    (
        "bound_spectral",
        "(Π_j ‖W~_j‖_2)·(Σ_j (‖W~_jᵀ‖_{2,1}/‖W~_j‖_2)^{2/3})^{3/2}·‖X~‖_F / (γ·N) "
        "(Bartlett–Foster–Telgarsky), ‖Wᵀ‖_{2,1} = sum of row norms, γ = margin_gamma; "
        "classifiers only, ∞ when γ ≤ 0; batch-norm nets are folded (running statistics) first",
    ),
    ("margin_gamma", "10th percentile over the training set of f(x)_y − max_{k≠y} f(x)_k"),
    (
        "tau, granulated_tau",
        "Kendall's tau-b of a measure with the gap over models; granulated: within groups "
        "differing in one hyper-parameter, averaged over groups and hyper-parameters (Jiang et "
        "al. 2019)",
    ),
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
    claims: Path,
    statistics: list[Path],
    paper_config: Path | None = None,
) -> None:
    context = build_context(
        meta, tables, figures, data_infos, runs, claims, statistics, paper_config
    )
    write_text(out, render(template_dir, context))
