"""Verdict engine (v2): seed tests, regimes, controls, scope, stability, concern findings, and per
claim of the shipped registry a synthetic table that drives its rule to supported and another to
contradicted (principle 1: reachable both ways)."""

import itertools

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from snakemake.utils import validate

from rankbias import claims
from rankbias.claims import evaluate_claims
from rankbias.registry import ClaimError, check_registry

SCHEMA = ROOT / "workflow" / "schemas" / "claims.schema.yaml"
ALPHA = 0.05
GRID = {
    "weight_decay": [0.0, 0.01, 0.03, 0.1],
    "batch_size": [16, 32, 64],
    "lr": [0.05, 0.1, 0.2],
    "wd_function": ["constant", "input_norm", "target_abs"],
}
IN_REGIME = {
    "status": "ok",
    "status_reason": "",
    "decay_horizon": 5.0,
    "movement": 0.5,
    "norm_ratio": 1.0,
    "rows": 128,
    "cols": 128,
    "steps": 1000,
    "fro_norm": 1.0,
    **{f"plateaued_{m}": 1.0 for m in ("effective_rank", "effective_rank_learned")},
    **{f"plateaued_{m}": 1.0 for m in ("residual_2", "train_loss")},
}


def member_rows(settings, seeds=range(5), layers=(1, 2, 3), **metrics) -> pd.DataFrame:
    """One row per (setting, seed, layer), in the claim's regime; metric columns: values or
    functions of the row."""
    rows = []
    for index, (setting, seed) in enumerate(itertools.product(settings, seeds)):
        for layer in layers:
            row = {
                "experiment": "exp",
                "group": "g",
                "member": index,
                "seed": seed,
                "dataset": "d",
                "loss": "ce",
                "depth": max(layers),
                "width": 8,
                "batch_norm": False,
                "batch_size": 16,
                "epochs": 5,
                "lr": 0.1,
                "weight_decay": 0.01,
                "wd_function": "constant",
                "layer": layer,
                **IN_REGIME,
                **setting,
            }
            for name, value in metrics.items():
                row[name] = value(row) if callable(value) else value
            rows.append(row)
    return pd.DataFrame(rows)


def one_check(check: dict) -> tuple[dict, dict]:
    """A registry of one claim with this one check, and a config whose one experiment has it."""
    claim = {"paper": "X", "source": "s", "claim": "c", "concerns": [], "checks": [check]}
    registry = {"papers": {"X": "x"}, "concerns": {}, "claims": {"X1": claim}}
    return registry, {"experiments": {"exp": {"claims": ["X1"], "runs": []}}}


def run(check: dict, table: pd.DataFrame, resamples: int = 0) -> dict:
    """One check evaluated as a one-check claim (without resamples unless asked)."""
    registry, config = one_check(check)
    return evaluate_claims(registry, config, {"exp": table}, resamples=resamples)["claims"][0]


def outcomes(result: dict) -> dict:
    return {case["case"]: case["outcome"] for case in result["checks"][0]["cases"]}


# ---------------------------------------------------------------- deciding one case


def test_a_level_passes_or_fails_only_when_the_seeds_agree_beyond_chance():
    below = claims.decide_values([0.01, 0.02, 0.01, 0.03, 0.02], "<=", 0.05, ALPHA)
    assert below["outcome"] == "pass" and below["p"] == pytest.approx(1 / 32)
    above = claims.decide_values([0.2, 0.3, 0.2, 0.25, 0.4], "<=", 0.05, ALPHA)
    assert above["outcome"] == "fail" and above["ci"][0] > 0.05
    straddle = claims.decide_values([0.01, 0.09, 0.02, 0.08, 0.05], "<=", 0.05, ALPHA)
    assert straddle["outcome"] == "undecided" and "straddle" in straddle["reason"]
    three = claims.decide_values([0.01, 0.01, 0.01], "<=", 0.05, ALPHA)  # best p = 1/8
    assert three["outcome"] == "underpowered" and three["seeds_needed"] == 5
    assert "3 seeds cannot reach" in three["reason"]


