"""The statistics tables of one experiment (`results/statistics/<experiment>.json`): what the
report shows beside the verdicts, computed once by the workflow's `statistics` rule so the report
only renders (it never reads results/tables/). Seeds are samples here too (science.md,
principle 3):

- `trends`: per hidden layer (W1 of a two-layer net), swept axis, rank metric and slice (every
  other axis fixed), the seed-combined Spearman trend (rankbias.statistics.trend_test) with its
  p-value in each direction and how far the rank moves over the grid;
- `tau`: Kendall's τ (and granulated τ) of each measure with the gap over the healthy models;
- `wd_benefit`: per matched setting, the wd > 0 with the lowest mean validation error against
  wd = 0, paired by seed on the test error: effect, 95 % interval and one-sided p;
- `conv` (conv nets): per layer, Paper B's m_l, its bound against the layer's smaller side, and
  the layer's operator norm against its reshaped kernel's spectral norm;
- `reported`: Paper B's reported ResNet-18 values beside ours where the setting was run;
- `tables`: medians over seeds per setting and swept value (`median_rows`) for each column group
  of rankbias.vocabulary, members per regime, the settings, members per status, the excluded
  members, and the experiment's `scope` (the values of its axes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankbias import statistics
from rankbias.generalization import tau_table
from rankbias.plan import format_number
from rankbias.vocabulary import (
    AXIS_LABEL,
    GENERALIZATION_TABLE_COLUMNS,
    HYPER_COLUMNS,
    LEARNED_TABLE_COLUMNS,
    PAPER_A_COLUMNS,
    PAPER_B_TABLE_COLUMNS,
    RANK_TABLE_COLUMNS,
    SETTING_AXES,
    TREND_AXES,
)

TREND_METRICS = ("effective_rank", "effective_rank_learned", "rank_galanti")
CONV_KINDS = ("conv", "shortcut")  # the `layer_kind` of a conv net's kernels (measure.layer_shape)
MIN_POINTS = 3  # a rank correlation over two points is always ±1
LARGE_T_HORIZON = 3.0  # h >= 3: the init below 5 % (Paper B's "large T", science.md)
MOVED = 0.05  # movement >= 0.05: the weights moved ("no effect" claims need it)
MEDIAN_TABLES = {  # report table -> (its columns, which layers)
    "rank": (RANK_TABLE_COLUMNS, "model"),
    "learned": (LEARNED_TABLE_COLUMNS, "model"),
    "paper_a": (PAPER_A_COLUMNS, "first"),
    "generalization": (GENERALIZATION_TABLE_COLUMNS, "first"),
    "paper_b": (PAPER_B_TABLE_COLUMNS, "model"),
    "output": (RANK_TABLE_COLUMNS[4:], "output"),
}


def with_derived(table: pd.DataFrame) -> pd.DataFrame:
    """Columns the rules read that are functions of measured ones (documented in config/README):
    `eps_rel` = eps_batch_max / (wd·‖V‖_F), the batch gradient over the decay term's size at
    stationarity; `units_switching` = 1 − units_dead − units_linear, V's units that switch on
    the training set; `test_error` / `val_error` = 1 − accuracy (classification) or the loss."""
    table = table.copy()
    if "eps_batch_max" in table:
        scale = table["weight_decay"].astype(float) * table["fro_norm"].astype(float)
        table["eps_rel"] = table["eps_batch_max"].astype(float) / scale.where(scale > 0)
    if {"units_dead", "units_linear"} <= set(table):
        table["units_switching"] = 1 - table["units_dead"] - table["units_linear"]
    return with_errors(table)


def value_text(value) -> str:
    """An axis value as a label: strings as they are, numbers by plan.format_number."""
    return value if isinstance(value, str) else format_number(value)


def add_setting(
    frame: pd.DataFrame, sweep: str = "weight_decay", hue: str | None = None
) -> pd.DataFrame:
    """Label each row with its setting: data set + the axes other than `sweep` (and `hue`, when
    a figure draws it as colours) that vary."""
    varying = [
        axis
        for axis in SETTING_AXES
        if axis not in (sweep, hue) and axis in frame and frame[axis].nunique() > 1
    ]
    frame = frame.copy()
    frame["setting"] = frame["dataset"].astype(str)
    for axis in varying:
        frame["setting"] += f" {AXIS_LABEL[axis]}=" + frame[axis].map(value_text)
    return frame


def ordered_settings(frame: pd.DataFrame) -> list[str]:
    """Setting labels in numeric order of their axes (B=16 before B=256), not as strings."""
    axes = ["dataset", *(axis for axis in SETTING_AXES if axis in frame)]
    return list(dict.fromkeys(frame.sort_values(axes, kind="stable")["setting"]))


def hidden_layers(frame: pd.DataFrame) -> pd.DataFrame:
    """Hidden-layer rows only (metrics tables or histories): Paper B ranks hidden layers; the
    output layer W_L is reported apart."""
    return frame[frame["layer"] < frame["depth"]]


def is_deep(table: pd.DataFrame) -> bool:
    """Deeper than Paper A's two layers, or batch-normalised: Paper B's networks."""
    return bool((table["depth"] > 2).any() or table.get("batch_norm", pd.Series(False)).any())


def _cell(value):
    """A table value for JSON: NaN -> None, ±inf -> "∞"/"−∞" (what the report prints)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, float) and np.isinf(value):
        return "∞" if value > 0 else "−∞"
    return value


