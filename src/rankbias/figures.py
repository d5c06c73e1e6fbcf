"""Seaborn figures of one experiment against its swept axis (weight decay unless configured).

Paper A's figures: spectra of W1 per swept value, rank metrics and Paper A's quantities against the
swept value, and training dynamics. Paper B's: hidden-layer ranks against the swept value per
`hue` value (grid) and over the (hue, sweep) grid (heatmap), rank per layer against depth, the
measured rank against Theorem 3.3's bound, and the norm ratio over training; for both, test
error against weight decay. An experiment lists the figures it draws (`figures` in the config);
`draw_figure` makes one. Panels are one per *setting*: data set plus every other axis that varies
inside the experiment, so no panel silently mixes settings. Excluded members (diverged, collapsed)
are drawn as crosses and left out of medians.

Every panel that shows a metric a verdict rule reads draws the rule (rankbias.thresholds): its
threshold as a dashed green line labelled with the claim ids, the claim's passing side shaded, a
trend rule's smallest spread beside the spread the panel shows. Rank axes start at zero, so a
0.3 % difference does not look like a trend. Text stays text in the SVG (searchable, read aloud);
each SVG carries a <title> and a <desc> saying what it shows, which the report uses as alt text.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cycler import cycler  # noqa: E402

from rankbias.plan import FIGURE_KINDS, format_number  # noqa: E402
from rankbias.registry import CONDITION, CONDITION_OPS  # noqa: E402
from rankbias.storage import atomic_path  # noqa: E402
from rankbias.summaries import (  # noqa: E402
    add_setting,
    hidden_layers,
    ordered_settings,
    value_text,
    with_derived,
)
from rankbias.thresholds import RuleLine, lines_for  # noqa: E402
from rankbias.vocabulary import AXIS_LABEL  # noqa: E402

# seaborn's set_theme(style="ticks", context="paper") as matplotlib settings, so a figure job need
# not import seaborn (and scipy) to get it; tests/test_figures.py checks that they still agree.
DEEP = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")  # seaborn's "deep" palette
DEEP += ("#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
THEME = {
    "axes.axisbelow": True,
    "axes.edgecolor": ".15",
    "axes.labelcolor": ".15",
    "axes.labelsize": 9.6,
    "axes.linewidth": 1.0,
    "axes.prop_cycle": cycler("color", DEEP),
    "axes.titlesize": 9.6,
    "font.sans-serif": [
        "Arial",
        "DejaVu Sans",
        "Liberation Sans",
        "Bitstream Vera Sans",
        "sans-serif",
    ],
    "font.size": 9.6,
    "grid.color": ".8",
    "legend.fontsize": 8.8,
    "legend.title_fontsize": 9.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4.8,
    "lines.solid_capstyle": "round",
    "patch.edgecolor": "w",
    "patch.force_edgecolor": True,
    "patch.linewidth": 0.8,
    "text.color": ".15",
    **{f"{axis}.color": ".15" for axis in ("xtick", "ytick")},
    **{f"{axis}.labelsize": 8.8 for axis in ("xtick", "ytick")},
    **{f"{axis}.major.size": 4.8 for axis in ("xtick", "ytick")},
    **{f"{axis}.major.width": 1.0 for axis in ("xtick", "ytick")},
    **{f"{axis}.minor.size": 3.2 for axis in ("xtick", "ytick")},
    **{f"{axis}.minor.width": 0.8 for axis in ("xtick", "ytick")},
}

# W's rank beside that of its learned part W − s_T·W_0 (a fading init also lowers W's rank)
RANK_PANELS = (
    "rank_galanti",
    "rank_cut",
    "effective_rank",
    "effective_rank_learned",
    "stable_rank",
    "residual_1",
    "residual_2",
    "residual_2_learned",
)
PAPER_A_PANELS = (
    "eps_batch_max",
    "eps_rel",
    "thm26_ratio",
    "units_dead",
    "units_linear",
    "units_switching",
    "units_zero_input",
)
LOG_SCALE = {"eps_batch_max", "eps_rel", "thm26_ratio"}
JITTER_SEED = 0  # the same tables draw the same figure, jitter included
PALETTE = "viridis"  # ordered and colour-blind safe
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")  # tell neighbouring colours apart
RULE_COLOR = "#007a5a"  # Okabe-Ito bluish green, darkened: rule lines and their labels
PASS_FILL = "#009E73"  # the claim's passing side, shaded lightly
# y axes that start at zero: counts, ranks, residuals and shares, where "no effect" is judged
ZERO_BASED_PREFIXES = ("rank_", "effective_rank", "stable_rank", "residual_", "units_", "sv_above")


def figure_description(figure: plt.Figure) -> str:
    """What the figure shows, from its own axes: panels, what they plot against what, and the
    rule lines drawn (the report's alt text; not the caption again)."""
    panels = [axis for axis in figure.axes if axis.get_visible() and axis.axison]
    plotted = list(dict.fromkeys(axis.get_ylabel() for axis in panels if axis.get_ylabel()))
    against = list(dict.fromkeys(axis.get_xlabel() for axis in panels if axis.get_xlabel()))
    titles = list(dict.fromkeys(t.replace("\n", " ") for a in panels if (t := a.get_title())))
    rules = dict.fromkeys(
        _rule_words(gid)
        for axis in panels
        for artist in (*axis.lines, *axis.texts, *axis.patches, *axis.collections)
        if (gid := artist.get_gid() or "").startswith(("rule-", "regime-"))
    )
    text = f"{len(panels)} panel{'s' * (len(panels) != 1)}"
    if titles:
        text += " (" + "; ".join(titles[:6]) + ("; ..." if len(titles) > 6 else "") + ")"
    if plotted:
        text += ": " + ", ".join(plotted[:10]) + (", ..." if len(plotted) > 10 else "")
        text += f" against {' / '.join(against)}" if against else ""
    if rules:
        return f"{text}. Rule lines drawn: {'; '.join(rules)}."
    return f"{text}. No verdict rule reads it."


def _rule_words(gid: str) -> str:
    """rule-A1-residual_2-p3 -> 'A1 on residual_2'; a regime line or a spread note says so."""
    kind, subject, rest = gid.split("-", 2)
    rest = re.sub(r"-p\d+$", "", rest)
    for suffix, words in (("-spread", " (spread)"), ("-band", " (band)")):
        if rest.endswith(suffix):
            rest = rest.removesuffix(suffix) + words
    return f"{subject} on {rest}" + (" (regime)" if kind == "regime" else "")


GEOMETRY = re.compile(r'\b(d|x|y|x1|x2|y1|y2|width|height|transform|points|viewBox)="([^"]*)"')
DECIMALS = re.compile(r"-?\d+\.\d{2,}")
# matplotlib's own ids (never referenced): our rule gids and the clip paths and markers stay
AUTO_ID = re.compile(
    r' id="(?:figure|axes|patch|line2d|text|xtick|ytick|matplotlib\.axis|legend|PathCollection|'
    r'PolyCollection|LineCollection|FillBetweenPolyCollection|QuadMesh)_\d+"'
)
FONT = re.compile(r"font-family: [^;\"]*;? ?")


def compact_svg(text: str) -> str:
    """Matplotlib's SVG, about half the size without a visible change: geometry to 0.1 pt, no
    indentation, no RDF metadata, no unreferenced ids or empty groups, one font rule for all
    text. Text content (the numbers of a heat map) is kept as it is."""
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r">\s+<", "><", text)
    text = AUTO_ID.sub("", text)
    text = re.sub(r' transform="rotate\(-0 [^"]*\)"', "", FONT.sub("", text))  # no-op rotations

    def shorten(match: re.Match) -> str:
        value = re.sub(r"\s+", " ", match[2]).strip()
        value = DECIMALS.sub(lambda m: f"{float(m.group()):.1f}".removesuffix(".0"), value)
        return f'{match[1]}="{value}"'

    text = GEOMETRY.sub(shorten, text)
    single = re.compile(r"<g>(<[^<>]*/>)</g>")
    while single.search(text):
        text = single.sub(r"\1", text)
    return text.replace(
        '<style type="text/css">',
        "<style type=\"text/css\">text{font-family:'DejaVu Sans',Arial,sans-serif}",
        1,
    )