def test_a_value_on_the_line_fails_a_strict_comparison_and_passes_a_loose_one():
    zeros = [0.0] * 5
    assert claims.decide_values(zeros, ">", 0, ALPHA)["outcome"] == "fail"
    assert claims.decide_values(zeros, ">=", 0, ALPHA)["outcome"] == "pass"


def test_members_outside_the_regime_make_a_case_undecided_with_the_reason_never_failed():
    check = {"kind": "level", "metric": "residual_2", "comparison": "<=", "threshold": 0.05}
    check["regime"] = {"plateaued": ["residual_2"], "min_horizon": 3}
    table = member_rows([{}], layers=(1, 2), residual_2=0.5)
    assert run(check, table)["verdict"] == "contradicted"
    table.loc[table["seed"] < 2, "plateaued_residual_2"] = 0.0
    table.loc[table["seed"] == 4, "decay_horizon"] = 1.0
    case = run(check, table)["checks"][0]["cases"][0]
    assert case["outcome"] == "undecided"
    assert case["reason"] == "outside the regime: 2 residual_2 not plateaued, 1 h < 3"
    table["plateaued_residual_2"] = np.nan  # too few logged epochs to tell
    assert "plateau of residual_2 undecided" in run(check, table)["checks"][0]["cases"][0]["reason"]
    table["status"] = "collapsed"
    assert run(check, table)["verdict"] == "inconclusive"


def test_b7_is_decided_only_where_its_bound_says_something_and_the_norm_has_settled():
    def b7_reasons(**change):
        table = synthetic("B7", True).assign(**change)
        result = evaluate_claims(registry(), one_experiment("B7"), {"exp": table}, resamples=0)
        claim = {c["id"]: c for c in result["claims"]}["B7"]
        return claim["verdict"], {case.get("reason", "") for case in claim["checks"][0]["cases"]}

    assert b7_reasons()[0] == "supported"
    trivial = {"galanti_bound_0.1": 128.0, "galanti_bound_0.5": 128.0}  # the smaller side
    verdict, reasons = b7_reasons(**trivial)
    assert verdict == "inconclusive" and reasons == {"no member in the regime (5 trivial bound)"}
    verdict, reasons = b7_reasons(norm_ratio=1.2)
    assert verdict == "inconclusive"
    assert reasons == {"no member in the regime (5 norm not stabilised)"}


def test_a_control_that_fails_makes_the_case_fail_for_its_stated_reason():
    check = {
        "kind": "trend",
        "axis": "weight_decay",
        "metric": "effective_rank",
        "control_metric": "effective_rank_learned",
        "control_reason": "explained by forgetting the initialisation",
        "comparison": "<=",
        "min_spread": 0.05,
    }
    settings = [{"weight_decay": wd} for wd in GRID["weight_decay"]]
    falling = lambda r: 100 - 300 * r["weight_decay"] + 0.1 * r["seed"]  # noqa: E731
    table = member_rows(
        settings, layers=(1, 2), effective_rank=falling, effective_rank_learned=falling
    )
    assert run(check, table)["verdict"] == "supported"
    table["effective_rank_learned"] = 50 + 0.1 * table["seed"] * table["weight_decay"]
    case = run(check, table)["checks"][0]["cases"][0]
    assert case["outcome"] == "fail" and case["reason"].startswith("explained by forgetting")
    assert case["control"]["outcome"] == "fail"


# ---------------------------------------------------------------- trends


TREND = {
    "kind": "trend",
    "axis": "batch_size",
    "metric": "effective_rank",
    "layers": "hidden",
    "comparison": ">=",
    "min_spread": 0.05,
}


def trend_table(rank, seeds=range(2)) -> pd.DataFrame:
    settings = [{"batch_size": b, "lr": lr} for b in (16, 32, 64) for lr in (0.05, 0.2)]
    return member_rows(settings, seeds=seeds, layers=(1, 2), effective_rank=rank)


