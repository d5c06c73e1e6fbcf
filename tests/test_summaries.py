"""The statistics rule's tables: seed-combined trends per slice, and the weight-decay benefit picked
on validation, judged on test."""

import itertools

import pandas as pd
import pytest

from rankbias.summaries import experiment_statistics, trend_rows, wd_benefit_rows


def grid_table(rank_of, error_of=lambda wd, seed, split: 0.1) -> pd.DataFrame:
    rows = []
    settings = itertools.product((16, 64, 256), (0.01, 0.1), (0.0, 0.01), range(3), (1, 2, 3))
    for b, lr, wd, seed, layer in settings:
        rows.append(
            {
                "experiment": "e",
                "dataset": "d",
                "loss": "ce",
                "depth": 3,
                "width": 8,
                "batch_norm": True,
                "batch_size": b,
                "epochs": 4,
                "lr": lr,
                "weight_decay": wd,
                "wd_function": "constant",
                "seed": seed,
                "layer": layer,
                "status": "ok",
                "effective_rank": rank_of(b, lr, wd, layer) + 0.01 * seed,
                "test_acc": 1 - error_of(wd, seed, "test"),
                "val_acc": 1 - error_of(wd, seed, "val"),
                "test_loss": 0.3,
                "val_loss": 0.3,
                "gap": 0.01 * seed,
            }
        )
    return pd.DataFrame(rows)


def test_trends_are_seed_tested_per_slice_and_hidden_layer():
    table = grid_table(lambda b, lr, wd, layer: 50 + (b if wd > 0 else 10) - 100 * lr * layer)
    rows = pd.DataFrame(trend_rows(table))
    assert set(rows["layer"]) == {"W1", "W2"}  # W3 is the output layer
    rising = rows[(rows["axis"] == "batch_size") & (rows["subset"] == "wd > 0")]
    assert len(rising) == 4  # two lr slices x two hidden layers
    assert rising["rho"].tolist() == pytest.approx([1.0] * 4) and (rising["p_rising"] < 0.05).all()
    assert (rising["seeds"] == 3).all() and (rising["points"] == 3).all()
    flat = rows[(rows["axis"] == "batch_size") & (rows["subset"] == "wd = 0")]
    assert (flat["grid_spread"] < 0.01).all()  # only the seed offset moves
    # a collapsed member leaves its seed out of the slice, not a median of fewer seeds
    table.loc[(table["seed"] == 2) & (table["batch_size"] == 16), "status"] = "collapsed"
    fewer = pd.DataFrame(trend_rows(table))
    assert set(fewer[fewer["axis"] == "batch_size"]["seeds"]) == {2}


def test_the_weight_decay_benefit_is_picked_on_validation_and_judged_on_test():
    def error(wd, seed, split):
        if wd == 0:
            return 0.10 + 0.01 * seed
        return 0.08 + 0.01 * seed  # wd = 0.01 is 2 points better on both splits

    rows = wd_benefit_rows(grid_table(lambda *a: 5.0, error))
    assert len(rows) == 6  # one per (B, lr)
    row = rows[0]
    assert row["best_wd"] == 0.01 and row["improvement"] == pytest.approx(0.02)
    assert row["seeds"] == 3 and row["p"] == pytest.approx(1 / 8)  # 3 seeds: 1/8 at best
    assert set(experiment_statistics(grid_table(lambda *a: 5.0, error))) == {
        "trends",
        "tau",
        "wd_benefit",
        "tables",
    }