def _save(figure: plt.Figure, path: Path) -> None:
    """Compact SVG with text as text (not glyph paths) and a <title>/<desc> (what the figure
    shows) for screen readers and the report's alt text."""
    plt.rcParams["svg.hashsalt"] = f"{path.parent.name}/{path.name}"  # ids distinct per figure
    plt.rcParams["svg.fonttype"] = "none"
    description = figure_description(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None})
        text = compact_svg(Path(tmp).read_text())
        head = f"<title>{escape(path.stem)}</title><desc>{escape(description)}</desc>"
        start = text.index(">", text.index("<svg")) + 1
        Path(tmp).write_text(text[:start] + head + text[start:])
    plt.close(figure)


def _colors(values) -> dict:
    """Ordered colours from the dark 85 % of viridis (its last yellows are unreadable on white),
    spaced by rank, not value, so wd = 0, 1e-4 and 1e-3 differ as much as 0.03 and 0.1."""
    ordered = sorted(set(values))
    colormap = matplotlib.colormaps[PALETTE]
    positions = np.linspace(0.0, 0.85, max(len(ordered), 2))
    return {value: colormap(position) for value, position in zip(ordered, positions, strict=False)}


def _markers(values) -> dict:
    """A marker per value, in the colours' order: neighbours differ in shape too."""
    ordered = sorted(set(values))
    return {value: MARKERS[i % len(MARKERS)] for i, value in enumerate(ordered)}


