from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from rankbias.figures import RANK_PANELS, draw_figure
from rankbias.plan import FIGURE_KINDS
from rankbias.summaries import add_setting


def synthetic_table() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rng = np.random.default_rng(0)
    eps = (0.1, 0.3, 0.5)
    rows, spectra = [], {}
    for batch in (8, 64):
        group = f"d_L3_H4_B{batch}_j0"
        members = []
        for member, (seed, wd) in enumerate([(s, w) for s in (0, 1) for w in (0.0, 0.1)]):
            members.append(member)
            for layer in (1, 2, 3):
                rows.append(
                    {
                        "group": group,
                        "member": member,
                        "layer": layer,
                        "dataset": "d",
                        "depth": 3,
                        "width": 4,
                        "batch_size": batch,
                        "lr": 0.1,
                        "weight_decay": wd,
                        "seed": seed,
                        "wd_function": "constant",
                        "rows": 4,
                        "cols": 3,
                        "status": "collapsed" if (member == 3 and batch == 64) else "ok",
                        "loss": "ce",
                        "const_loss": 2.3,
                        **{
                            m: rng.uniform(0.1, 3)
                            for m in (
                                *RANK_PANELS,
                                "eps_batch_max",
                                "thm26_ratio",
                                "units_dead",
                                "units_linear",
                                "units_zero_input",
                                "test_acc",
                                "test_loss",
                                "fro_norm",
                                *(f"{k}_{e}" for k in ("galanti_bound", "sv_above") for e in eps),
                                "gap",
                                "bound_grs",
                                "bound_spectral",
                                "bound_paramcount_full",
                                "bound_paramcount_rankr",
                            )
                        },
                    }
                )
        spectra[group] = {
            "W1": np.sort(rng.uniform(0.1, 1, (4, 3)))[:, ::-1],
            "member": np.array(members),
        }
    table = pd.DataFrame(rows)
    history = pd.concat(
        [
            table.assign(epoch=e, train_loss=1.0 / (e + 1), diverged=False, fro_norm=1 + e)
            for e in (0, 5, 10)
        ]
    )
    return table, history, spectra


def test_setting_leaves_out_the_swept_axis():
    table, _, _ = synthetic_table()
    by_wd = add_setting(table, "weight_decay")["setting"].unique()
    by_batch = add_setting(table, "batch_size")["setting"].unique()
    assert sorted(by_wd) == ["d B=64", "d B=8"]
    assert sorted(by_batch) == ["d wd=0", "d wd=0.1"]


def test_every_figure_kind_is_drawn_for_any_sweep(tmp_path):
    table, history, spectra = synthetic_table()
    for sweep, hue in (("weight_decay", "batch_size"), ("batch_size", "weight_decay")):
        for kind in FIGURE_KINDS:
            path = tmp_path / sweep / f"{kind}.svg"
            draw_figure(kind, table, history, spectra, path, sweep, hue)
            text = path.read_text()
            assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 5000


def test_the_same_tables_draw_the_same_figure(tmp_path):
    """Byte for byte, strip-plot jitter included (seaborn draws it from numpy's global RNG)."""
    table, history, spectra = synthetic_table()
    drawn = []
    for attempt in range(2):
        np.random.seed(attempt)  # noqa: NPY002 - what ran before must not matter
        path = tmp_path / "rank.svg"
        draw_figure("rank", table, history, spectra, path)
        drawn.append(path.read_bytes())
    assert drawn[0] == drawn[1]


def test_the_config_schema_allows_exactly_the_drawable_figures():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    allowed = schema["$defs"]["experiment"]["properties"]["figures"]["items"]["enum"]
    assert allowed == list(FIGURE_KINDS)
    with pytest.raises(ValueError, match="unknown figure 'pie'"):
        draw_figure("pie", *synthetic_table()[:2], {}, Path("unused.svg"))


def test_the_figure_theme_is_seaborns_without_importing_it():
    """figures.THEME stands in for seaborn's set_theme(style="ticks", context="paper") so that a
    figure job skips importing seaborn and scipy; it must set what set_theme sets."""
    import matplotlib
    import seaborn as sns
    from matplotlib.colors import to_rgb

    from rankbias.figures import THEME

    defaults = dict(matplotlib.rcParams)
    with matplotlib.rc_context():
        sns.set_theme(style="ticks", context="paper")
        expected = dict(matplotlib.rcParams)
    changed = {key for key in expected if str(expected[key]) != str(defaults[key])}
    assert changed - set(THEME) <= {"image.cmap"}  # seaborn's own colour map: heat maps name theirs
    with matplotlib.rc_context():
        matplotlib.rcParams.update(THEME)
        for key, value in THEME.items():
            if key == "axes.prop_cycle":
                ours = [to_rgb(c) for c in matplotlib.rcParams[key].by_key()["color"]]
                theirs = [to_rgb(c) for c in expected[key].by_key()["color"]]
                assert np.allclose(ours, theirs), key
            elif isinstance(value, float):
                assert matplotlib.rcParams[key] == pytest.approx(expected[key]), key
            else:
                assert str(matplotlib.rcParams[key]) == str(expected[key]), key
