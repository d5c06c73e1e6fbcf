"""Seaborn figures of one experiment against its swept axis (weight decay unless configured).

Paper A's figures: spectra of W1 per swept value, rank metrics and Paper A's quantities against the
swept value, and training dynamics. Paper B's: hidden-layer ranks against the swept value per
`hue` value (grid) and over the (hue, sweep) grid (heatmap), rank per layer against depth, the
measured rank against Theorem 3.3's bound, and the norm ratio over training. An experiment lists
the figures it draws (`figures` in the config); `draw_figure` makes one. Panels are one per
*setting*: data set plus every other axis that varies inside the experiment, so no panel silently
mixes settings. Excluded members (diverged, collapsed) are drawn as crosses and left out of
medians.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from rankbias.plan import FIGURE_KINDS, format_number  # noqa: E402
from rankbias.registry import AXIS_LABEL  # noqa: E402
from rankbias.storage import atomic_path  # noqa: E402

SETTING_AXES = ("depth", "width", "batch_size", "lr", "weight_decay", "wd_function")
# W's rank beside that of its learned part W − s_T·W_0 (a fading init also lowers W's rank)
RANK_PANELS = (
    "rank_galanti",
    "rank_cut",
    "effective_rank",
    "effective_rank_learned",
    "stable_rank",
    "residual_2",
)
PAPER_A_PANELS = ("eps_batch_max", "thm26_ratio", "units_dead", "units_linear", "units_zero_input")
LOG_SCALE = {"eps_batch_max", "thm26_ratio"}
PALETTE = "viridis"  # ordered and colour-blind safe


def _label(axis: str, value) -> str:
    return value if isinstance(value, str) else format_number(value)


def add_setting(
    frame: pd.DataFrame, sweep: str = "weight_decay", hue: str | None = None
) -> pd.DataFrame:
    """Label each row with its setting: data set + the axes other than `sweep` (and `hue`, when
    the figure draws it as colours) that vary."""
    varying = [
        axis
        for axis in SETTING_AXES
        if axis not in (sweep, hue) and axis in frame and frame[axis].nunique() > 1
    ]
    frame = frame.copy()
    frame["setting"] = frame["dataset"].astype(str)
    for axis in varying:
        frame["setting"] += f" {AXIS_LABEL[axis]}=" + frame[axis].map(
            lambda value, axis=axis: _label(axis, value)
        )
    return frame


def ordered_settings(frame: pd.DataFrame) -> list[str]:
    """Setting labels in numeric order of their axes (B=16 before B=256), not as strings."""
    axes = ["dataset", *(axis for axis in SETTING_AXES if axis in frame)]
    return list(dict.fromkeys(frame.sort_values(axes, kind="stable")["setting"]))


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


def _mark_excluded(axis, x: pd.Series, y: pd.Series) -> None:
    """Diverged or collapsed members as grey crosses (missing values drawn at 0)."""
    if len(x):
        axis.scatter(
            x, y.fillna(0), marker="x", color="0.4", s=14, label="excluded (diverged/collapsed)"
        )


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
    settings = ordered_settings(first)
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
    """Metrics of one layer against the swept value: seeds as points, medians as lines (a metric
    the table lacks, e.g. one written by an older version, is left out)."""
    metrics = tuple(metric for metric in metrics if metric in table)
    rows = add_setting(table[table["layer"] == layer], sweep)
    settings = ordered_settings(rows)
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
            _mark_excluded(axis, excluded["position"], excluded[metric])
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
    settings = ordered_settings(rows)
    colors = _colors(rows[sweep])
    candidates = ("train_loss", "effective_rank", "effective_rank_learned", "eps_batch_max")
    panels = [p for p in candidates if p in rows]
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
            rank = metric.startswith("effective_rank")
            axis.set(ylabel=metric + (f" (W{layer})" if rank else ""), title=setting * (row == 0))
            if not rank:
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xlabel("epoch")
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def hidden_layers(frame: pd.DataFrame) -> pd.DataFrame:
    """Hidden-layer rows only (metrics tables or histories): Paper B ranks hidden layers; the
    output layer W_L is reported apart."""
    return frame[frame["layer"] < frame["depth"]]


def _accuracy_metric(frame: pd.DataFrame) -> str:
    return "test_acc" if frame["test_acc"].notna().any() else "test_loss"


def _layer_panels(rows: pd.DataFrame) -> list[tuple[str, int]]:
    """(setting, layer) pairs present, settings in numeric order: one panel each."""
    return [
        (setting, int(layer))
        for setting in ordered_settings(rows)
        for layer in sorted(rows.loc[rows["setting"] == setting, "layer"].unique())
    ]


def _grid_medians(rows: pd.DataFrame, keys: list[str], metric: str) -> pd.Series:
    ok = rows[(rows["status"] == "ok") & np.isfinite(rows[metric])]
    return ok.groupby(keys)[metric].median()


def grid_figure(table: pd.DataFrame, path: Path, sweep: str, hue: str):
    """Hidden-layer ranks and test accuracy against `sweep`, one line per value of `hue`.

    Columns are (setting, hidden layer); medians over seeds of members that trained normally, so
    a collapsed network's rank 0 never draws a line down (its crosses show where it was)."""
    rows = add_setting(hidden_layers(table), sweep, hue)
    panels = _layer_panels(rows)
    grid = sorted(rows[sweep].unique())
    rows = rows.assign(position=rows[sweep].map({value: i for i, value in enumerate(grid)}))
    metrics = ("rank_galanti", "effective_rank", "effective_rank_learned", _accuracy_metric(rows))
    metrics = tuple(metric for metric in metrics if metric in rows)
    colors = _colors(rows[hue])
    figure, axes = plt.subplots(
        len(metrics),
        len(panels),
        squeeze=False,
        sharex=True,
        figsize=(3.4 * len(panels), 2.4 * len(metrics)),
    )
    for col, (setting, layer) in enumerate(panels):
        here = rows[(rows["setting"] == setting) & (rows["layer"] == layer)]
        excluded = here[here["status"] != "ok"]
        for row, metric in enumerate(metrics):
            axis = axes[row][col]
            median = _grid_medians(here, [hue, "position"], metric)
            for value in sorted(here[hue].unique()):
                if value in median.index.get_level_values(0):
                    line = median.loc[value]
                    axis.plot(
                        line.index,
                        line.values,
                        color=colors[value],
                        marker="o",
                        markersize=3,
                        label=f"{AXIS_LABEL[hue]}={_label(hue, value)}",
                    )
            _mark_excluded(axis, excluded["position"], excluded[metric])
            suffix = f" (W{layer})" if metric in RANK_PANELS else ""
            axis.set(ylabel=metric + suffix, title=f"{setting}, layer {layer}" if row == 0 else "")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xticks(range(len(grid)), [_label(sweep, v) for v in grid], rotation=45)
        axes[-1][col].set_xlabel(sweep)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def heatmap_figure(table: pd.DataFrame, path: Path, sweep: str, hue: str):
    """Median rank_galanti and effective_rank (a row each per setting) of every hidden layer (a
    column each), and the test accuracy (last column), over the (hue, sweep) grid.

    One colour scale per metric. Cells without a member that trained normally are left blank and
    marked "excl."."""
    rows = add_setting(hidden_layers(table), sweep, hue)
    accuracy = _accuracy_metric(rows)
    settings, layers = ordered_settings(rows), sorted(rows["layer"].unique())
    metrics = ("rank_galanti", "effective_rank")
    shape = (len(settings) * len(metrics), len(layers) + 1)
    figure, axes = plt.subplots(*shape, squeeze=False, figsize=(3.3 * shape[1], 2.8 * shape[0]))
    limits = {}
    for metric in (*metrics, accuracy):
        medians = _grid_medians(rows, ["setting", "layer", hue, sweep], metric)
        limits[metric] = (medians.min(), medians.max()) if len(medians) else (0, 1)
    for block, setting in enumerate(settings):
        for offset, metric in enumerate(metrics):
            row = block * len(metrics) + offset
            for col, layer in enumerate(layers):
                here = rows[(rows["setting"] == setting) & (rows["layer"] == layer)]
                title = f"{setting}\n{metric} (W{layer})"
                _heatmap(axes[row][col], here, metric, sweep, hue, title, limits[metric])
            if offset == 0:
                here = rows[(rows["setting"] == setting) & (rows["layer"] == layers[0])]
                title = f"{setting}\n{accuracy}"
                _heatmap(axes[row][-1], here, accuracy, sweep, hue, title, limits[accuracy])
            else:
                axes[row][-1].axis("off")
    figure.tight_layout()
    _save(figure, path)