def test_a_trend_is_tested_inside_each_slice_and_a_flat_slice_is_no_effect():
    rank = lambda r: 100 + (r["batch_size"] / 16) * 10 * (r["lr"] == 0.2) + 0.01 * r["seed"]  # noqa: E731
    result = run(TREND, trend_table(rank))
    by_case = outcomes(result)
    assert set(by_case) == {"exp · d · lr=0.05 · W1", "exp · d · lr=0.2 · W1"}  # W2 is the output
    assert by_case["exp · d · lr=0.2 · W1"] == "pass"
    flat = [c for c in result["checks"][0]["cases"] if c["case"].endswith("lr=0.05 · W1")][0]
    assert flat["outcome"] == "fail" and flat["reason"].startswith("no effect")
    assert result["verdict"] == "mixed"
    assert result["scope"]["text"].startswith("holds at lr ≥ 0.2; fails at lr < 0.2")
    assert result["stability"]["scope_agreement"] == 1.0 and result["scope_note"] == ""


def test_a_trend_the_wrong_way_fails_and_one_seed_of_three_points_is_underpowered():
    falling = lambda r: 200 - r["batch_size"] + 0.01 * r["seed"]  # noqa: E731
    assert run(TREND, trend_table(falling))["verdict"] == "contradicted"
    one_seed = run(TREND, trend_table(falling, seeds=[0]))
    case = one_seed["checks"][0]["cases"][0]
    assert case["outcome"] == "underpowered" and case["seeds_needed"] == 2  # 3! = 6 orderings
    assert one_seed["verdict"] == "inconclusive" and one_seed["reachable"] == ["inconclusive"]
    two_points = run(TREND, trend_table(falling)[lambda t: t["batch_size"] < 64])
    assert all(c["reason"].startswith("fewer than 3") for c in two_points["checks"][0]["cases"])


def test_a_grid_point_outside_the_regime_leaves_the_trend_undecided_not_failed():
    # the rank falls with wd only at the large wd that has not plateaued: cutting that point
    # off would read "no effect" on what is left of the grid
    check = {**TREND, "axis": "weight_decay", "comparison": "<=", "layers": "first"}
    check["regime"] = {"plateaued": ["effective_rank"]}
    settings = [{"weight_decay": wd} for wd in GRID["weight_decay"]]
    rank = lambda r: 100 - 500 * (r["weight_decay"] == 0.1) + 0.01 * r["seed"]  # noqa: E731
    table = member_rows(settings, layers=(1, 2), effective_rank=rank)
    assert run(check, table)["verdict"] == "supported"
    table.loc[table["weight_decay"] == 0.1, "plateaued_effective_rank"] = 0.0
    case = run(check, table)["checks"][0]["cases"][0]
    assert case["outcome"] == "undecided"
    assert (
        case["reason"]
        == "outside the regime: 1 of 4 grid points lost (5 effective_rank not plateaued)"
    )


def test_equal_epoch_slices_are_reported_apart_when_steps_must_be_equal():
    rising = lambda r: 100 + r["batch_size"] + 0.01 * r["seed"]  # noqa: E731
    table = trend_table(rising)
    assert run({**TREND, "equal_steps": True}, table)["verdict"] == "supported"
    table["steps"] = 16_000 // table["batch_size"]  # equal epochs: fewer steps at larger B
    case = run({**TREND, "equal_steps": True}, table)["checks"][0]["cases"][0]
    assert case["outcome"] == "undecided" and "confounded with the step count" in case["reason"]


# ---------------------------------------------------------------- paired settings


def benefit_table(test_gain: float, val_gain: float, spread: float = 0.002) -> pd.DataFrame:
    """Error 0.2 at wd = 0; wd = 0.01 gains `test_gain` on test, `val_gain` on validation; wd =
    0.1 gains 0.01 on validation and nothing on test."""

    def error(split):
        def value(row):
            wd, seed = row["weight_decay"], row["seed"]
            gain = {0.0: 0.0, 0.01: test_gain if split == "test" else val_gain, 0.1: 0.0}[wd]
            if split == "val" and wd == 0.1:
                gain = 0.01
            return 0.8 + gain - spread * (seed - 2) * (wd > 0)

        return value

    settings = [{"weight_decay": wd} for wd in (0.0, 0.01, 0.1)]
    return member_rows(
        settings, layers=(1, 2), test_acc=error("test"), val_acc=error("val"), gap=0.0
    )