# ---------------------------------------------------------------- the rules on the panels


def _zero_based(metric: str) -> bool:
    return metric.startswith(ZERO_BASED_PREFIXES)


def _matches(rows: pd.DataFrame, where: dict) -> pd.DataFrame:
    """The rows a rule's `where` keeps (the rule's own selection, for its spread)."""
    for column, condition in where.items():
        if column not in rows:
            continue
        match = CONDITION.match(condition) if isinstance(condition, str) else None
        if match:
            rows = rows[CONDITION_OPS[match.group(1)](rows[column], float(match.group(2)))]
        else:
            allowed = condition if isinstance(condition, list) else [condition]
            rows = rows[rows[column].isin(allowed)]
    return rows


def _y_range(axis, metric: str, values: list[float]) -> None:
    """Widen the y range to show every rule line (and zero, for rank-like metrics)."""
    low, high = axis.get_ylim()
    wanted = [v for v in values if np.isfinite(v)] + ([0.0] if _zero_based(metric) else [])
    if axis.get_yscale() == "log":
        wanted = [v for v in wanted if v > 0]
    if not wanted:
        return
    low, high = min(low, *wanted), max(high, *wanted)
    pad = 0.04 * (high - low) if axis.get_yscale() != "log" else 0.0
    low = 0.0 if _zero_based(metric) and low >= 0 else low - pad
    axis.set_ylim(low, high + pad if axis.get_yscale() != "log" else high * 1.5)


def draw_rules(axis, metric: str, lines: list[RuleLine], panel: int = 0) -> None:
    """The level rules on `metric`: a dashed line per threshold, labelled with its rules
    ("A1 ≤ 0.05 · C3 > 0.05"), and the side where the first counted claim passes shaded. The y
    range grows to include the lines, and zero for ranks, counts and shares."""
    here = lines_for(lines, metric)
    _y_range(axis, metric, [line.value for line in here])
    by_value: dict[float, list[RuleLine]] = {}
    for line in here:
        by_value.setdefault(line.value, []).append(line)
    low, high = axis.get_ylim()
    for value, group in by_value.items():
        for line in group:
            drawn = axis.axhline(value, color=RULE_COLOR, linestyle="--", linewidth=1.1)
            drawn.set_gid(f"{line.gid}-p{panel}")
        label = " · ".join(
            f"{_subjects_of(group, comparison)} {comparison} {value:g}"
            for comparison in dict.fromkeys(g.comparison for g in group)
        )
        axis.text(
            0.99,
            value,
            label,
            transform=axis.get_yaxis_transform(),
            ha="right",
            va="bottom",
            fontsize=6.5,
            color=RULE_COLOR,
        )
    _shade_pass(axis, here, low, high)
    axis.set_ylim(low, high)


def _subjects_of(group: list[RuleLine], comparison: str) -> str:
    names = (g.subject + ("" if g.counted else " (context)") for g in group)
    kept = [n for n, g in zip(names, group, strict=True) if g.comparison == comparison]
    return ", ".join(dict.fromkeys(kept))


def _shade_pass(axis, here: list[RuleLine], low: float, high: float) -> None:
    """Shade where the panel's first claim passes (the intersection of its lines: a band for
    B8); a concern's side only when no claim reads the panel. One shade per panel: two claims
    with opposite sides (A1 ≤ 0.05 with wd, A2 > 0.05 without) would shade everything."""
    claims = [line for line in here if line.counted and not line.subject.startswith("C")]
    shaded = claims or [line for line in here if line.counted]
    if not shaded:
        return
    start, stop = low, high
    for line in (line for line in shaded if line.subject == shaded[0].subject):
        if line.comparison.startswith(">"):
            start = max(start, line.value)
        else:
            stop = min(stop, line.value)
    if start < stop:
        axis.axhspan(start, stop, color=PASS_FILL, alpha=0.07, linewidth=0)