def _heatmap(
    axis, here: pd.DataFrame, metric: str, sweep: str, hue: str, title: str, limits: tuple
) -> None:
    cells = _grid_medians(here, [hue, sweep], metric).unstack(sweep)
    cells = cells.reindex(index=sorted(here[hue].unique()), columns=sorted(here[sweep].unique()))
    sns.heatmap(
        cells,
        ax=axis,
        annot=True,
        fmt=".3g",
        cmap="viridis",
        vmin=limits[0],
        vmax=limits[1],
        cbar=False,
        annot_kws={"fontsize": 7},
        linewidths=0.5,
        linecolor="white",
    )
    for i, j in zip(*np.where(cells.isna().to_numpy()), strict=True):
        axis.text(j + 0.5, i + 0.5, "excl.", ha="center", va="center", fontsize=7)
    axis.set_xticklabels([_label(sweep, v) for v in cells.columns], rotation=45)
    axis.set_yticklabels([_label(hue, v) for v in cells.index], rotation=0)
    axis.set(title=title, xlabel=sweep, ylabel=hue)


def depth_figure(table: pd.DataFrame, path: Path, sweep: str = "depth", hue: str | None = None):
    """Rank of every hidden layer against its index, one line per network depth."""
    rows = add_setting(hidden_layers(table), "depth", "weight_decay")
    settings = ordered_settings(rows)
    metrics = ("rank_galanti", "effective_rank", "stable_rank")
    colors = _colors(rows["depth"])
    wds = sorted(rows["weight_decay"].unique())
    styles = dict(zip(wds, ("-", "--", ":", "-.") * len(wds), strict=False))
    figure, axes = plt.subplots(
        len(metrics),
        len(settings),
        squeeze=False,
        figsize=(4.2 * len(settings), 2.5 * len(metrics)),
    )
    for col, setting in enumerate(settings):
        here = rows[rows["setting"] == setting]
        for row, metric in enumerate(metrics):
            axis = axes[row][col]
            median = _grid_medians(here, ["depth", "weight_decay", "layer"], metric)
            for (depth, wd), line in median.groupby(level=[0, 1]):
                axis.plot(
                    line.index.get_level_values("layer"),
                    line.values,
                    color=colors[depth],
                    linestyle=styles.get(wd, "-"),
                    marker="o",
                    markersize=3,
                    label=f"L={depth}, wd={format_number(wd)}",
                )
            axis.set(ylabel=metric, title=setting if row == 0 else "")
            axis.grid(alpha=0.3)
        axes[-1][col].set_xlabel("hidden layer l (W_l)")
        axes[-1][col].xaxis.get_major_locator().set_params(integer=True)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def bound_figure(table: pd.DataFrame, path: Path, sweep: str, hue: str | None = None):
    """Measured #{sigma_i/||W||_F > eps} of hidden layers against Paper B's bound (claim B7).

    Points below the diagonal respect the bound; the bound says something only left of the
    dotted line (the layer's min shape), since no matrix has more singular values than that.
    Excluded members (collapsed, diverged) are grey crosses: where the bound is small, they show
    whether training still works there."""
    rows = hidden_layers(table)
    rows = rows[rows["weight_decay"] > 0]
    ok, excluded = rows[rows["status"] == "ok"], rows[rows["status"] != "ok"]
    colors = _colors(rows[sweep]) if len(rows) else {}
    eps_values = [c.removeprefix("galanti_bound_") for c in table if c.startswith("galanti_bound_")]
    figure, axes = plt.subplots(
        1, len(eps_values), squeeze=False, figsize=(3.8 * len(eps_values), 3.4)
    )
    width = rows[["rows", "cols"]].min(axis=1).max() if len(rows) else 1
    for axis, eps in zip(axes[0], eps_values, strict=True):
        bound, measured = f"galanti_bound_{eps}", f"sv_above_{eps}"
        for value, group in ok.groupby(sweep):
            axis.scatter(
                group[bound],
                group[measured],
                color=colors[value],
                s=12,
                alpha=0.8,
                label=f"{AXIS_LABEL[sweep]}={_label(sweep, value)}",
            )
        _mark_excluded(axis, excluded[bound], excluded[measured])
        if len(rows):
            low = max(rows[bound].min() / 2, 0.5)
            high = max(rows[bound].max(), width) * 2
            axis.plot([low, high], [low, high], color="0.3", linewidth=1, label="measured = bound")
            axis.axvline(width, color="0.5", linestyle=":", label="min shape (trivial beyond)")
        axis.set(
            xscale="log",
            yscale="symlog",
            ylim=(0, width * 1.5),
            xlabel=f"galanti_bound_{eps} = B·log(2/ε)/(lr·wd)",
            ylabel=f"sv_above_{eps} (hidden layers)",
            title=f"ε = {eps}",
        )
        axis.grid(alpha=0.3)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def norm_ratio_figure(history: pd.DataFrame, path: Path, sweep: str, hue: str | None = None):
    """||W||_F at the previous logged epoch over ||W||_F now, per hidden layer (claim B8):
    a row of panels per setting, a column per layer, one line per swept value."""
    rows = add_setting(hidden_layers(history), sweep)
    rows = rows[~rows["diverged"].astype(bool)].sort_values("epoch")
    keys = ["group", "member", "layer"]
    rows["norm_ratio"] = rows.groupby(keys)["fro_norm"].shift(1) / rows["fro_norm"]
    rows = rows.dropna(subset=["norm_ratio"])
    settings, layers = ordered_settings(rows), sorted(rows["layer"].unique())
    colors = _colors(rows[sweep])
    figure, axes = plt.subplots(
        len(settings),
        len(layers),
        squeeze=False,
        sharex=True,
        figsize=(3.2 * len(layers), 2.5 * len(settings)),
    )
    for row, setting in enumerate(settings):
        for col, layer in enumerate(layers):
            axis = axes[row][col]
            here = rows[(rows["setting"] == setting) & (rows["layer"] == layer)]
            medians = here.groupby([sweep, "epoch"])["norm_ratio"].median()
            for value, curve in medians.groupby(level=0):
                axis.plot(
                    curve.index.get_level_values("epoch"),
                    curve.values,
                    color=colors[value],
                    marker=".",
                    label=f"{AXIS_LABEL[sweep]}={_label(sweep, value)}",
                )
            axis.axhline(1, color="0.4", linestyle=":", linewidth=1)
            axis.set(title=f"{setting}, W{layer}", ylabel="norm_ratio" if col == 0 else "")
            axis.grid(alpha=0.3)
        axes[-1][0].set_xlabel("epoch")
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


