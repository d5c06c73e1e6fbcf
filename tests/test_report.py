import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rankbias.report import _number, experiment_tables, load_words
from rankbias.summaries import experiment_statistics, median_rows, regime_rows

WORDS = load_words(Path(__file__).resolve().parents[1] / "report" / "templates")


def test_number_formatting():
    assert [_number(v) for v in (None, np.nan, np.inf, 3.0, 2.5e7, 0.123456)] == [
        "–",
        "–",
        "∞",
        "3",
        "2.5e+07",
        "0.123",
    ]


TWO_LAYER_SETTING = {
    "dataset": "d",
    "depth": 2,
    "width": 8,
    "batch_size": 16,
    "lr": 0.1,
    "wd_function": "constant",
}


def test_median_rows_take_medians_over_healthy_members_only():
    table = pd.DataFrame(
        {
            "layer": 1,
            **TWO_LAYER_SETTING,
            "weight_decay": [0.0, 0.0, 0.0, 0.1, 0.1],
            "status": ["ok", "ok", "collapsed", "ok", "diverged"],
            "rank_galanti": [8.0, 6.0, 0.0, 2.0, np.nan],
            "thm26_ratio": [np.inf, np.inf, 1, 5.0, 9.0],
        }
    )
    rows = median_rows(table, ("rank_galanti", "thm26_ratio", "missing_column"), "weight_decay")
    assert rows[0] == {
        "setting": "d",
        "weight_decay": "0",
        "ok / runs": "2/3",
        "rank_galanti": 7.0,
        "thm26_ratio": "∞",  # what JSON can hold and the report prints
    }
    assert rows[1]["ok / runs"] == "1/2" and rows[1]["rank_galanti"] == 2.0


def test_deep_experiments_get_a_row_per_hidden_layer_and_the_output_layer_apart():
    rows = []
    for wd, seed, layer in itertools.product((0.0, 0.01), (0, 1), (1, 2, 3)):
        rows.append(
            {
                "layer": layer,
                "dataset": "d",
                "depth": 3,
                "width": 8,
                "batch_size": 16,
                "lr": 0.1,
                "wd_function": "constant",
                "batch_norm": True,
                "epochs": 3,
                "weight_decay": wd,
                "status": "ok",
                "rank_galanti": 10 * layer + (wd > 0) + seed,
                "galanti_bound_0.5": np.inf if wd == 0 else 500.0,
                "test_acc": 0.9 - 0.1 * seed,
                "val_acc": 0.9 - 0.1 * seed + 0.01 * (wd > 0),
                "test_loss": 0.3,
                "gap": 0.05 + 0.01 * seed,
                "loss": "ce",
                "const_loss": 2.3,
                "seed": seed,
                "bound_grs": 2.0 + seed,
            }
        )
    table = pd.DataFrame(rows)
    summary = json.loads(json.dumps(experiment_statistics(table)))  # the statistics rule's file
    tables = {t["title"]: t["rows"] for t in experiment_tables(summary, {}, WORDS)}
    hidden = tables[
        "Final losses and rank metrics of every hidden layer (median over seeds, by weight_decay)"
    ]
    assert [(r["weight_decay"], r["layer"], r["rank_galanti"]) for r in hidden] == [
        ("0", "W1", "10.5"),
        ("0", "W2", "20.5"),
        ("0.01", "W1", "11.5"),
        ("0.01", "W2", "21.5"),
    ]
    output = tables["The output layer, reported apart (median over seeds)"]
    assert [r["rank_galanti"] for r in output] == ["30.5", "31.5"]
    bound = next(rows for title, rows in tables.items() if title.startswith("Paper B's Theorem"))
    assert [r["galanti_bound_0.5"] for r in bound] == ["∞", "∞", "500", "500"]
    assert not any(title.startswith("Paper A") for title in tables)  # no eps columns at all
    taus = next(rows for title, rows in tables.items() if "Kendall" in title)
    grs = next(r for r in taus if r["measure"] == "bound_grs")
    assert (
        grs["tau"] == "1" and grs["vacuous"] == "4/4"
    )  # bound >= 1, the error gap's trivial value
    matched = next(rows for title, rows in tables.items() if title.startswith("Does weight decay"))
    assert matched[0]["best_wd"] == "0.01" and matched[0]["seeds"] == "2"
    assert matched[0]["test"] == "exact sign-flip permutation, n = 2"


