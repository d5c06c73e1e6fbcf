"""Verdict engine: every kind of check on synthetic tables, edge cases, and registry validation."""

import itertools

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from snakemake.utils import validate

from rankbias import claims
from rankbias.claims import ClaimError, check_registry, evaluate, evaluate_check

SCHEMA = ROOT / "workflow" / "schemas" / "claims.schema.yaml"


def member_rows(settings: list[dict], seeds=(0, 1, 2), layers=(1, 2), **metrics) -> pd.DataFrame:
    """One row per (setting, seed, layer); metric columns: values or functions of the row."""
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
                "status": "ok",
                "status_reason": "",
                "layer": layer,
                **setting,
            }
            for name, value in metrics.items():
                row[name] = value(row) if callable(value) else value
            rows.append(row)
    return pd.DataFrame(rows)


def run(check: dict, table: pd.DataFrame, history: pd.DataFrame | None = None) -> dict:
    return evaluate_check(check, ["exp"], {"exp": table}, {"exp": history})


LEVEL = {"kind": "level", "metric": "residual_2", "comparison": "<=", "threshold": 0.05}


def test_level_names_the_settings_where_the_claim_holds_and_fails():
    table = member_rows(
        [{"weight_decay": 0.01}, {"weight_decay": 0.1}],
        residual_2=lambda r: 0.2 + 0.01 * r["seed"] if r["weight_decay"] == 0.01 else 0.01,
    )
    result = run(LEVEL, table)
    assert result["verdict"] == "mixed" and (result["passed"], result["decided"]) == (1, 2)
    by_case = {case["case"]: case for case in result["cases"]}
    assert by_case["exp · d · wd=0.01"]["value"] == pytest.approx(0.21)  # median of 0.20..0.22
    assert by_case["exp · d · wd=0.01"]["passes"] is False
    assert by_case["exp · d · wd=0.1"]["passes"] is True and by_case["exp · d · wd=0.1"]["n"] == 3
    assert result["holds_at"] == ["exp · d · wd=0.1"]
    assert result["fails_at"] == ["exp · d · wd=0.01"]
    # the verdict becomes "supported" at a threshold >= 0.21 and "contradicted" below 0.01
    assert result["flip"]["all_pass_at"] == pytest.approx(0.21)
    assert result["flip"]["none_pass_at"] == pytest.approx(0.01)


def test_excluded_members_do_not_enter_the_medians_and_are_listed():
    table = member_rows([{}], residual_2=lambda r: 0.01 if r["seed"] < 2 else 0.9)
    table.loc[table["seed"] == 2, ["status", "status_reason"]] = ["collapsed", "chance accuracy"]
    result = run(LEVEL, table)
    assert result["verdict"] == "supported" and result["cases"][0]["n"] == 2
    excluded = claims.excluded_members({"exp": table}, ["exp"])
    assert len(excluded) == 1 and excluded[0]["reason"] == "chance accuracy"


def test_all_runs_diverged_is_inconclusive():
    table = member_rows([{}], residual_2=np.nan)
    table[["status", "status_reason"]] = ["diverged", "non-finite loss"]
    result = run(LEVEL, table)
    assert result["cases"] == [] and result["verdict"] == "inconclusive"
    assert result["flip"] == {}


def test_target_and_relative_to():
    table = member_rows(
        [{"lr": 0.1}, {"lr": 0.2}],
        norm_ratio=lambda r: 1.02 if r["lr"] == 0.1 else 0.8,
        rank_eps_01=1.0,
    )
    check = {**LEVEL, "metric": "norm_ratio", "target": 1, "threshold": 0.05}
    values = sorted(case["value"] for case in run(check, table)["cases"])
    assert values == pytest.approx([0.02, 0.2])
    table["galanti_bound_0.1"] = 4.0
    table["rank_eps_0.1"] = np.where(table["seed"] == 1, 6.0, 2.0)
    bound = {**LEVEL, "metric": "rank_eps_0.1", "relative_to": "galanti_bound_0.1"}
    bound |= {"statistic": "max", "threshold": 1}
    result = run(bound, table)  # the max over seeds catches the one member above its bound
    assert [case["value"] for case in result["cases"]] == [1.5, 1.5]
    assert result["verdict"] == "contradicted"


def test_one_seed_decides_levels_but_leaves_a_standard_error_undecided():
    table = member_rows(
        [{"weight_decay": 0.0}, {"weight_decay": 0.01}],
        seeds=(0,),
        residual_2=0.01,
        test_acc=lambda r: 0.90 if r["weight_decay"] == 0 else 0.92,
        test_loss=0.3,
        gap=0.0,
    )
    assert run(LEVEL, table)["verdict"] == "supported"
    z = run({"kind": "wd_benefit", "statistic": "z", "comparison": ">=", "threshold": 2}, table)
    assert z["verdict"] == "inconclusive" and z["cases"][0]["reason"].startswith("one seed")
    difference = run({"kind": "wd_benefit", "comparison": ">=", "threshold": 0}, table)
    assert difference["cases"][0]["value"] == pytest.approx(0.02)
    assert difference["verdict"] == "supported"


def trend_table(rank) -> pd.DataFrame:
    settings = [{"batch_size": b, "lr": lr} for b in (16, 64, 256) for lr in (0.05, 0.2)]
    return member_rows(settings, seeds=(0, 1), layers=(1, 2), effective_rank=rank)


