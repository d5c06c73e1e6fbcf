"""The claim registry's vocabulary and its cross-checks: what a verdict rule may name.

Light on purpose (no torch, no plotting): Snakemake imports it to check config/claims.yaml against
the run's config before any job starts. Evaluating the rules is rankbias.claims' job.
"""

from __future__ import annotations

import operator
import re

from rankbias.plan import FIGURE_KINDS

GALANTI_EPS = (0.1, 0.3, 0.5)  # ε of Paper B's Theorem 3.3 evaluated (rankbias.paper_b)
VERDICTS = ("supported", "contradicted", "mixed", "inconclusive")
FINDINGS = ("borne out", "not borne out", "undecided", "context")  # of one concern
# The setting axes and their short labels (case names, figure legends, scope sentences).
AXIS_LABEL = {
    "depth": "L",
    "width": "H",
    "batch_size": "B",
    "lr": "lr",
    "weight_decay": "wd",
    "wd_function": "g",
}
# Rank and norm metrics of a weight matrix (rankbias.spectra), at the end and at logged epochs.
SPECTRUM_METRICS = (
    "fro_norm",
    "spectral_norm",
    "rank_galanti",
    "rank_rel",
    "rank_cut",
    "stable_rank",
    "effective_rank",
    "residual_1",
    "residual_2",
)
# Paper A's quantities, on first-layer rows of two-layer nets (rankbias.paper_a).
PAPER_A_COLUMNS = (
    "eps_batch_max",
    "eps_batch_mean",
    "eps_full",
    "thm26_bound",
    "thm26_ratio",
    "dist_rank2",
    "units_collapsed",
    "units_dead",
    "units_linear",
    "units_zero_input",
)
# Model-level generalization bounds and the margin they use (rankbias.bounds).
BOUND_COLUMNS = (
    "bound_paramcount_full",
    "bound_paramcount_rank2",
    "bound_paramcount_rankr",
    "bound_grs",
    "margin_gamma",
    "bound_spectral",
)
# The controls of science.md (rankbias.controls): what weight decay does besides learning low rank.
CONTROL_COLUMNS = ("init_factor", "decay_horizon", "movement")
LEARNED_METRICS = tuple(f"{name}_learned" for name in SPECTRUM_METRICS)  # of W_T − s_T·W_0
LIVE_METRICS = tuple(f"{name}_live" for name in SPECTRUM_METRICS)  # V over its live units
PLATEAU_METRICS = ("effective_rank", "effective_rank_learned", "residual_2", "train_loss")
PLATEAU_COLUMNS = tuple(
    f"{kind}_{name}" for name in PLATEAU_METRICS for kind in ("plateau_change", "plateaued")
)
# Computed by the verdict engine from measured columns (rankbias.summaries.with_derived).
DERIVED_COLUMNS = ("eps_rel", "units_switching", "test_error", "val_error")
# Columns of results/tables/<experiment>.csv a check may name as `metric` or `relative_to`.
METRICS = (
    "train_loss",
    "val_loss",
    "test_loss",
    "train_acc",
    "val_acc",
    "test_acc",
    "train_r2",
    "gap",
    *SPECTRUM_METRICS,
    *LEARNED_METRICS,
    *CONTROL_COLUMNS,
    *PLATEAU_COLUMNS,
    *(f"{name}_{eps}" for eps in GALANTI_EPS for name in ("galanti_bound", "sv_above", "rank_eps")),
    *PAPER_A_COLUMNS,
    *LIVE_METRICS,
    *BOUND_COLUMNS,
    "norm_ratio",
    "steps",
    *DERIVED_COLUMNS,
)
HYPER_COLUMNS = (
    "dataset",
    "loss",
    "depth",
    "width",
    "batch_norm",
    "batch_size",
    "epochs",
    "lr",
    "weight_decay",
    "wd_function",
)
COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
CONDITION = re.compile(r"^\s*(<=|>=|<|>|==|!=)\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")
CONDITION_OPS = {**COMPARISONS, "==": operator.eq, "!=": operator.ne}
MIN_TREND_SETTINGS = 3  # a rank correlation over two points is always +-1


