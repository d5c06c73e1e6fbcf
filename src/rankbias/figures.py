"""Seaborn figures of one experiment against its swept axis (weight decay unless configured).

Figures: spectra of W1 per swept value, rank metrics and Paper A's quantities against the swept
value, and training dynamics. Panels are one per *setting*: data set plus every other axis that
varies inside the experiment, so no panel silently mixes settings. Excluded members (diverged,
collapsed) are drawn as crosses and left out of medians.
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

SETTING_AXES = ("depth", "width", "batch_size", "lr", "weight_decay", "wd_function")
AXIS_LABEL = {
    "depth": "L",
    "width": "H",
    "batch_size": "B",
    "lr": "lr",
    "weight_decay": "wd",
    "wd_function": "g",
}
RANK_PANELS = ("rank_galanti", "effective_rank", "stable_rank", "residual_2")
PAPER_A_PANELS = ("eps_batch_max", "thm26_ratio", "units_dead", "units_linear", "units_zero_input")
LOG_SCALE = {"eps_batch_max", "thm26_ratio"}
PALETTE = "viridis"  # ordered and colour-blind safe


def _label(axis: str, value) -> str:
    return value if isinstance(value, str) else format_number(value)


def add_setting(frame: pd.DataFrame, sweep: str = "weight_decay") -> pd.DataFrame:
    """Label each row with its setting: data set + the axes other than `sweep` that vary."""
    varying = [
        axis
        for axis in SETTING_AXES
        if axis != sweep and axis in frame and frame[axis].nunique() > 1
    ]
    frame = frame.copy()
    frame["setting"] = frame["dataset"].astype(str)
    for axis in varying:
        frame["setting"] += f" {AXIS_LABEL[axis]}=" + frame[axis].map(
            lambda value, axis=axis: _label(axis, value)
        )
    return frame


def _save(figure: plt.Figure, path: Path) -> None:
    plt.rcParams["svg.hashsalt"] = path.name  # stable ids, distinct between figures
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="svg", bbox_inches="tight")
    plt.close(figure)


def _colors(values) -> dict:
    """Ordered colours from the dark 85 % of viridis: its last yellows are unreadable on white."""
    ordered = sorted(set(values))
    colormap = matplotlib.colormaps[PALETTE]
    positions = np.linspace(0.0, 0.85, max(len(ordered), 2))
    return {value: colormap(position) for value, position in zip(ordered, positions, strict=False)}


def _legend(axes) -> None:
    axes[0][-1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1))


def spectra_figure(
    table: pd.DataFrame,
    spectra: dict[str, dict[str, np.ndarray]],
    path: Path,
    sweep: str = "weight_decay",
):
    """sigma_i / sigma_1 of W1 against index i, median over seeds, one line per swept value."""
    first = add_setting(table[(table["layer"] == 1)], sweep)
    settings = sorted(first["setting"].unique())
    figure, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.4), squeeze=False)
    colors = _colors(first[sweep])
    for axis, setting in zip(axes[0], settings, strict=True):
        rows = first[(first["setting"] == setting) & (first["status"] == "ok")]
        if rows.empty:
            axis.text(0.5, 0.5, "no member trained normally", ha="center", transform=axis.transAxes)
        for value, group in rows.groupby(sweep):
            curves = np.stack(
                [
                    spectra[g]["W1"][list(spectra[g]["member"]).index(m)]
                    for g, m in zip(group["group"], group["member"], strict=True)
                ]
            )
            axis.plot(
                np.arange(1, curves.shape[1] + 1),
                np.median(curves / curves[:, :1], axis=0),
                color=colors[value],
                label=f"{AXIS_LABEL[sweep]}={_label(sweep, value)}",
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
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def metric_figure(
    table: pd.DataFrame,
    path: Path,
    metrics: tuple[str, ...],
    sweep: str = "weight_decay",
    layer: int = 1,
):
    """Metrics of one layer against the swept value: seeds as points, medians as lines."""
    rows = add_setting(table[table["layer"] == layer], sweep)
    settings = sorted(rows["setting"].unique())
    grid = sorted(rows[sweep].unique())
    rows = rows.assign(position=rows[sweep].map({value: i for i, value in enumerate(grid)}))
    figure, axes = plt.subplots(
        len(metrics),
        len(settings),
        squeeze=False,
        sharex=True,
        figsize=(3.8 * len(settings), 2.3 * len(metrics)),
    )
    for col, setting in enumerate(settings):
        here = rows[rows["setting"] == setting]
        ok, excluded = here[here["status"] == "ok"], here[here["status"] != "ok"]
        for row, metric in enumerate(metrics):
            axis = axes[row][col]
            finite = ok[np.isfinite(ok[metric])]
            sns.stripplot(
                data=finite,
                x="position",
                y=metric,
                native_scale=True,
                ax=axis,
                color="#0072B2",
                size=4,
                jitter=0.12,
                alpha=0.7,
            )
            median = finite.groupby("position")[metric].median()
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
                    excluded["position"],
                    excluded[metric].fillna(0),
                    marker="x",
                    color="0.3",
                    label="excluded (diverged/collapsed)",
                )
            if metric in LOG_SCALE and (finite[metric] > 0).any():
                axis.set_yscale("log")
            suffix = f" (W{layer})" if metric in RANK_PANELS else ""
            axis.set(ylabel=metric + suffix, xlabel="", title=setting if row == 0 else "")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xticks(range(len(grid)), [_label(sweep, v) for v in grid], rotation=45)
        axes[-1][col].set_xlabel(sweep)
    axes[0][0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    _save(figure, path)


def dynamics_figure(history: pd.DataFrame, path: Path, sweep: str = "weight_decay", layer: int = 1):
    """Train loss, effective rank of one layer and eps_batch over training, median over seeds."""
    rows = add_setting(history[history["layer"] == layer], sweep)
    settings = sorted(rows["setting"].unique())
    colors = _colors(rows[sweep])
    panels = [p for p in ("train_loss", "effective_rank", "eps_batch_max") if p in rows]
    figure, axes = plt.subplots(
        len(panels),
        len(settings),
        squeeze=False,
        sharex="col",
        figsize=(4.0 * len(settings), 2.6 * len(panels)),
    )
    for col, setting in enumerate(settings):
        here = rows[(rows["setting"] == setting) & ~rows["diverged"].astype(bool)]
        median = here.groupby([sweep, "epoch"])[panels].median().reset_index()
        for row, metric in enumerate(panels):
            axis = axes[row][col]
            for value, curve in median.groupby(sweep):
                axis.plot(
                    curve["epoch"],
                    curve[metric],
                    color=colors[value],
                    marker=".",
                    label=f"{AXIS_LABEL[sweep]}={_label(sweep, value)}",
                )
            axis.set(
                ylabel=metric + (f" (W{layer})" if metric == "effective_rank" else ""),
                title=setting if row == 0 else "",
            )
            if metric != "effective_rank":
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xlabel("epoch")
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


FIGURE_FILES = ("spectra.svg", "rank.svg", "paper_a.svg", "dynamics.svg")


def experiment_figures(
    table: pd.DataFrame,
    history: pd.DataFrame,
    spectra: dict[str, dict[str, np.ndarray]],
    out_dir: Path,
    sweep: str = "weight_decay",
) -> list[Path]:
    sns.set_theme(style="ticks", context="paper")
    paths = [Path(out_dir) / name for name in FIGURE_FILES]
    spectra_figure(table, spectra, paths[0], sweep)
    metric_figure(table, paths[1], RANK_PANELS, sweep)
    metric_figure(table, paths[2], PAPER_A_PANELS, sweep)
    dynamics_figure(history, paths[3], sweep)
    return paths