def _spreads(medians: pd.Series, along: str) -> list[float]:
    """(max − min)/max of the medians along one axis, for each combination of the others."""
    levels = [name for name in medians.index.names if name != along]
    groups = medians.groupby(level=levels) if levels else [(None, medians)]
    spreads = []
    for _, line in groups:
        values = line.to_numpy(dtype=float)
        if len(values) >= 2 and np.nanmax(values) > 0:
            spreads.append(float((np.nanmax(values) - np.nanmin(values)) / np.nanmax(values)))
    return spreads


def note_trends(
    axis, metric: str, lines: list[RuleLine], rows: pd.DataFrame, axes: list[str], panel: int = 0
) -> None:
    """Each trend rule on `metric` whose axis varies in this panel: the spread its medians move
    by (over the rule's own rows, e.g. wd > 0 only) beside the smallest spread the rule needs."""
    notes = []
    for line in lines_for(lines, metric, "trend"):
        axis_name = line.axis
        if axis_name not in axes:
            continue
        kept = _matches(rows[(rows["status"] == "ok") & np.isfinite(rows[metric])], line.where)
        if kept[axis_name].nunique() < 2:
            continue
        medians = kept.groupby(axes)[metric].median()
        spreads = _spreads(medians, axis_name)
        if not spreads:
            continue
        moved = (
            f"{min(spreads):.1%}" if len(spreads) == 1 else f"{min(spreads):.1%}–{max(spreads):.1%}"
        )
        direction = "falls" if line.comparison.startswith("<") else "rises"
        notes.append(
            (
                line,
                f"{line.subject} needs: {direction} with {AXIS_LABEL.get(axis_name, axis_name)} "
                f"by ≥ {line.value:.0%}; the medians move {moved}",
            )
        )
    for row, (line, text) in enumerate(notes):
        note = axis.text(
            0.01,
            0.02 + 0.09 * row,
            text,
            transform=axis.transAxes,
            fontsize=6.5,
            color=RULE_COLOR,
            va="bottom",
        )
        note.set_gid(f"{line.gid}-spread-p{panel}")


def draw_effect(
    axis,
    metric: str,
    lines: list[RuleLine],
    baseline: float,
    color,
    panel: int,
    x_range: tuple[float, float],
) -> None:
    """A wd_effect rule (B1): the line threshold × the median at wd = 0, across the wd > 0 side."""
    for line in lines_for(lines, metric, "effect"):
        if not np.isfinite(baseline):
            continue
        drawn = axis.hlines(
            line.value * baseline, *x_range, color=color, linestyle=":", linewidth=1.2
        )
        drawn.set_gid(f"{line.gid}-p{panel}")
        axis.text(
            x_range[1],
            line.value * baseline,
            f"{line.subject}: ≤ {line.value:g} × wd = 0",
            ha="right",
            va="bottom",
            fontsize=6.5,
            color=color,
        )


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
                label=f"{AXIS_LABEL[sweep]}={value_text(value)}",
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


def _seeds_and_median(axis, rows: pd.DataFrame, metric: str) -> pd.Series:
    """Each seed as a point at its grid position, the median over seeds as a line; returns the
    medians by position."""
    import seaborn as sns  # here, not at the top: importing it (and scipy) costs a figure job 1 s

    sns.stripplot(
        data=rows,
        x="position",
        y=metric,
        native_scale=True,
        ax=axis,
        color="#0072B2",
        size=4,
        jitter=0.12,
        alpha=0.7,
    )
    median = rows.groupby("position")[metric].median()
    axis.plot(
        median.index,
        median.values,
        color="#D55E00",
        marker="D",
        markersize=4,
        label="median over seeds",
    )
    return median