def median_rows(
    table: pd.DataFrame, columns: tuple[str, ...], sweep: str, layers: str = "first"
) -> list[dict]:
    """Median over seeds per (setting, swept value[, layer]) of the members that trained normally.

    `layers`: "first" (W1 only, Paper A's V), "hidden" (every hidden layer, a row each),
    "output" (the last layer, which Paper B reports apart) or "model" (hidden for Paper B's
    networks, `is_deep`, first otherwise)."""
    if layers == "model":
        layers = "hidden" if is_deep(table) else "first"
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
        row = {
            "setting": key[0],
            sweep: value_text(key[1]),
            **({"layer": f"W{key[2]}"} if layers == "hidden" else {}),
            "ok / runs": f"{len(ok)}/{len(group)}",
        }
        for column in columns:
            row[column] = _cell(ok[column].median()) if len(ok) else None
        rows.append(row)
    return rows if columns else []


def regime_rows(table: pd.DataFrame) -> list[dict]:
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


def _values(column: pd.Series) -> str:
    return ", ".join(value_text(value) for value in sorted(column.unique()))


def settings_rows(table: pd.DataFrame) -> list[dict]:
    """Per data set, the values every axis takes (the experiment's settings table)."""
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


SCOPE_COLUMNS = ("dataset", "depth", "width", "epochs", "steps", "weight_decay", "seed")


def scope_values(table: pd.DataFrame) -> dict:
    """The distinct values of the axes the report's scope box states, and the member count."""
    first = table[table["layer"] == 1]
    values = {
        column: [_cell(v) for v in sorted(first[column].dropna().unique())]
        for column in SCOPE_COLUMNS
        if column in first
    }
    return {**values, "members": len(first)}


def report_tables(table: pd.DataFrame, sweep: str) -> dict:
    """Every table of the experiment's report section except the statistics tests'."""
    first = table[table["layer"] == 1]
    excluded = first[first["status"] != "ok"]
    members = ["group", "member", "seed", "lr", "weight_decay", "status", "status_reason"]
    return {
        "sweep": sweep,
        "deep": is_deep(table),
        **{
            name: median_rows(table, columns, sweep, layers)
            for name, (columns, layers) in MEDIAN_TABLES.items()
        },
        "regime": regime_rows(table),
        "settings": settings_rows(table),
        "counts": {k: int(v) for k, v in first["status"].value_counts().items()},
        "excluded": _plain(excluded[[c for c in members if c in first]].to_dict(orient="records")),
        "scope": scope_values(table),
    }


