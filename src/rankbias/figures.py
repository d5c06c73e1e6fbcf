"""Seaborn figures of one experiment: spectra of W1 by weight decay, rank against wd, dynamics.

Panels are one per *setting*: data set plus every shape or optimiser axis that varies inside the
experiment (depth, width, batch size, learning rate), so no panel silently mixes settings.
Excluded members (diverged, collapsed) are drawn as crosses and left out of medians.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from rankbias.plan import format_number  # noqa: E402
from rankbias.storage import atomic_path  # noqa: E402

SETTING_AXES = ("depth", "width", "batch_size", "lr")
AXIS_LABEL = {"depth": "L", "width": "H", "batch_size": "B", "lr": "lr"}
RANK_PANELS = ("rank_galanti", "effective_rank", "stable_rank", "residual_2")
PALETTE = "viridis"  # ordered and colour-blind safe


def add_setting(frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Label each row with its setting: data set + the axes that vary in `reference`."""
    reference = frame if reference is None else reference
    varying = [axis for axis in SETTING_AXES if reference[axis].nunique() > 1]
    frame = frame.copy()
    frame["setting"] = frame["dataset"].astype(str)
    for axis in varying:
        frame["setting"] += f" {AXIS_LABEL[axis]}=" + frame[axis].map(format_number)
    return frame


def _save(figure: plt.Figure, path: Path) -> None:
    plt.rcParams["svg.hashsalt"] = path.name  # stable ids, distinct between figures
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="svg", bbox_inches="tight")
    plt.close(figure)


def _wd_colors(values) -> dict[float, tuple]:
    """Ordered colours from the dark 85 % of viridis: its last yellows are unreadable on white."""
    ordered = sorted(set(values))
    colormap = matplotlib.colormaps[PALETTE]
    positions = np.linspace(0.0, 0.85, max(len(ordered), 2))
    return {wd: colormap(position) for wd, position in zip(ordered, positions, strict=False)}


def spectra_figure(table: pd.DataFrame, spectra: dict[str, dict[str, np.ndarray]], path: Path):
    """sigma_i / sigma_1 of W1 against index i, median over seeds, one line per weight decay."""
    first = add_setting(table[(table["layer"] == 1)])
    settings = sorted(first["setting"].unique())
    figure, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
    colors = _wd_colors(first["weight_decay"])
    for axis, setting in zip(axes[0], settings, strict=True):
        rows = first[(first["setting"] == setting) & (first["status"] == "ok")]
        if rows.empty:
            axis.text(0.5, 0.5, "no member trained normally", ha="center", transform=axis.transAxes)
        for wd, by_wd in rows.groupby("weight_decay"):
            curves = np.stack(
                [
                    spectra[g]["W1"][list(spectra[g]["member"]).index(m)]
                    for g, m in zip(by_wd["group"], by_wd["member"], strict=True)
                ]
            )
            normalised = curves / curves[:, :1]
            axis.plot(
                np.arange(1, curves.shape[1] + 1),
                np.median(normalised, axis=0),
                color=colors[wd],
                label=f"wd={format_number(wd)}",
            )
        rank_bound = min(first.loc[first["setting"] == setting, ["rows", "cols"]].iloc[0])
        axis.set(
            yscale="log",
            xscale="log" if rank_bound > 20 else "linear",
            title=setting,
            xlabel="index i",
            ylabel="σ_i / σ_1 of W1 (median over seeds)",
        )
        axis.axvline(2, color="0.6", linestyle=":", linewidth=1)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    _save(figure, path)


def rank_figure(table: pd.DataFrame, path: Path, layer: int = 1):
    """Rank metrics of one layer against weight decay: seeds as points, medians as lines."""
    rows = add_setting(table[table["layer"] == layer])
    settings = sorted(rows["setting"].unique())
    grid = sorted(rows["weight_decay"].unique())
    position = {wd: i for i, wd in enumerate(grid)}
    rows = rows.assign(wd_position=rows["weight_decay"].map(position))
    figure, axes = plt.subplots(
        len(RANK_PANELS),
        len(settings),
        squeeze=False,
        figsize=(3.8 * len(settings), 2.4 * len(RANK_PANELS)),
        sharex=True,
    )
    for col, setting in enumerate(settings):
        here = rows[rows["setting"] == setting]
        ok, excluded = here[here["status"] == "ok"], here[here["status"] != "ok"]
        for row, metric in enumerate(RANK_PANELS):
            axis = axes[row][col]
            sns.stripplot(
                data=ok,
                x="wd_position",
                y=metric,
                native_scale=True,
                ax=axis,
                color="#0072B2",
                size=4,
                jitter=0.12,
                alpha=0.7,
            )
            median = ok.groupby("wd_position")[metric].median()
            axis.plot(
                median.index,
                median.values,
                color="#D55E00",
                marker="D",
                markersize=4,
                label="median over seeds",
            )
            if len(excluded):
                axis.scatter(
                    excluded["wd_position"],
                    excluded[metric].fillna(0),
                    marker="x",
                    color="0.3",
                    label="excluded (diverged/collapsed)",
                )
            axis.set(ylabel=f"{metric} (W{layer})", xlabel="", title=setting if row == 0 else "")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xticks(range(len(grid)), [format_number(w) for w in grid], rotation=45)
        axes[-1][col].set_xlabel("weight decay wd")
    axes[0][0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    _save(figure, path)


def dynamics_figure(history: pd.DataFrame, path: Path, layer: int = 1):
    """Train loss and effective rank of one layer over training, median over seeds, per wd."""
    rows = add_setting(history[history["layer"] == layer])
    settings = sorted(rows["setting"].unique())
    colors = _wd_colors(rows["weight_decay"])
    panels = ("train_loss", "effective_rank")
    figure, axes = plt.subplots(
        len(panels),
        len(settings),
        squeeze=False,
        figsize=(4.0 * len(settings), 2.8 * len(panels)),
        sharex="col",
    )
    for col, setting in enumerate(settings):
        here = rows[(rows["setting"] == setting) & ~rows["diverged"].astype(bool)]
        median = here.groupby(["weight_decay", "epoch"])[list(panels)].median().reset_index()
        for row, metric in enumerate(panels):
            axis = axes[row][col]
            for wd, curve in median.groupby("weight_decay"):
                axis.plot(
                    curve["epoch"],
                    curve[metric],
                    color=colors[wd],
                    marker=".",
                    label=f"wd={format_number(wd)}",
                )
            axis.set(
                ylabel=f"{metric}" + (f" (W{layer})" if metric != "train_loss" else ""),
                title=setting if row == 0 else "",
            )
            if metric == "train_loss":
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xlabel("epoch")
    axes[0][-1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    _save(figure, path)


def experiment_figures(
    table: pd.DataFrame,
    history: pd.DataFrame,
    spectra: dict[str, dict[str, np.ndarray]],
    out_dir: Path,
) -> list[Path]:
    sns.set_theme(style="ticks", context="paper")
    out_dir = Path(out_dir)
    paths = [out_dir / "spectra.svg", out_dir / "rank_vs_wd.svg", out_dir / "dynamics.svg"]
    spectra_figure(table, spectra, paths[0])
    rank_figure(table, paths[1])
    dynamics_figure(history, paths[2])
    return paths