def metric_figure(
    table: pd.DataFrame,
    path: Path,
    metrics: tuple[str, ...],
    sweep: str = "weight_decay",
    layer: int = 1,
    lines: list[RuleLine] = (),
):
    """Metrics of one layer against the swept value: seeds as points, medians as lines, and the
    rules that read each metric (a metric the table lacks, e.g. one written by an older version,
    is left out)."""
    table = with_derived(table)
    metrics = tuple(metric for metric in metrics if metric in table and table[metric].notna().any())
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
            axis, panel = axes[row][col], row * len(settings) + col
            finite = ok[np.isfinite(ok[metric])]
            median = _seeds_and_median(axis, finite, metric)
            _mark_excluded(axis, excluded["position"], excluded[metric])
            if metric in LOG_SCALE and (finite[metric] > 0).any():
                axis.set_yscale("log")
            suffix = f" (W{layer})" if metric in RANK_PANELS else ""
            axis.set(ylabel=metric + suffix, xlabel="", title=setting if row == 0 else "")
            axis.grid(alpha=0.3)
            draw_rules(axis, metric, lines, panel)
            note_trends(axis, metric, lines, here, [sweep], panel)
            if sweep == "weight_decay" and 0 in grid and len(grid) > 1:
                draw_effect(
                    axis,
                    metric,
                    lines,
                    median.get(0, np.nan),
                    "#D55E00",
                    panel,
                    (0.7, len(grid) - 0.7),
                )
        axes[-1][col].set_xticks(range(len(grid)), [value_text(v) for v in grid], rotation=45)
        axes[-1][col].set_xlabel(sweep)
    axes[0][0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    _save(figure, path)


def dynamics_figure(
    history: pd.DataFrame,
    path: Path,
    sweep: str = "weight_decay",
    layer: int = 1,
    lines: list[RuleLine] = (),
):
    """Train loss, effective rank of one layer and eps_batch over training, median over seeds."""
    rows = add_setting(history[history["layer"] == layer], sweep)
    settings = ordered_settings(rows)
    colors, markers = _colors(rows[sweep]), _markers(rows[sweep])
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
                    marker=markers[value],
                    markersize=3.5,
                    label=f"{AXIS_LABEL[sweep]}={value_text(value)}",
                )
            rank = metric.startswith("effective_rank")
            axis.set(ylabel=metric + (f" (W{layer})" if rank else ""), title=setting * (row == 0))
            if not rank:
                axis.set_yscale("log")
            axis.grid(alpha=0.3)
            draw_rules(axis, metric, lines, row * len(settings) + col)
        axes[-1][col].set_xlabel("epoch")
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


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


def grid_figure(table: pd.DataFrame, path: Path, sweep: str, hue: str, lines: list[RuleLine] = ()):
    """Hidden-layer ranks and test accuracy against `sweep`, one line per value of `hue`.

    Columns are (setting, hidden layer); medians over seeds of members that trained normally, so
    a collapsed network's rank 0 never draws a line down (its crosses show where it was)."""
    rows = add_setting(hidden_layers(table), sweep, hue)
    panels = _layer_panels(rows)
    grid = sorted(rows[sweep].unique())
    rows = rows.assign(position=rows[sweep].map({value: i for i, value in enumerate(grid)}))
    metrics = ("rank_galanti", "effective_rank", "effective_rank_learned", _accuracy_metric(rows))
    metrics = tuple(metric for metric in metrics if metric in rows)
    colors, markers = _colors(rows[hue]), _markers(rows[hue])
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
            axis, panel = axes[row][col], row * len(panels) + col
            median = _grid_medians(here, [hue, "position"], metric)
            for value in sorted(here[hue].unique()):
                if value in median.index.get_level_values(0):
                    line = median.loc[value]
                    axis.plot(
                        line.index,
                        line.values,
                        color=colors[value],
                        marker=markers[value],
                        markersize=3.5,
                        label=f"{AXIS_LABEL[hue]}={value_text(value)}",
                    )
                    if sweep == "weight_decay" and 0 in grid and len(grid) > 1:
                        draw_effect(
                            axis,
                            metric,
                            lines,
                            line.get(grid.index(0), np.nan),
                            colors[value],
                            panel,
                            (0.7, len(grid) - 0.7),
                        )
            _mark_excluded(axis, excluded["position"], excluded[metric])
            suffix = f" (W{layer})" if metric in RANK_PANELS else ""
            axis.set(ylabel=metric + suffix, title=f"{setting}, layer {layer}" if row == 0 else "")
            axis.grid(alpha=0.3)
            draw_rules(axis, metric, lines, panel)
            note_trends(axis, metric, lines, here, [hue, sweep], panel)
        axes[-1][col].set_xticks(range(len(grid)), [value_text(v) for v in grid], rotation=45)
        axes[-1][col].set_xlabel(sweep)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def heatmap_figure(
    table: pd.DataFrame, path: Path, sweep: str, hue: str, lines: list[RuleLine] = ()
):
    """Median rank_galanti and effective_rank (a row each per setting) of every hidden layer (a
    column each), and the test accuracy (last column), over the (hue, sweep) grid.

    One colour scale per metric, from 0 to the layer's largest possible rank (accuracy: 0 to 1;
    a loss: 0 to its largest median), so ranks 120 to 128 of a 128-wide layer look alike, as
    they are. Cells without a member that trained normally are left blank and marked "excl."."""
    rows = add_setting(hidden_layers(table), sweep, hue)
    accuracy = _accuracy_metric(rows)
    settings, layers = ordered_settings(rows), sorted(rows["layer"].unique())
    metrics = ("rank_galanti", "effective_rank")
    shape = (len(settings) * len(metrics), len(layers) + 1)
    figure, axes = plt.subplots(*shape, squeeze=False, figsize=(3.3 * shape[1], 2.8 * shape[0]))
    full_rank = float(rows[["rows", "cols"]].min(axis=1).max()) if len(rows) else 1.0
    limits = {metric: (0.0, full_rank) for metric in metrics}
    if accuracy == "test_acc":
        limits[accuracy] = (0.0, 1.0)
    else:
        losses = _grid_medians(rows, ["setting", "layer", hue, sweep], accuracy)
        limits[accuracy] = (0.0, float(losses.max()) if len(losses) else 1.0)
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
    import seaborn as sns

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
    axis.set_xticklabels([value_text(v) for v in cells.columns], rotation=45)
    axis.set_yticklabels([value_text(v) for v in cells.index], rotation=0)
    axis.set(title=f"{title} (colour {limits[0]:g}–{limits[1]:.3g})", xlabel=sweep, ylabel=hue)


