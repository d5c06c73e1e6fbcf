"""The claim registry's cross-checks: what a verdict rule may name (rankbias.vocabulary's
columns and axes) and how.

Light on purpose (no torch, no plotting): Snakemake imports it to check config/claims.yaml against
the run's config before any job starts. Evaluating the rules is rankbias.claims' job.
"""

from __future__ import annotations

import operator
import re

from rankbias.plan import FIGURE_KINDS
from rankbias.vocabulary import GALANTI_EPS, HYPER_COLUMNS, METRICS, PLATEAU_METRICS

COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
CONDITION = re.compile(r"^\s*(<=|>=|<|>|==|!=)\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")
CONDITION_OPS = {**COMPARISONS, "==": operator.eq, "!=": operator.ne}
MIN_TREND_SETTINGS = 3  # a rank correlation over two points is always +-1


class ClaimError(ValueError):
    """The claim registry is inconsistent with itself, the metrics or the run's config."""


# ---------------------------------------------------------------- the user's registry

USER_TITLE = "Your claims"  # the report's heading of a user registry without a `title`


def combined_registry(
    papers: dict, user: dict | None, papers_file: str, user_file: str = ""
) -> dict:
    """The papers' registry plus a user's (`user_claims_file`): same schema, ids that must not
    collide. `user` lists the user's claim and concern ids and the heading of their section."""
    if not user:
        return {**papers, "user": {"title": "", "claims": [], "concerns": [], "file": ""}}
    combined = {key: dict(papers[key]) for key in ("papers", "claims", "concerns")}
    for key in ("papers", "claims", "concerns"):
        for name, entry in user.get(key, {}).items():
            if name in combined[key]:
                raise ClaimError(
                    f"{user_file}: {key}.{name}: already defined in {papers_file}; give your "
                    f"{key[:-1]} another id"
                )
            combined[key][name] = entry
    combined["user"] = {
        "title": user.get("title", USER_TITLE),
        "claims": list(user["claims"]),
        "concerns": list(user.get("concerns", {})),
        "file": user_file,
    }
    return combined


def load_registry(papers_file: str, user_files: list[str] = ()) -> dict:
    """The papers' registry and the user's (at most one file), combined (validated against the
    schema by rankbias.config before any job ran)."""
    import yaml

    with open(papers_file) as handle:
        papers = yaml.safe_load(handle)
    user_file = user_files[0] if user_files else ""
    user = None
    if user_file:
        with open(user_file) as handle:
            user = yaml.safe_load(handle)
    return combined_registry(papers, user, papers_file, user_file)


def selected(registry: dict, only: dict | None) -> dict:
    """The registry cut to `only.claims` of the config: `user` keeps the user's claims and
    concerns, a list keeps those ids (and the concerns the kept claims answer)."""
    wanted = (only or {}).get("claims")
    if not wanted:
        return registry
    keep = set(registry["user"]["claims"] + registry["user"]["concerns"])
    if wanted != "user":
        keep = set(wanted)
        for claim in wanted:
            keep |= set(registry["claims"].get(claim, {}).get("concerns", []))
    return {
        **registry,
        "claims": {k: v for k, v in registry["claims"].items() if k in keep},
        "concerns": {k: v for k, v in registry["concerns"].items() if k in keep},
    }


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
    """Cross-references the schema cannot see; the error names the file (the papers' registry
    `source`, or the user's for the user's claims and concerns), the key and what is allowed."""
    ids = set(registry["claims"]) | set(registry["concerns"])
    user = registry.get("user") or {"claims": [], "concerns": [], "file": ""}

    def file_of(kind: str, name: str) -> str:
        return user["file"] if name in user[kind] else source

    wanted = config.get("only", {}).get("claims")
    if wanted == "user" and not registry.get("user", {}).get("claims"):
        raise ClaimError(
            f"{config_source}: only.claims: user, but no user_claims_file gives claims of yours"
        )
    for claim in wanted if isinstance(wanted, list) else []:
        if claim not in registry["claims"]:
            raise ClaimError(
                f"{config_source}: only.claims: unknown claim {claim!r}; defined: "
                f"{', '.join(sorted(registry['claims'], key=id_order))}"
            )
    for name, block in config["experiments"].items():
        for claim in block.get("claims", []):
            if claim not in ids:
                raise ClaimError(
                    f"{config_source}: experiments.{name}.claims: unknown claim or concern "
                    f"{claim!r}; "
                    f"{' + '.join(filter(None, [source, user['file']]))} "
                    f"define{'' if user['file'] else 's'} "
                    f"{', '.join(sorted(ids, key=id_order))}"
                )
    for claim, entry in registry["claims"].items():
        where = f"{file_of('claims', claim)}: claims.{claim}"
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
            where = f"{file_of('concerns', concern)}: concerns.{concern}.checks[{index}]"
            _check_check(check, where, config)


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