def _healthy(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"]


def _slice_name(row: pd.Series, fixed: list[str]) -> str:
    return ", ".join(f"{AXIS_LABEL.get(a, a)}={row[a]:g}" for a in fixed) or "–"


def trend_rows(table: pd.DataFrame) -> list[dict]:
    """Seed-combined Spearman trends of every rank metric with every swept axis, per slice."""
    rows_in = _healthy(table)
    rows_in = rows_in[rows_in["layer"] < rows_in["depth"]]
    axes = [a for a in TREND_AXES if a in rows_in and rows_in[a].nunique() >= MIN_POINTS]
    metrics = [m for m in TREND_METRICS if m in rows_in]
    out = []
    for axis in axes:
        subsets = [
            ("wd > 0", rows_in[rows_in["weight_decay"] > 0]),
            ("wd = 0", rows_in[rows_in["weight_decay"] == 0]),
        ]
        if axis == "weight_decay":
            subsets = [("all", rows_in)]
        for subset, part in subsets:
            keys = [c for c in HYPER_COLUMNS if c in part and c not in (axis, "epochs")]
            varied = [a for a in AXIS_LABEL if a in keys and part[a].nunique() > 1]
            for _, block in part.groupby([*keys, "layer"], sort=True):
                for metric in metrics:
                    grid = block.pivot_table(index="seed", columns=axis, values=metric).dropna()
                    if grid.shape[1] < MIN_POINTS or grid.empty:
                        continue
                    values = np.array([float(c) for c in grid.columns])
                    strata = [(values, grid.loc[s].to_numpy(float)) for s in grid.index]
                    falling = statistics.trend_test(strata, "less")
                    medians = grid.median().to_numpy()
                    top = medians.max()
                    out.append(
                        {
                            "dataset": block["dataset"].iloc[0],
                            "layer": f"W{int(block['layer'].iloc[0])}",
                            "subset": subset,
                            "slice": _slice_name(block.iloc[0], varied),
                            "axis": axis,
                            "metric": metric,
                            "rho": falling["effect"],
                            "p_falling": falling["p"],
                            "p_rising": falling["p_opposite"],
                            "seeds": falling["n"],
                            "points": falling["k"],
                            "grid_spread": float((top - medians.min()) / top) if top > 0 else None,
                        }
                    )
    return out


def with_errors(table: pd.DataFrame) -> pd.DataFrame:
    """`test_error` and `val_error`: 1 − accuracy for classifiers, the loss for regressors."""
    table = table.copy()
    classify = table["loss"] == "ce"
    for split in ("test", "val"):
        if f"{split}_acc" in table:
            loss = table.get(f"{split}_loss", np.nan)
            table[f"{split}_error"] = np.where(classify, 1 - table[f"{split}_acc"], loss)
    return table


def matched_errors(rows: pd.DataFrame, keys: list[str]):
    """Per matched setting (`keys` fixed) with wd = 0 and wd > 0: its first row and a seed x
    (split, wd) table of test and validation errors (same seed: same init and data order)."""
    for _, group in rows.groupby(keys, sort=True):
        if (group["weight_decay"] == 0).any() and (group["weight_decay"] > 0).any():
            errors = group.pivot_table(
                index="seed", columns="weight_decay", values=["val_error", "test_error"]
            )
            yield group, errors


def benefit_on_validation(errors: pd.DataFrame, seeds: list) -> dict | None:
    """The wd > 0 with the lowest mean validation error over `seeds` (repeats allowed), and per
    seed the test error at wd = 0 minus at that wd; None without a validation split."""
    chosen = errors.loc[seeds]
    validation = chosen["val_error"].drop(columns=0.0, errors="ignore").mean()
    if validation.isna().all():
        return None
    best = float(validation.idxmin())
    return {
        "best_wd": best,
        "differences": (chosen["test_error"][0.0] - chosen["test_error"][best]).to_numpy(),
        "error_wd0": float(chosen["test_error"][0.0].mean()),
        "error_best": float(chosen["test_error"][best].mean()),
    }


def wd_benefit_rows(table: pd.DataFrame) -> list[dict]:
    """Best wd > 0 on validation against wd = 0, paired by seed on the test error."""
    rows_in = _healthy(table[table["layer"] == 1])
    if "val_acc" not in rows_in:
        return []
    rows_in = with_errors(rows_in)
    keys = [c for c in HYPER_COLUMNS if c in rows_in and c not in ("weight_decay", "epochs")]
    out = []
    for group, errors in matched_errors(rows_in, keys):
        benefit = benefit_on_validation(errors, list(errors.index))
        if benefit is None:
            continue
        test = statistics.paired_test(benefit.pop("differences"), "greater")
        out.append(
            {
                **{k: group[k].iloc[0] for k in keys if group[k].nunique() == 1},
                **benefit,
                "improvement": test["effect"],
                "ci_low": test["ci"][0],
                "ci_high": test["ci"][1],
                "p": test["p"],
                "seeds": test["n"],
                "test": test["test"],
            }
        )
    return out


def _plain(records: list[dict]) -> list[dict]:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    out = []
    for record in records:
        clean = {}
        for key, value in record.items():
            if isinstance(value, (np.generic,)):
                value = value.item()
            if isinstance(value, float) and not np.isfinite(value):
                value = None
            clean[key] = value
        out.append(clean)
    return out


def conv_rows(table: pd.DataFrame) -> list[dict]:
    """Per conv-net layer, over the healthy members with wd > 0: its reshape, Paper B's m_l and
    how far its Theorem 3.3 bound (ε = 0.1, median) lies above the layer's smaller side, and the
    layer's operator norm against its reshaped kernel's spectral norm (medians)."""
    if "layer_kind" not in table or not table["layer_kind"].isin(CONV_KINDS).any():
        return []
    rows = []
    decayed = _healthy(table)
    decayed = decayed[decayed["weight_decay"] > 0]
    for layer, group in decayed.groupby("layer"):
        first = group.iloc[0]
        min_side = min(int(first["rows"]), int(first["cols"]))
        bound = group["galanti_bound_0.1"].median()
        rows.append(
            {
                "layer": f"W{layer}",
                "kind": first["layer_kind"],
                "reshaped": f"{int(first['rows'])} × {int(first['cols'])}",
                "m_l": int(first["positions"]),
                "bound (ε 0.1)": _cell(bound),
                "min side": min_side,
                "bound / min side": _cell(bound / min_side),
                "sv_above_0.1": _cell(group["sv_above_0.1"].median()),
                "operator norm": _cell(group["operator_norm"].median()),
                "reshaped spectral norm": _cell(group["spectral_norm"].median()),
                "ratio": _cell((group["operator_norm"] / group["spectral_norm"]).median()),
            }
        )
    return rows


def average_conv_rank(table: pd.DataFrame) -> pd.DataFrame:
    """Paper B's plotted average rank per member: rank_galanti averaged over the conv layers
    (its eval_ranks: the stem and block convs, not shortcuts, not the head)."""
    convs = table[table["layer_kind"] == "conv"]
    keys = ["group", "member", *SETTING_AXES, "seed", "status"]
    keys = [key for key in keys if key in convs]
    ranks = convs.groupby(keys, dropna=False)["rank_galanti"].mean().rename("average_rank")
    accuracy = convs.groupby(keys, dropna=False)["test_acc"].first()
    return pd.concat([ranks, accuracy], axis=1).reset_index()


def resolved(setting: dict, frame: pd.DataFrame) -> dict:
    """A reported setting with `smallest` / `largest` replaced by the end of our grid."""
    ends = {"smallest": "min", "largest": "max"}
    return {
        axis: getattr(frame[axis], ends[value])() if value in ends else value
        for axis, value in setting.items()
    }


def reported_rows(table: pd.DataFrame, reported: dict | None) -> list[dict]:
    """Paper B's reported values (config/paper_b_reported.yaml) for this experiment beside ours:
    median and range over seeds of every member (collapsed ones included, as a figure plots
    them; their count given)."""
    if not reported or "layer_kind" not in table:
        return []
    experiment = table["experiment"].iloc[0]
    members = average_conv_rank(table)
    rows = []
    for entry in reported.get("entries", []):
        if entry["experiment"] != experiment:
            continue
        setting = resolved(entry["setting"], members)
        chosen = members
        for axis, value in setting.items():
            chosen = chosen[np.isclose(chosen[axis], float(value))]
        text = ", ".join(f"{AXIS_LABEL.get(a, a)} {value_text(v)}" for a, v in setting.items())
        row = {"figure": entry["figure"], "setting": text, "runs": len(chosen)}
        for metric in ("average_rank", "test_acc"):
            if metric not in entry:
                continue
            values = chosen[metric]
            row[f"Paper B {metric}"] = entry[metric]
            row[f"ours {metric}"] = _cell(values.median()) if len(values) else None
            row[f"ours {metric} range"] = (
                f"{values.min():.3g}–{values.max():.3g}" if len(values) else "not run"
            )
        row["not ok"] = int((chosen["status"] != "ok").sum())
        rows.append(row)
    return rows


def experiment_statistics(
    table: pd.DataFrame, sweep: str = "weight_decay", reported: dict | None = None
) -> dict:
    """Everything `results/statistics/<experiment>.json` holds; `sweep`: the experiment's swept
    axis (its tables' rows); `reported`: config/paper_b_reported.yaml's content."""
    return {
        "trends": _plain(trend_rows(table)),
        "tau": _plain(tau_table(table).to_dict(orient="records")),
        "wd_benefit": _plain(wd_benefit_rows(table)),
        "conv": _plain(conv_rows(table)),
        "reported": _plain(reported_rows(table, reported)),
        "tables": report_tables(table, sweep),
    }