def depth_figure(
    table: pd.DataFrame,
    path: Path,
    sweep: str = "depth",
    hue: str | None = None,
    lines: list[RuleLine] = (),
):
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
            draw_rules(axis, metric, lines, row * len(settings) + col)
        axes[-1][col].set_xlabel("hidden layer l (W_l)")
        axes[-1][col].xaxis.get_major_locator().set_params(integer=True)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def bound_figure(
    table: pd.DataFrame,
    path: Path,
    sweep: str,
    hue: str | None = None,
    lines: list[RuleLine] = (),
):
    """The measured count the B7 rule reads (its `metric`, sv_above_ε unless the registry says
    otherwise) of hidden layers against Paper B's bound, one panel per ε.

    Points on or below the diagonal (the rule: measured / bound ≤ 1) respect the bound; the bound
    says something only left of the dotted line (the layer's smaller side): right of it the case
    is undecided (trivial bound). Excluded members (collapsed, diverged) are grey crosses: where
    the bound is small, they show whether training still works there."""
    rows = hidden_layers(table)
    rows = rows[rows["weight_decay"] > 0]
    ok, excluded = rows[rows["status"] == "ok"], rows[rows["status"] != "ok"]
    colors, markers = (_colors(rows[sweep]), _markers(rows[sweep])) if len(rows) else ({}, {})
    ratios = [line for line in lines if line.kind == "ratio" and line.relative_to in table]
    panels = [(line.metric, line.relative_to, line) for line in ratios] or [
        (f"sv_above_{eps}", f"galanti_bound_{eps}", None)
        for eps in (
            c.removeprefix("galanti_bound_") for c in table if c.startswith("galanti_bound_")
        )
        if f"sv_above_{eps}" in table
    ]
    figure, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(3.8 * len(panels), 3.4))
    width = rows[["rows", "cols"]].min(axis=1).max() if len(rows) else 1
    for panel, (axis, (measured, bound, line)) in enumerate(zip(axes[0], panels, strict=True)):
        for value, group in ok.groupby(sweep):
            axis.scatter(
                group[bound],
                group[measured],
                color=colors[value],
                marker=markers[value],
                s=14,
                alpha=0.8,
                label=f"{AXIS_LABEL[sweep]}={value_text(value)}",
            )
        _mark_excluded(axis, excluded[bound], excluded[measured])
        if len(rows):
            low = max(rows[bound].min() / 2, 0.5)
            high = max(rows[bound].max(), width) * 2
            ratio = line.value if line else 1.0
            name = f"{line.subject}: measured ≤ {ratio:g} × bound" if line else "measured = bound"
            diagonal = axis.plot(
                [low, high],
                [ratio * low, ratio * high],
                color=RULE_COLOR,
                linestyle="--",
                linewidth=1.1,
                label=name,
            )[0]
            axis.fill_between(
                [low, high],
                0,
                [ratio * low, ratio * high],
                color=PASS_FILL,
                alpha=0.07,
                linewidth=0,
            )
            if line:
                diagonal.set_gid(f"{line.gid}-p{panel}")
            trivial = axis.axvline(
                width, color="0.4", linestyle=":", label="layer's smaller side (trivial beyond)"
            )
            trivial.set_gid(f"regime-{line.subject if line else 'B7'}-{bound}-p{panel}")
        eps = bound.removeprefix("galanti_bound_")
        axis.set(
            xscale="log",
            yscale="symlog",
            ylim=(0, width * 1.5),
            xlabel=f"{bound} = B·log(2/ε)/(lr·wd)",
            ylabel=f"{measured} (hidden layers)",
            title=f"ε = {eps}",
        )
        axis.grid(alpha=0.3)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def norm_ratio_figure(
    history: pd.DataFrame,
    path: Path,
    sweep: str,
    hue: str | None = None,
    lines: list[RuleLine] = (),
):
    """||W||_F at the previous logged epoch over ||W||_F now, per hidden layer (claim B8):
    a row of panels per setting, a column per layer, one line per swept value."""
    rows = add_setting(hidden_layers(history), sweep)
    rows = rows[~rows["diverged"].astype(bool)].sort_values("epoch")
    keys = ["group", "member", "layer"]
    rows["norm_ratio"] = rows.groupby(keys)["fro_norm"].shift(1) / rows["fro_norm"]
    rows = rows.dropna(subset=["norm_ratio"])
    settings, layers = ordered_settings(rows), sorted(rows["layer"].unique())
    colors, markers = _colors(rows[sweep]), _markers(rows[sweep])
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
                    marker=markers[value],
                    markersize=3.5,
                    label=f"{AXIS_LABEL[sweep]}={value_text(value)}",
                )
            axis.axhline(1, color="0.4", linestyle=":", linewidth=1)
            axis.set(title=f"{setting}, W{layer}", ylabel="norm_ratio" if col == 0 else "")
            axis.grid(alpha=0.3)
            draw_rules(axis, "norm_ratio", lines, row * len(layers) + col)
        axes[-1][0].set_xlabel("epoch")
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