BOUND_LINES = ("bound_grs", "bound_spectral", "bound_paramcount_full", "bound_paramcount_rankr")


def generalization_figure(table: pd.DataFrame, path: Path, sweep: str, hue: str | None = None):
    """Measured gap and the bounds against the swept value, log scale, medians over the seeds of
    members that trained normally; the dotted line is the trivial value (1 for an error gap, the
    constant predictor's loss for a regressor). Non-positive gaps cannot be drawn on a log scale
    and are left out (the report's table has them)."""
    rows = add_setting(table[(table["layer"] == 1) & (table["status"] == "ok")], sweep)
    settings = ordered_settings(rows)
    grid = sorted(rows[sweep].unique())
    rows = rows.assign(position=rows[sweep].map({value: i for i, value in enumerate(grid)}))
    figure, axes = plt.subplots(
        1, len(settings), squeeze=False, figsize=(4.2 * len(settings), 3.4), sharex=True
    )
    styles = dict(zip(("gap", *BOUND_LINES), ("-", "--", "-.", ":", (0, (1, 3))), strict=True))
    colors = _colors(("gap", *BOUND_LINES))
    for axis, setting in zip(axes[0], settings, strict=True):
        here = rows[rows["setting"] == setting]
        for name in ("gap", *BOUND_LINES):
            if name not in here:
                continue
            median = here.groupby("position")[name].median()
            median = median[np.isfinite(median) & (median > 0)]
            if len(median):
                axis.plot(
                    median.index,
                    median.values,
                    color="#D55E00" if name == "gap" else colors[name],
                    linestyle=styles[name],
                    marker="o",
                    markersize=3,
                    label=name,
                )
        trivial = 1.0 if (here["loss"] == "ce").all() else here["const_loss"].median()
        axis.axhline(trivial, color="0.4", linestyle=":", linewidth=1, label="trivial value")
        axis.set(yscale="log", title=setting, ylabel="gap and bounds (median over seeds)")
        axis.set_xticks(range(len(grid)), [_label(sweep, v) for v in grid], rotation=45)
        axis.set_xlabel(sweep)
        axis.grid(alpha=0.3)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def rank_gap_figure(table: pd.DataFrame, path: Path, sweep: str, hue: str | None = None):
    """Generalization gap against the effective rank of W1, one point per member that trained
    normally, coloured by weight decay: does lower rank go with a smaller gap?"""
    rows = add_setting(table[(table["layer"] == 1) & (table["status"] == "ok")], "weight_decay")
    settings = ordered_settings(rows)
    colors = _colors(rows["weight_decay"])
    figure, axes = plt.subplots(1, len(settings), squeeze=False, figsize=(4.0 * len(settings), 3.3))
    for axis, setting in zip(axes[0], settings, strict=True):
        here = rows[rows["setting"] == setting]
        for value, group in here.groupby("weight_decay"):
            axis.scatter(
                group["effective_rank"],
                group["gap"],
                color=colors[value],
                s=16,
                label=f"wd={_label('weight_decay', value)}",
            )
        axis.set(title=setting, xlabel="effective_rank (W1)", ylabel="gap")
        axis.grid(alpha=0.3)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