def test_the_best_weight_decay_is_picked_on_validation_not_on_test():
    check = {"kind": "wd_benefit", "comparison": ">", "threshold": 0}
    honest = run(check, benefit_table(test_gain=0.03, val_gain=0.02))
    case = honest["checks"][0]["cases"][0]
    assert case["best_wd"] == 0.01 and case["outcome"] == "pass"
    assert case["value"] == pytest.approx(0.03)
    # wd = 0.01 is best on test, but validation prefers 0.1, which gains nothing on test
    peeking = run(check, benefit_table(test_gain=0.03, val_gain=0.005))
    assert peeking["checks"][0]["cases"][0]["best_wd"] == 0.1
    assert peeking["verdict"] != "supported"


def test_the_marginal_effect_band_of_b6_goes_both_ways():
    check = {"kind": "wd_benefit", "band": [0, 0.02], "comparison": ">="}
    assert run(check, benefit_table(0.01, 0.02, spread=0.0005))["verdict"] == "supported"
    assert run(check, benefit_table(0.05, 0.06, spread=0.0005))["verdict"] == "contradicted"
    assert run(check, benefit_table(-0.02, 0.02, spread=0.0005))["verdict"] == "contradicted"
    wide = run(check, benefit_table(0.01, 0.02, spread=0.02))["checks"][0]["cases"][0]
    assert wide["outcome"] == "undecided" and "95 % CI" in wide["reason"]


def test_no_effect_without_weight_decay_needs_the_power_to_see_one_with_it():
    check = {
        "kind": "spread",
        "axes": ["batch_size", "lr"],
        "metric": "effective_rank",
        "layers": "hidden",
        "where": {"weight_decay": "== 0"},
        "power_where": {"weight_decay": "> 0"},
        "regime": {"min_movement": 0.05},
        "comparison": "<=",
        "threshold": 0.1,
    }
    settings = [
        {"batch_size": b, "lr": lr, "weight_decay": wd}
        for b in (16, 64)
        for lr in (0.05, 0.2)
        for wd in (0.0, 0.01)
    ]
    effect = lambda r: 100 - 20 * (r["lr"] == 0.2) * (r["weight_decay"] > 0) + 0.1 * r["seed"]  # noqa: E731
    table = member_rows(settings, layers=(1, 2), effective_rank=effect)
    assert run(check, table)["verdict"] == "supported"
    table["effective_rank"] = 100 + 0.1 * table["seed"]  # no effect with weight decay either
    case = run(check, table)["checks"][0]["cases"][0]
    assert case["outcome"] == "undecided" and case["reason"].endswith("no power")
    table["effective_rank"] = table.apply(
        lambda r: 100 - 20 * (r["lr"] == 0.2) + 0.1 * r["seed"], axis=1
    )
    assert run(check, table)["verdict"] == "contradicted"
    table["movement"] = 0.01
    assert "barely moved" in run(check, table)["checks"][0]["cases"][0]["reason"]


# ---------------------------------------------------------------- verdicts, scope, stability


def test_verdicts_pool_deciding_cases_and_ignore_context_checks():
    assert claims.verdict_of(["pass", "undecided", "underpowered"]) == "supported"
    assert claims.verdict_of(["fail", "undecided"]) == "contradicted"
    assert claims.verdict_of(["pass", "fail"]) == "mixed"
    assert (
        claims.verdict_of(["undecided", "underpowered"]) == claims.verdict_of([]) == "inconclusive"
    )
    assert claims.all_of(["supported", "contradicted"]) == "contradicted"
    assert claims.all_of(["supported", "inconclusive"]) == "inconclusive"