def test_median_rows_order_settings_by_number_not_by_text():
    table = pd.DataFrame(
        {
            "layer": 1,
            "dataset": "d",
            "depth": 2,
            "width": 8,
            "batch_size": [256, 16, 64],
            "lr": 0.1,
            "wd_function": "constant",
            "weight_decay": 0.0,
            "status": "ok",
            "rank_galanti": [1.0, 2.0, 3.0],
        }
    )
    rows = median_rows(table, ("rank_galanti",), "lr")
    assert [r["setting"] for r in rows] == ["d B=16", "d B=64", "d B=256"]


def test_claim_figures_are_embedded_once_then_linked():
    from rankbias.report import claim_sections

    check = {
        "check": {"metric": "residual_2"},
        "cases": [
            {
                "case": "e · d",
                "outcome": "pass",
                "value": 0.01,
                "ci": [0.005, 0.015],
                "p": 1 / 32,
                "n": 5,
                "test": "exact sign-flip permutation, n = 5",
            },
            {"case": "e · d2", "outcome": "underpowered", "n": 2, "reason": "2 seeds cannot"},
        ],
        "verdict": "supported",
    }
    stability = {"agreement": 0.9, "resamples": 200, "stable": True, "competing": "inconclusive"}
    claim = {
        "verdict": "supported",
        "experiments": ["e", "f"],
        "checks": [check],
        "stability": stability,
    }
    verdicts = {
        "claims": [
            {**claim, "id": "A1", "figures": ["rank", "spectra"]},
            {**claim, "id": "A3", "figures": ["rank"]},
        ]
    }
    uris = {("e", "rank"): "data:e-rank", ("e", "spectra"): "data:e-spectra"}
    kinds = {"e": ["rank", "spectra"], "f": ["grid"]}  # f draws neither figure
    sections, placed = claim_sections(verdicts, uris, kinds, WORDS["figures"])
    first, second = (section["figure_list"] for section in sections)
    assert [f["inline"] for f in first] == ["data:e-rank", "data:e-spectra"]
    assert second[0]["inline"] is None and second[0]["shown_in"] == "A1"
    assert placed == {("e", "rank"): "A1", ("e", "spectra"): "A1"}
    rows = sections[0]["checks"][0]["rows"]
    assert rows[0] == {
        "case": "e · d",
        "seed mean": "0.01",
        "95 % CI": "[0.005, 0.015]",
        "p": "0.0312",
        "n": "5",
        "test": "exact sign-flip permutation, n = 5",
        "outcome": "✓ pass",
        "reason": "",
    }
    assert rows[1]["outcome"] == "○ underpowered" and rows[1]["seed mean"] == "–"
    assert rows[1]["reason"] == "2 seeds cannot"
    assert sections[0]["stability_text"] == "90% of 200 seed resamples agree"


def test_regime_rows_count_each_member_once_per_criterion():
    table = pd.DataFrame(
        {
            "layer": [1, 1, 1, 1, 2],
            **TWO_LAYER_SETTING,
            "weight_decay": [0.0, 0.1, 0.1, 0.1, 0.1],
            "status": ["ok", "ok", "ok", "diverged", "ok"],
            "plateaued_effective_rank": [1.0, 0.0, np.nan, 1.0, 1.0],
            "decay_horizon": [0.0, 3.5, 3.0, 2.9, 3.5],
            "movement": [0.01, 0.5, 0.2, 0.04, 0.5],
        }
    )
    (row,) = regime_rows(table)
    assert row["members"] == 4 and row["ok"] == 3  # first-layer rows: one per member
    assert row["plateaued (effective_rank)"] == 2 and row["plateau undecided"] == 1
    assert row["h ≥ 3"] == 2 and row["moved ≥ 0.05"] == 2
    assert regime_rows(table.drop(columns="decay_horizon")) == []


def test_inline_figures_get_ids_of_their_own_and_their_description_as_label(tmp_path):
    from rankbias.report import inline_figure

    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg">'
        "<title>rank</title><desc>2 panels: rank &amp; more</desc>"
        '<defs><clipPath id="p1"><rect/></clipPath><path id="m1" d="M 0 0"/></defs>'
        '<g clip-path="url(#p1)"><use xlink:href="#m1" x="1"/></g><text>#p1 stays</text></svg>'
    )
    path = tmp_path / "rank.svg"
    path.write_text(svg)
    figure = inline_figure(path, "exp-rank")
    text = str(figure["svg"])
    assert text.startswith('<svg role="img" aria-label="2 panels: rank &amp; more"')
    assert 'id="exp-rank-p1"' in text and "url(#exp-rank-p1)" in text
    assert 'href="#exp-rank-m1"' in text and "<text>#p1 stays</text>" in text
    assert "<?xml" not in text and "DOCTYPE" not in text
    assert str(figure["alt"]) == "2 panels: rank &amp; more"
