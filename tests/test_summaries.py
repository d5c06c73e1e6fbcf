"""The statistics rule's tables: seed-combined trends per slice, and the weight-decay benefit picked
on validation, judged on test."""

import itertools

import pandas as pd
import pytest

from rankbias.summaries import (
    conv_rows,
    experiment_statistics,
    reported_rows,
    trend_rows,
    wd_benefit_rows,
)


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
        "conv",
        "reported",
        "tables",
    }


def conv_table(ranks: dict[float, float]) -> pd.DataFrame:
    """A ResNet-like table: per lr (and seed) two conv layers of rank `ranks[lr]`, a shortcut
    of rank 1 and a head of rank 10, the last lr's members collapsed."""
    rows = []
    layers = [("conv", 64, 27, 1024), ("conv", 64, 576, 1024), ("shortcut", 128, 64, 256)]
    layers.append(("head", 10, 512, 1))
    for lr, seed in itertools.product(ranks, range(3)):
        for layer, (kind, rows_, cols, positions) in enumerate(layers, start=1):
            rank = {"conv": ranks[lr] + seed, "shortcut": 1.0, "head": 10.0}[kind]
            rows.append(
                {
                    "experiment": "resnet_lr",
                    "group": f"g{seed}",
                    "member": lr,
                    "dataset": "c",
                    "depth": 4,
                    "batch_size": 4,
                    "lr": lr,
                    "weight_decay": 0.0005,
                    "wd_function": "constant",
                    "seed": seed,
                    "layer": layer,
                    "layer_kind": kind,
                    "rows": rows_,
                    "cols": cols,
                    "positions": positions,
                    "rank_galanti": rank,
                    "test_acc": 0.1 if lr == max(ranks) else 0.9,
                    "status": "collapsed" if lr == max(ranks) else "ok",
                    "galanti_bound_0.1": positions * 4 * 3.0 / (lr * 0.0005),
                    "sv_above_0.1": 5.0,
                    "operator_norm": 2.0,
                    "spectral_norm": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_paper_b_reported_values_sit_beside_our_average_conv_rank():
    table = conv_table({0.01: 200.0, 0.1: 100.0, 2.0: 0.0})
    reported = {
        "entries": [
            {
                "figure": "Fig. 2",
                "experiment": "resnet_lr",
                "average_rank": 220,
                "setting": {"batch_size": 4, "weight_decay": 0.0005, "lr": "smallest"},
            },
            {
                "figure": "Fig. 2",
                "experiment": "resnet_lr",
                "average_rank": 0,
                "test_acc": 0.1,
                "setting": {"batch_size": 4, "weight_decay": 0.0005, "lr": 2.0},
            },
            {
                "figure": "Fig. 3",
                "experiment": "resnet_wd",
                "average_rank": 0,
                "setting": {"lr": 1.5, "weight_decay": 0.003},
            },
        ]
    }
    smallest, largest = reported_rows(table, reported)
    assert smallest["setting"] == "B 4, wd 0.0005, lr 0.01" and smallest["runs"] == 3
    # the average over the conv layers (not the shortcut, not the head): 200 + seed
    assert smallest["Paper B average_rank"] == 220 and smallest["ours average_rank"] == 201
    assert smallest["ours average_rank range"] == "200–202" and smallest["not ok"] == 0
    assert largest["ours test_acc"] == pytest.approx(0.1) and largest["not ok"] == 3


def test_conv_layers_state_m_l_the_bound_against_the_side_and_both_norms():
    rows = conv_rows(conv_table({0.01: 20.0, 0.1: 10.0}))
    assert [row["m_l"] for row in rows] == [1024, 1024, 256, 1]
    stem, _, shortcut, head = rows
    assert stem["reshaped"] == "64 × 27" and stem["min side"] == 27
    assert stem["bound / min side"] == pytest.approx(stem["bound (ε 0.1)"] / 27)
    assert head["bound (ε 0.1)"] == pytest.approx(stem["bound (ε 0.1)"] / 1024)
    assert shortcut["kind"] == "shortcut" and stem["ratio"] == 2.0
    assert conv_rows(grid_table(lambda *a: 3.0)) == []  # an MLP has none
    assert reported_rows(grid_table(lambda *a: 3.0), {"entries": []}) == []
