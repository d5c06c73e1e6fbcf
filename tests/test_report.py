import numpy as np
import pandas as pd

from rankbias.report import _number, run_table


def test_number_formatting():
    assert [_number(v) for v in (None, np.nan, np.inf, 3.0, 2.5e7, 0.123456)] == [
        "–",
        "–",
        "∞",
        "3",
        "2.5e+07",
        "0.123",
    ]


def test_run_table_takes_medians_over_healthy_members_only():
    table = pd.DataFrame(
        {
            "layer": 1,
            "dataset": "d",
            "depth": 2,
            "width": 8,
            "batch_size": 16,
            "lr": 0.1,
            "wd_function": "constant",
            "weight_decay": [0.0, 0.0, 0.0, 0.1, 0.1],
            "status": ["ok", "ok", "collapsed", "ok", "diverged"],
            "rank_galanti": [8.0, 6.0, 0.0, 2.0, np.nan],
            "thm26_ratio": [np.inf, np.inf, 1, 5.0, 9.0],
        }
    )
    rows = run_table(table, ("rank_galanti", "thm26_ratio", "missing_column"), "weight_decay")
    assert rows[0] == {
        "setting": "d",
        "weight_decay": "0",
        "ok / runs": "2/3",
        "rank_galanti": "7",
        "thm26_ratio": "∞",
    }
    assert rows[1]["ok / runs"] == "1/2" and rows[1]["rank_galanti"] == "2"