TABLE_FIGURES = {
    "rank": lambda table, path, sweep, hue: metric_figure(table, path, RANK_PANELS, sweep),
    "paper_a": lambda table, path, sweep, hue: metric_figure(table, path, PAPER_A_PANELS, sweep),
    "grid": grid_figure,
    "heatmap": heatmap_figure,
    "depth": depth_figure,
    "bound": bound_figure,
    "generalization": generalization_figure,
    "rank_gap": rank_gap_figure,
}
HISTORY_FIGURES = {
    "dynamics": lambda history, path, sweep, hue: dynamics_figure(history, path, sweep),
    "norm_ratio": norm_ratio_figure,
}


def draw_figure(
    kind: str,
    table: pd.DataFrame,
    history: pd.DataFrame,
    spectra: dict[str, dict[str, np.ndarray]],
    path: Path,
    sweep: str = "weight_decay",
    hue: str = "batch_size",
) -> None:
    """One figure of one experiment; `kind` is one of plan.FIGURE_KINDS."""
    sns.set_theme(style="ticks", context="paper")
    if kind == "spectra":
        spectra_figure(table, spectra, path, sweep)
    elif kind in TABLE_FIGURES:
        TABLE_FIGURES[kind](table, path, sweep, hue)
    elif kind in HISTORY_FIGURES:
        HISTORY_FIGURES[kind](history, path, sweep, hue)
    else:
        raise ValueError(f"unknown figure {kind!r}; allowed: {', '.join(FIGURE_KINDS)}")