BOUND_LINES = ("bound_grs", "bound_spectral", "bound_paramcount_full", "bound_paramcount_rankr")


def generalization_figure(
    table: pd.DataFrame,
    path: Path,
    sweep: str,
    hue: str | None = None,
    lines: list[RuleLine] = (),
):
    """Measured gap and the bounds against the swept value, medians over the seeds of members
    that trained normally, on a symmetric-log axis (linear within ±1e-3, so a negative gap, e.g.
    California's, is drawn too); the dotted line is the trivial value (1 for an error gap, the
    constant predictor's loss for a regressor); a rule on a bound (A7) is drawn as well."""
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
            median = median[np.isfinite(median)]
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
        axis.set_yscale("symlog", linthresh=1e-3)
        axis.set(title=setting, ylabel="gap and bounds (median over seeds)")
        classifier = (here["loss"] == "ce").all()
        for name in BOUND_LINES:  # a rule on a bound: classifiers only when it says `loss: ce`
            kept = [
                line
                for line in lines_for(lines, name)
                if classifier or line.where.get("loss") != "ce"
            ]
            draw_rules(axis, name, kept, settings.index(setting))
        axis.set_xticks(range(len(grid)), [value_text(v) for v in grid], rotation=45)
        axis.set_xlabel(sweep)
        axis.grid(alpha=0.3)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def rank_gap_figure(
    table: pd.DataFrame,
    path: Path,
    sweep: str,
    hue: str | None = None,
    lines: list[RuleLine] = (),
):
    """Generalization gap against the effective rank of W1, one point per member that trained
    normally, coloured by weight decay: does lower rank go with a smaller gap?"""
    rows = add_setting(table[(table["layer"] == 1) & (table["status"] == "ok")], "weight_decay")
    settings = ordered_settings(rows)
    colors, markers = _colors(rows["weight_decay"]), _markers(rows["weight_decay"])
    figure, axes = plt.subplots(1, len(settings), squeeze=False, figsize=(4.0 * len(settings), 3.3))
    for axis, setting in zip(axes[0], settings, strict=True):
        here = rows[rows["setting"] == setting]
        for value, group in here.groupby("weight_decay"):
            axis.scatter(
                group["effective_rank"],
                group["gap"],
                color=colors[value],
                marker=markers[value],
                s=16,
                label=f"wd={value_text(value)}",
            )
        axis.set(title=setting, xlabel="effective_rank (W1)", ylabel="gap")
        axis.grid(alpha=0.3)
    _legend(axes)
    figure.tight_layout()
    _save(figure, path)