def test_the_scope_names_the_axis_that_separates_passing_from_failing_cases():
    def case(outcome, dataset, wd):
        return {
            "outcome": outcome,
            "case": dataset,
            "setting": {"dataset": dataset, "weight_decay": wd},
        }

    cases = [case("pass", "housing", 0.1), case("fail", "mnist", 0.1), case("fail", "mnist", 0.01)]
    cases += [case("fail", "fashion", 0.1), case("pass", "housing", 0.01)]
    found = claims.scope(cases)
    assert found["axis"] == "dataset" and found["fits"] == 5
    assert (
        found["text"]
        == "holds on housing; fails on fashion, mnist (5 of 5 decided cases fit this split)"
    )
    # one failure among passes at every wd: no split beats "it holds", and the scope says so
    scattered = [case("pass", "d", wd) for wd in (0.01, 0.03, 0.1)] * 3 + [case("fail", "d", 0.03)]
    found = claims.scope(scattered)
    assert found["axis"] is None and found["text"].startswith("no one setting axis separates")
    assert "9 of 10 decided cases pass" in found["text"]
    numeric = [case("pass", "d", 0.1), case("pass", "d", 0.03), case("fail", "d", 0.01)]
    assert claims.scope(numeric)["text"].startswith("holds at wd ≥ 0.03; fails at wd < 0.03")


def test_a_verdict_carried_by_one_seed_is_flagged_unstable():
    check = {"kind": "level", "metric": "residual_2", "comparison": "<=", "threshold": 0.05}
    steady = member_rows([{}], layers=(1, 2), residual_2=lambda r: 0.01 + 0.001 * r["seed"])
    result = run(check, steady, resamples=200)
    assert result["stability"]["agreement"] == 1.0 and result["shown_verdict"] == "supported"
    # seed 4 alone keeps the claim from passing: resamples without it (a third) pass
    shaky = member_rows([{}], layers=(1, 2), residual_2=lambda r: 0.5 if r["seed"] == 4 else 0.01)
    result = run(check, shaky, resamples=200)
    assert result["verdict"] == "inconclusive"
    assert 0.5 < result["stability"]["agreement"] < 0.8
    assert result["stability"]["competing"] == "supported"
    assert not result["stability"]["stable"] and result["shown_verdict"] == "unstable"
    again = run(check, shaky, resamples=200)
    assert again["stability"] == result["stability"]  # fixed RNG: same tables, same share


# ---------------------------------------------------------------- the shipped registry


def registry() -> dict:
    return yaml.safe_load((ROOT / "config" / "claims.yaml").read_text())


def synthetic(claim_id: str, supported: bool, seeds=range(5)) -> pd.DataFrame:
    """A table on which the shipped rule of `claim_id` should say supported (or contradicted):
    every member in the regime, metric values on the claim's side of each rule (or the other)."""
    good = 1 if supported else -1
    settings = [
        dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())
    ]
    table = member_rows(settings, seeds=seeds)
    jitter = 0.001 * table["seed"]
    wd, lr, batch = table["weight_decay"], table["lr"], table["batch_size"]
    index = {axis: table[axis].map({v: i for i, v in enumerate(GRID[axis])}) for axis in GRID}
    table["gap"] = 0.001 * (index["weight_decay"] + 4 * index["batch_size"] + 12 * index["lr"])
    table["gap"] += 0.0001 * index["wd_function"] + 1e-6 * table["seed"]
    low, high = 0.01 + jitter, 0.3 + jitter
    if claim_id == "A1":
        table["residual_2"] = low if supported else high
    elif claim_id == "A2":
        table["residual_2"] = high
        table["residual_2_learned"] = high if supported else low
    elif claim_id in ("A3", "B2", "B3", "B4"):
        axis = {"A3": "weight_decay", "B2": "batch_size", "B3": "lr", "B4": "weight_decay"}[
            claim_id
        ]
        sign = 1 if claim_id == "B2" else -1
        table["effective_rank"] = 100 + good * sign * 10 * index[axis] + jitter
        table["effective_rank_learned"] = table["effective_rank"]
    elif claim_id in ("A4", "B6"):
        gain = {"A4": 0.03, "B6": 0.01}[claim_id] * (wd == 0.03) - 0.01 * (wd == 0.1)
        error = 0.2 - (gain if supported else -0.03 * (wd > 0)) + jitter * (wd > 0)
        table["test_acc"] = table["val_acc"] = 1 - error
        table["effective_rank"] = 100 + 100 * table["gap"]
    elif claim_id == "A5":
        table["eps_batch_max"] = (0.05 if supported else 0.5) * wd * table["fro_norm"] + jitter * wd
    elif claim_id == "A6":
        table["thm26_ratio"] = (0.5 if supported else 5.0) + jitter
    elif claim_id == "A7":
        table["bound_paramcount_rankr"] = 0.5 + table["gap"] if supported else 2.0 - table["gap"]
        table["bound_grs"] = table["bound_spectral"] = -table["gap"] if supported else table["gap"]
    elif claim_id == "A8":
        constant = table["wd_function"] == "constant"
        table["residual_1"] = np.where(constant, low if supported else high, high)
        table["residual_2"] = low if supported else high
    elif claim_id == "B1":
        table["effective_rank"] = np.where(wd == 0, 100.0, 50.0 if supported else 100.0) + jitter
        table["effective_rank_learned"] = table["effective_rank"]
    elif claim_id == "B5":
        moves = 100 - 10 * index["batch_size"] - 10 * index["lr"] + jitter
        table["effective_rank"] = np.where(wd > 0, moves, 100 + jitter if supported else moves)
    elif claim_id == "B7":
        for eps in (0.1, 0.5):
            table[f"galanti_bound_{eps}"] = 10.0
            table[f"sv_above_{eps}"] = (5.0 if supported else 20.0) + jitter
    elif claim_id == "B8":
        table["norm_ratio"] = 1 + (0.01 if supported else 0.2) + jitter
    del lr, batch
    return table


