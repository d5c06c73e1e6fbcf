"""Rank correlations with the gap, vacuity, and the matched weight-decay comparison."""

import itertools
import math

import pandas as pd
import pytest

from rankbias.generalization import granulated_tau, kendall_tau, tau_table


def test_kendall_tau_b_by_hand():
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant
    # one pair tied in x: tau_b = (2 - 0) / sqrt((3 - 1) * (3 - 0))
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1], [2])) and math.isnan(kendall_tau([1, 1], [2, 3]))


def grid(gap_of, measure_of) -> pd.DataFrame:
    rows = []
    for lr, wd, seed in itertools.product((0.01, 0.1), (0.0, 0.01, 0.1), (0, 1)):
        rows.append(
            dict(
                layer=1,
                status="ok",
                loss="ce",
                const_loss=2.3,
                dataset="d",
                lr=lr,
                weight_decay=wd,
                seed=seed,
                batch_size=16,
                depth=2,
                width=8,
                wd_function="constant",
                batch_norm=False,
                gap=gap_of(lr, wd, seed),
                test_acc=0.9 - gap_of(lr, wd, seed),
                test_loss=0.3,
                bound_grs=measure_of(lr, wd, seed),
                rank_galanti=measure_of(lr, wd, seed),
            )
        )
    return pd.DataFrame(rows)


def test_granulated_tau_sees_what_pooling_over_an_axis_hides():
    # within every lr, the measure orders the gap by wd perfectly; across lr it runs the other way
    table = grid(lambda lr, wd, s: 10 * lr + wd, lambda lr, wd, s: wd - 10 * lr)
    models = table[table["layer"] == 1]
    assert kendall_tau(models["bound_grs"], models["gap"]) < 0
    # wd axis: tau 1 in each (lr, seed) group; lr axis: tau -1 in each (wd, seed) group
    assert granulated_tau(models, "bound_grs") == pytest.approx(0.0)
    same = grid(lambda lr, wd, s: lr + wd, lambda lr, wd, s: lr + wd)
    assert granulated_tau(same, "bound_grs") == pytest.approx(1.0)


def test_tau_table_counts_vacuous_bounds_against_the_trivial_value():
    table = grid(lambda lr, wd, s: lr + wd, lambda lr, wd, s: 0.5 if wd > 0 else 5.0)
    table.loc[0, "status"] = "collapsed"  # never counted
    row = tau_table(table).set_index("measure").loc["bound_grs"]
    assert row["vacuous"] == "3/11"  # wd = 0 models: bound 5 >= 1, the error gap's trivial value
    assert row["models"] == 11