def test_error_figure(
    table: pd.DataFrame,
    path: Path,
    sweep: str,
    hue: str | None = None,
    lines: list[RuleLine] = (),
):
    """Test error (1 − accuracy; the test loss for regression) against weight decay, per seed
    and median, one panel per setting (A4, B6): the rules compare the wd > 0 picked on the
    validation split with wd = 0, so the median at wd = 0 is drawn across the panel. A4 passes
    below it; B6's band (a benefit between 0 and 2 points) is shaded beneath it."""
    rows = add_setting(with_derived(table[(table["layer"] == 1)]), "weight_decay")
    settings = ordered_settings(rows)
    grid = sorted(rows["weight_decay"].unique())
    rows = rows.assign(position=rows["weight_decay"].map({v: i for i, v in enumerate(grid)}))
    figure, axes = plt.subplots(1, len(settings), squeeze=False, figsize=(4.0 * len(settings), 3.3))
    for panel, (axis, setting) in enumerate(zip(axes[0], settings, strict=True)):
        here = rows[rows["setting"] == setting]
        ok, excluded = here[here["status"] == "ok"], here[here["status"] != "ok"]
        ok = ok[np.isfinite(ok["test_error"])]
        median = _seeds_and_median(axis, ok, "test_error")
        spread = ok.groupby("position")["test_error"].agg(["min", "max"])
        axis.vlines(
            spread.index,
            spread["min"],
            spread["max"],
            color="#0072B2",
            alpha=0.4,
            linewidth=3,
            label="seed range",
        )
        _mark_excluded(axis, excluded["position"], excluded["test_error"])
        classifier = (here["loss"] == "ce").all()
        baseline = median.get(grid.index(0), np.nan) if 0 in grid else np.nan
        benefit = [
            line
            for line in lines_for(lines, "test_error", "benefit")
            if np.isfinite(baseline) and (classifier or line.where.get("loss") != "ce")
        ]
        for order, line in enumerate(benefit):
            drawn = axis.axhline(baseline, color=RULE_COLOR, linestyle="--", linewidth=1.1)
            drawn.set_gid(f"{line.gid}-p{panel}")
            if line.band:
                low, high = baseline - line.band[1], baseline - line.band[0]
                band = axis.axhspan(low, high, color=PASS_FILL, alpha=0.12, linewidth=0)
                band.set_gid(f"{line.gid}-band-p{panel}")
                text = f"{line.subject}: in the band {line.band[0]:g}–{line.band[1]:g} below"
            else:
                text = f"{line.subject}: below"
            axis.text(
                0.99,
                baseline,
                text + " the wd = 0 median",
                transform=axis.get_yaxis_transform(),
                ha="right",
                va="bottom" if order == 0 else "top",
                fontsize=6.5,
                color=RULE_COLOR,
            )
        axis.set_xticks(range(len(grid)), [value_text(v) for v in grid], rotation=45)
        axis.set(
            title=setting,
            xlabel="weight_decay",
            ylabel="test error (1 − accuracy)" if classifier else "test loss",
        )
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    _save(figure, path)


TABLE_FIGURES = {
    "rank": lambda table, path, sweep, hue, lines: metric_figure(
        table, path, RANK_PANELS, sweep, lines=lines
    ),
    "paper_a": lambda table, path, sweep, hue, lines: metric_figure(
        table, path, PAPER_A_PANELS, sweep, lines=lines
    ),
    "grid": grid_figure,
    "heatmap": heatmap_figure,
    "depth": depth_figure,
    "bound": bound_figure,
    "generalization": generalization_figure,
    "rank_gap": rank_gap_figure,
    "test_error": test_error_figure,
}
HISTORY_FIGURES = {
    "dynamics": lambda history, path, sweep, hue, lines: dynamics_figure(
        history, path, sweep, lines=lines
    ),
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
    lines: list[RuleLine] = (),
) -> None:
    """One figure of one experiment; `kind` is one of plan.FIGURE_KINDS; `lines` are the rules
    that read this experiment (rankbias.thresholds.rule_lines), drawn where their metric is."""
    matplotlib.rcParams.update(THEME)
    np.random.seed(JITTER_SEED)  # noqa: NPY002 - seaborn's strip-plot jitter draws from numpy's global RNG
    lines = list(lines)
    if kind == "spectra":
        spectra_figure(table, spectra, path, sweep)
    elif kind in TABLE_FIGURES:
        TABLE_FIGURES[kind](table, path, sweep, hue, lines)
    elif kind in HISTORY_FIGURES:
        HISTORY_FIGURES[kind](history, path, sweep, hue, lines)
    else:
        raise ValueError(f"unknown figure {kind!r}; allowed: {', '.join(FIGURE_KINDS)}")