CLAIMS = [f"A{i}" for i in range(1, 9)] + [f"B{i}" for i in range(1, 9)]


def one_experiment(claim_id: str) -> dict:
    return {"experiments": {"exp": {"claims": [claim_id], "runs": []}}}


@pytest.mark.parametrize("claim_id", CLAIMS)
@pytest.mark.parametrize("supported", [True, False], ids=["supported", "contradicted"])
def test_every_shipped_rule_is_reachable_both_ways(claim_id, supported):
    table = synthetic(claim_id, supported)
    result = evaluate_claims(registry(), one_experiment(claim_id), {"exp": table}, resamples=0)
    claim = {c["id"]: c for c in result["claims"]}[claim_id]
    expected = "supported" if supported else "contradicted"
    assert claim["verdict"] == expected, claim["evidence"]
    assert {"supported", "contradicted"} <= set(claim["reachable"])


@pytest.mark.parametrize("claim_id", ["A1", "A2", "A5", "A6", "A8", "B1", "B6", "B7", "B8"])
def test_a_level_rule_on_two_seeds_is_underpowered_and_names_the_seeds_needed(claim_id):
    table = synthetic(claim_id, True, seeds=range(2))
    result = evaluate_claims(registry(), one_experiment(claim_id), {"exp": table}, resamples=0)
    claim = {c["id"]: c for c in result["claims"]}[claim_id]
    assert claim["verdict"] == "inconclusive" and claim["reachable"] == ["inconclusive"]
    cases = [
        case for check in claim["checks"] if check["role"] == "decides" for case in check["cases"]
    ]
    assert cases and all(case["outcome"] == "underpowered" for case in cases)
    assert {case["seeds_needed"] for case in cases} == {5}
    assert result["summary"]["seeds_needed"] == 5


def concern_table(concern_id: str, borne_out: bool) -> pd.DataFrame:
    """A table on which the shipped rule of a concern finds it borne out (or not)."""
    settings = [dict(zip(GRID, v, strict=True)) for v in itertools.product(*GRID.values())]
    table = member_rows(settings)
    jitter = 0.001 * table["seed"]
    wd = table["weight_decay"]
    table["gap"] = 0.001 * wd * 100 + 0.0001 * table["batch_size"] + 0.00001 * table["lr"]
    if concern_id == "C1":
        table["eps_batch_max"] = (0.5 if borne_out else 0.05) * wd
    elif concern_id == "C2":
        table["thm26_ratio"] = (5.0 if borne_out else 0.5) + jitter
    elif concern_id in ("C3", "C6"):
        table["residual_2"] = (0.3 if borne_out else 0.01) + jitter
    elif concern_id == "C5":
        sign = 1 if borne_out else -1
        table["thm26_ratio"] = 10 + sign * (table["batch_size"] - 100 * wd) + jitter
    elif concern_id == "C7":
        table["units_zero_input"] = 0.05 + jitter if borne_out else 0.0
    elif concern_id == "C8":
        table["units_dead"] = 0.0
        table["units_linear"] = (0.97 if borne_out else 0.5) - jitter
    elif concern_id == "C9":
        table["bound_paramcount_rankr"] = -table["gap"] if borne_out else table["gap"]
        table["bound_grs"] = table["bound_spectral"] = table["gap"] if borne_out else -table["gap"]
    elif concern_id == "C10":
        table["residual_1"] = (0.3 if borne_out else 0.01) + jitter
    return table


