"""The rules' thresholds as figures draw them: read from the shipped registry, one line per
threshold, drawn on the panels that show the rule's metric and only there."""

import matplotlib.pyplot as plt
import pytest
import yaml
from conftest import ROOT
from test_figures import synthetic_table

from rankbias.figures import draw_figure, draw_rules
from rankbias.thresholds import lines_for, rule_lines

REGISTRY = yaml.safe_load((ROOT / "config" / "claims.yaml").read_text())


def test_level_rules_become_lines_at_their_threshold_and_context_rules_are_marked():
    lines = rule_lines(REGISTRY, ["A1", "A5"])
    residual = lines_for(lines, "residual_2")
    assert [(line.subject, line.comparison, line.value, line.counted) for line in residual] == [
        ("A1", "<=", 0.05, True)
    ]
    (context,) = lines_for(lines, "eps_batch_max")
    assert context.value == 12 and not context.counted
    assert lines_for(lines, "eps_rel")[0].value == 0.1


def test_a_target_rule_is_a_band_and_a_ratio_rule_keeps_its_denominator():
    band = lines_for(rule_lines(REGISTRY, ["B8"]), "norm_ratio")
    assert sorted((line.comparison, line.value) for line in band) == [("<=", 1.05), (">=", 0.95)]
    ratios = [line for line in rule_lines(REGISTRY, ["B7"]) if line.kind == "ratio"]
    assert {(line.metric, line.relative_to) for line in ratios} == {
        ("sv_above_0.1", "galanti_bound_0.1"),
        ("sv_above_0.5", "galanti_bound_0.5"),
    }
    (benefit,) = [line for line in rule_lines(REGISTRY, ["B6"]) if line.kind == "benefit"]
    assert benefit.band == (0, 0.02) and benefit.where == {"loss": "ce"}


def test_a_check_limited_to_other_experiments_draws_nothing_here():
    registry = {
        "claims": {
            "X1": {
                "checks": [
                    {
                        "kind": "level",
                        "metric": "residual_2",
                        "comparison": "<=",
                        "threshold": 0.1,
                        "experiments": ["other"],
                    }
                ]
            }
        },
        "concerns": {},
    }
    assert rule_lines(registry, ["X1"], "here") == []
    assert len(rule_lines(registry, ["X1"], "other")) == 1


@pytest.mark.parametrize(
    "metric, values, starts_at_zero",
    [("effective_rank", [120, 124, 128], True), ("eps_batch_max", [120, 124, 128], False)],
)
def test_rank_axes_start_at_zero_so_a_small_difference_does_not_look_like_a_trend(
    metric, values, starts_at_zero
):
    figure, axis = plt.subplots()
    axis.plot([0, 1, 2], values)
    draw_rules(axis, metric, [])
    assert (axis.get_ylim()[0] == 0) == starts_at_zero
    plt.close(figure)


def test_a_rule_line_outside_the_data_widens_the_axis_to_show_it():
    figure, axis = plt.subplots()
    axis.plot([0, 1, 2], [0.3, 0.4, 0.5])
    draw_rules(axis, "residual_2", rule_lines(REGISTRY, ["A1"]))
    low, high = axis.get_ylim()
    assert (
        low == 0
        and high > 0.5
        and any(line.get_gid() == "rule-A1-residual_2-p0" for line in axis.lines)
    )
    plt.close(figure)


def test_figures_draw_each_rule_on_the_panel_of_its_metric_with_text_as_text(tmp_path):
    table, history, spectra = synthetic_table()
    table["residual_1"] = table["residual_2_learned"] = 0.2
    table["norm_ratio"] = 1.01
    lines = rule_lines(REGISTRY, ["A1", "A3", "A4", "A5", "B6", "B7", "B8"])
    drawn = {}
    for kind in ("rank", "paper_a", "test_error", "bound", "norm_ratio", "heatmap"):
        path = tmp_path / f"{kind}.svg"
        draw_figure(kind, table, history, spectra, path, "weight_decay", "batch_size", lines)
        drawn[kind] = path.read_text()
    assert 'id="rule-A1-residual_2-p' in drawn["rank"]
    assert 'id="rule-A3-effective_rank-spread-p' in drawn["rank"]
    assert 'id="rule-A5-eps_rel-p' in drawn["paper_a"]
    assert 'id="rule-A4-test_error-p' in drawn["test_error"]
    assert 'id="rule-B6-test_error-band-p' in drawn["test_error"]
    assert 'id="rule-B7-sv_above_0.1-p' in drawn["bound"]
    assert 'id="regime-B7-galanti_bound_0.1-p' in drawn["bound"]
    assert drawn["norm_ratio"].count('id="rule-B8-norm_ratio-p') == 2 * 2 * 2  # band × panels
    assert "rule-" not in drawn["heatmap"]  # no rule reads a heat map
    for text in drawn.values():
        assert "<text" in text and "DejaVuSans-" not in text  # text, not glyph outlines
        assert "<desc>" in text and "<metadata>" not in text
    assert "A1 on residual_2" in drawn["rank"].split("<desc>")[1].split("</desc>")[0]
    assert "No verdict rule reads it" in drawn["heatmap"]