class ClaimError(ValueError):
    """The claim registry is inconsistent with itself, the metrics or the run's config."""


# ---------------------------------------------------------------- registry validation


def claim_experiments(registry: dict, config: dict) -> dict[str, list[str]]:
    """Claim or concern id -> experiments of this config that list it under `claims` (config
    order)."""
    return {
        claim: [
            name
            for name, block in config["experiments"].items()
            if claim in block.get("claims", [])
        ]
        for claim in (*registry["claims"], *registry["concerns"])
    }


def check_registry(
    registry: dict, config: dict, source: str = "config/claims.yaml", config_source: str = "config"
) -> None:
    """Cross-references the schema cannot see; the error names the key and what is allowed."""
    ids = set(registry["claims"]) | set(registry["concerns"])
    for name, block in config["experiments"].items():
        for claim in block.get("claims", []):
            if claim not in ids:
                raise ClaimError(
                    f"{config_source}: experiments.{name}.claims: unknown claim or concern "
                    f"{claim!r}; "
                    f"{source} defines {', '.join(sorted(ids, key=id_order))}"
                )
    for claim, entry in registry["claims"].items():
        where = f"{source}: claims.{claim}"
        if entry["paper"] not in registry["papers"]:
            raise ClaimError(
                f"{where}.paper: unknown {entry['paper']!r}; "
                f"papers: {', '.join(registry['papers'])}"
            )
        for concern in entry["concerns"]:
            if concern not in registry["concerns"]:
                raise ClaimError(
                    f"{where}.concerns: unknown concern {concern!r}; "
                    f"defined: {', '.join(registry['concerns'])}"
                )
        for kind in entry.get("figures", []):
            if kind not in FIGURE_KINDS:
                raise ClaimError(
                    f"{where}.figures: unknown figure kind {kind!r}; "
                    f"allowed: {', '.join(FIGURE_KINDS)}"
                )
        for index, check in enumerate(entry["checks"]):
            _check_check(check, f"{where}.checks[{index}]", config)
    for concern, entry in registry["concerns"].items():
        for index, check in enumerate(entry.get("checks", [])):
            _check_check(check, f"{source}: concerns.{concern}.checks[{index}]", config)


def _check_check(check: dict, where: str, config: dict) -> None:
    for key in ("metric", "relative_to", "control_metric"):
        if key in check and check[key] not in METRICS:
            raise ClaimError(
                f"{where}.{key}: unknown metric {check[key]!r}; allowed: {', '.join(METRICS)}"
            )
    for name in check.get("versus", []):
        if name not in METRICS:
            raise ClaimError(f"{where}.versus: unknown metric {name!r}")
    for plateau in check.get("regime", {}).get("plateaued", []):
        if plateau not in PLATEAU_METRICS:
            raise ClaimError(
                f"{where}.regime.plateaued: {plateau!r} has no plateau record; "
                f"allowed: {', '.join(PLATEAU_METRICS)}"
            )
    eps = check.get("regime", {}).get("nontrivial_bound")
    if eps is not None and eps not in GALANTI_EPS:
        raise ClaimError(
            f"{where}.regime.nontrivial_bound: no Galanti bound at ε = {eps}; "
            f"allowed: {', '.join(map(str, GALANTI_EPS))}"
        )
    for name in check.get("experiments", []):
        if name not in config["experiments"]:
            raise ClaimError(
                f"{where}.experiments: {name!r} is not an experiment of this config; "
                f"defined: {', '.join(config['experiments'])}"
            )
    conditions = {**check.get("where", {}), **check.get("power_where", {})}
    for column, condition in {**conditions, **check.get("condition", {})}.items():
        if column not in HYPER_COLUMNS + METRICS:
            raise ClaimError(
                f"{where}.where: unknown column {column!r}; allowed: {', '.join(HYPER_COLUMNS)} "
                "or a metric"
            )
        if (
            isinstance(condition, str)
            and condition.lstrip()[:1] in "<>=!"
            and not CONDITION.match(condition)
        ):
            raise ClaimError(f'{where}.where.{column}: cannot read {condition!r}; write e.g. "> 0"')


def id_order(claim_id: str) -> tuple[str, int]:
    return claim_id[0], int(claim_id[1:])