MEASURABLE = ["C1", "C2", "C3", "C5", "C6", "C7", "C8", "C9", "C10"]


@pytest.mark.parametrize("concern_id", MEASURABLE)
@pytest.mark.parametrize("borne_out", [True, False], ids=["borne-out", "not-borne-out"])
def test_every_measurable_concern_gets_a_finding_both_ways(concern_id, borne_out):
    entries = registry()
    tables = {"exp": concern_table(concern_id, borne_out)}
    config = {"experiments": {"exp": {"claims": [concern_id], "runs": []}}}
    result = evaluate_claims(entries, config, tables, resamples=0)
    concern = {c["id"]: c for c in result["concerns"]}[concern_id]
    assert concern["finding"] == ("borne out" if borne_out else "not borne out"), concern[
        "evidence"
    ]


def test_context_concerns_say_why_they_are_not_tests():
    result = evaluate_claims(
        registry(), one_experiment("A1"), {"exp": synthetic("A1", True)}, resamples=0
    )
    context = {c["id"]: c for c in result["concerns"] if c["finding"] == "context"}
    assert set(context) == {"C4", "C11"} and all(c["context"] for c in context.values())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_registry_is_valid_for_the_shipped_configs(name):
    entries = registry()
    validate(entries, schema=str(SCHEMA))
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    check_registry(entries, config)
    bearing = claims.claim_experiments(entries, config)
    assert all(bearing[claim] for claim in entries["claims"]), "every claim has an experiment"


def small_config(claim_ids: list[str]) -> dict:
    return {"experiments": {"exp": {"claims": claim_ids, "runs": []}}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["claims"]["A1"]["checks"][0].update(metric="rank_x"),
            "unknown metric 'rank_x'",
        ),
        (lambda r: r["claims"]["A1"]["checks"][0].update(experiments=["nope"]), "'nope' is not an"),
        (lambda r: r["claims"]["A1"]["checks"][0]["where"].update(lr="=< 3"), "cannot read"),
        (lambda r: r["claims"]["A1"]["checks"][0]["where"].update(colour=1), "unknown column"),
        (
            lambda r: r["claims"]["A1"]["checks"][0]["regime"].update(plateaued=["gap"]),
            "'gap' has no plateau record",
        ),
        (lambda r: r["claims"]["A1"].update(concerns=["C99"]), "unknown concern 'C99'"),
        (lambda r: r["claims"]["A1"].update(figures=["pie"]), "unknown figure kind 'pie'"),
    ],
)
def test_registry_errors_name_the_key_and_what_is_allowed(change, message):
    entries = registry()
    change(entries)
    with pytest.raises(ClaimError, match=message) as error:
        check_registry(entries, small_config(["A1"]))
    assert "claims.A1" in str(error.value)


def test_unknown_claim_id_in_the_config_is_refused():
    with pytest.raises(ClaimError, match=r"experiments.exp.claims: unknown claim or concern 'A9'"):
        check_registry(registry(), small_config(["A1", "A9"]))


def test_evaluate_reports_claims_without_experiments_as_inconclusive():
    result = evaluate_claims(
        registry(), small_config(["A1"]), {"exp": synthetic("A1", True)}, resamples=0
    )
    verdicts = {claim["id"]: claim for claim in result["claims"]}
    assert verdicts["A1"]["verdict"] == "supported" and verdicts["A1"]["experiments"] == ["exp"]
    assert verdicts["B7"]["verdict"] == "inconclusive"
    assert verdicts["B7"]["evidence"] == "no experiment of this config bears on it"
    assert [c["id"] for c in verdicts["A1"]["concerns"]] == ["C1", "C3", "C6", "C7", "C8"]