TREND = {
    "kind": "trend",
    "axis": "batch_size",
    "metric": "effective_rank",
    "layers": "hidden",
    "comparison": ">=",
    "threshold": 0.5,
    "min_spread": 0.05,
}


def test_trend_is_computed_inside_each_slice_of_the_other_axis():
    # rank rises with B at lr 0.2 (10 % spread) but is flat at lr 0.05: one slice fails as no effect
    result = run(TREND, trend_table(lambda r: 100 + (r["batch_size"] > 16) * 10 * (r["lr"] == 0.2)))
    by_case = {case["case"]: case for case in result["cases"]}
    assert set(by_case) == {"exp · d · lr=0.05 · W1", "exp · d · lr=0.2 · W1"}  # W2 is the output
    rising = by_case["exp · d · lr=0.2 · W1"]
    # ties: 100, 110, 110 against 16, 64, 256 -> average ranks give rho = 0.866
    assert rising["value"] == pytest.approx(np.sqrt(3) / 2) and rising["passes"] is True
    flat = by_case["exp · d · lr=0.05 · W1"]
    assert flat["passes"] is False and flat["reason"].startswith("no effect")
    assert result["verdict"] == "mixed"
    assert result["flip"]["nearest_case"] == "exp · d · lr=0.2 · W1"  # the flat slice has no rho


def test_trend_with_two_values_is_undecided_and_opposite_sign_contradicts():
    table = trend_table(lambda r: 200 - r["batch_size"] / 4)
    assert run(TREND, table)["verdict"] == "contradicted"
    two = table[table["batch_size"] < 256]
    result = run(TREND, two)
    assert result["verdict"] == "inconclusive"
    assert all(case["reason"].startswith("fewer than 3") for case in result["cases"])


def test_spread_over_two_axes_per_layer():
    table = trend_table(lambda r: 100 - 20 * (r["lr"] == 0.2) * (r["layer"] == 1))
    table["weight_decay"] = 0.0
    check = {
        "kind": "spread",
        "axes": ["batch_size", "lr"],
        "metric": "effective_rank",
        "layers": "all",
        "comparison": "<=",
        "threshold": 0.1,
    }
    cases = {case["case"]: case for case in run(check, table)["cases"]}
    assert (
        cases["exp · d · W1"]["value"] == pytest.approx(0.2) and not cases["exp · d · W1"]["passes"]
    )
    assert cases["exp · d · W2"]["value"] == 0 and cases["exp · d · W2"]["passes"]
    assert cases["exp · d · W1"]["n"] == 6


def test_from_init_and_wd_effect_pair_members():
    table = member_rows(
        [{"weight_decay": 0.0}, {"weight_decay": 0.01}],
        effective_rank=lambda r: 90.0 if r["weight_decay"] == 0 else 45.0 + r["seed"],
    )
    history = table[["group", "member", "layer"]].assign(epoch=0, effective_rank=100.0)
    check = {"kind": "from_init", "metric": "effective_rank", "comparison": ">=", "threshold": 0.8}
    check["where"] = {"weight_decay": "== 0"}
    result = run(check, table, history)
    assert [case["value"] for case in result["cases"]] == [0.9] and result["verdict"] == "supported"
    effect = {"kind": "wd_effect", "metric": "effective_rank", "comparison": "<=", "threshold": 0.9}
    result = run(effect, table)
    assert [case["value"] for case in result["cases"]] == pytest.approx([46 / 90])
    assert result["cases"][0]["case"] == "exp · d · wd=0.01"


def test_tau_per_data_set():
    table = member_rows(
        [{"weight_decay": wd} for wd in (0.0, 0.001, 0.01, 0.1)],
        seeds=(0,),
        layers=(1, 2),
        effective_rank=lambda r: 100 - 500 * r["weight_decay"],
        gap=lambda r: 0.1 - r["weight_decay"],
    )
    check = {"kind": "tau", "metric": "effective_rank", "comparison": ">=", "threshold": 0.5}
    result = run(check, table)
    assert [case["value"] for case in result["cases"]] == [1.0] and result["cases"][0]["n"] == 4


def test_verdicts_pool_the_cases_of_all_checks():
    assert claims.verdict_of([{"passes": True}, {"passes": None}]) == "supported"
    assert claims.verdict_of([{"passes": False}, {"passes": None}]) == "contradicted"
    assert claims.verdict_of([{"passes": True}, {"passes": False}]) == "mixed"
    assert claims.verdict_of([{"passes": None}]) == claims.verdict_of([]) == "inconclusive"


def registry() -> dict:
    return yaml.safe_load((ROOT / "config" / "claims.yaml").read_text())


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
        (lambda r: r["claims"]["A1"]["checks"][0].update(statistic="tau"), "does not apply"),
        (lambda r: r["claims"]["A1"]["checks"][0]["where"].update(lr="=< 3"), "cannot read"),
        (lambda r: r["claims"]["A1"]["checks"][0]["where"].update(colour=1), "unknown column"),
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
    table = member_rows([{}], residual_2=0.01)
    result = evaluate(registry(), small_config(["A1"]), {"exp": table}, {"exp": None})
    verdicts = {claim["id"]: claim for claim in result["claims"]}
    assert verdicts["A1"]["verdict"] == "supported" and verdicts["A1"]["experiments"] == ["exp"]
    assert verdicts["B7"]["verdict"] == "inconclusive"
    assert verdicts["B7"]["evidence"] == "no experiment of this config bears on it"
    assert [c["id"] for c in verdicts["A1"]["concerns"]] == ["C1", "C3", "C6", "C7", "C8"]