def test_excluded_members_are_listed_with_their_reason():
    table = synthetic("A1", True)
    table.loc[table["seed"] == 2, ["status", "status_reason"]] = ["collapsed", "chance accuracy"]
    excluded = claims.excluded_members({"exp": table}, ["exp"])
    assert len(excluded) == 108 and excluded[0]["reason"] == "chance accuracy"


def test_two_runs_compare_verdict_by_verdict_and_flag_only_silent_moves():
    def run_of(verdict, agreement, passing="housing", scope_stable=True, by="dataset"):
        stability = {"agreement": agreement, "stable": agreement >= 0.8}
        stability["scope_stable"] = scope_stable
        cases = [
            {"case": d, "outcome": "pass" if d == passing else "fail", "setting": setting}
            for d, setting in (
                ("housing", {"dataset": "housing", "weight_decay": 0.1}),
                ("mnist", {"dataset": "mnist", "weight_decay": 0.01}),
            )
        ]
        found = claims.scope(cases) if verdict == "mixed" else None
        if found and by == "weight_decay":  # the same cases, described by another axis
            rule = claims._splits("weight_decay", [0.1, 0.01])[0]
            found = {**found, "rule": rule, "holds_where": rule["where"]}
        claim = {"id": "A1", "verdict": verdict, "stability": stability, "scope": found}
        claim["checks"] = [{"role": "decides", "cases": cases}]
        return {"claims": [claim], "concerns": []}

    def status(first, second):
        return claims.compare(first, second)[0]["status"]

    assert status(run_of("mixed", 1.0), run_of("mixed", 0.9)) == "agree"
    assert status(run_of("mixed", 1.0), run_of("mixed", 1.0, by="weight_decay")) == "agree"
    assert status(run_of("mixed", 1.0), run_of("mixed", 1.0, "mnist")) == "scope differs"
    assert status(run_of("mixed", 1.0), run_of("mixed", 1.0, "mnist", False)) == "flagged"
    assert status(run_of("supported", 1.0), run_of("mixed", 0.6)) == "flagged"
    assert status(run_of("supported", 1.0), run_of("contradicted", 0.95)) == "flip"


# ---------------------------------------------------------------- words and flips for the report


def rising_table(top: float, seeds) -> pd.DataFrame:
    """Rank rising with B from 100 to `top`, identical in both lr slices."""
    rank = lambda r: 100 + (top - 100) * [16, 32, 64].index(r["batch_size"]) / 2 + 0.01 * r["seed"]  # noqa: E731
    return trend_table(rank, seeds=seeds)


def test_each_check_says_its_statistic_values_and_every_condition_it_needs():
    result = run(TREND, rising_table(105.5, range(5)))
    check = result["checks"][0]
    assert check["statistic"] == "seed-combined Spearman ρ(batch_size, effective_rank)"
    assert check["needs"] == "ρ > 0 (rising) at p < 0.05 and a grid spread ≥ 5%"
    assert check["observed"].startswith("1, grid spread 5.2%")
    level = run(
        {"kind": "level", "metric": "residual_2", "comparison": "<=", "threshold": 0.05},
        member_rows([{}], residual_2=lambda r: 0.01 + 0.001 * r["seed"]),
    )
    assert level["checks"][0]["needs"].startswith("≤ 0.05 (sign-flip test over seeds")
    assert level["checks"][0]["statistic"] == "seed mean of residual_2"


@pytest.mark.parametrize(
    "top, seeds, binding",
    [(105.5, range(5), "grid spread"), (150.0, range(2), "p")],
)
def test_the_case_closest_to_flipping_is_found_over_every_condition_of_the_rule(
    top, seeds, binding
):
    """A significant trend that barely clears the 5 % spread is closer to flipping by its spread
    than by its p; a large trend on two seeds is closest by its p."""
    result = run(TREND, rising_table(top, seeds))
    assert result["verdict"] == "supported"
    flip = result["flip"]
    assert flip["condition"] == binding
    assert flip["verdict_if_flipped"] == "mixed"  # two cases: one flipped, one still passing
    assert "were it to fail, the verdict would be mixed" in flip["text"]
