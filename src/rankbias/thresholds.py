"""The thresholds the verdict rules read, in the form a figure draws them.

A figure that shows a metric a rule judges draws the rule's line on that panel (and shades the
side where the claim passes), so a reader sees the rule next to the data. Read from the claim
registry: a threshold changed in config/claims.yaml moves the line too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rankbias.registry import CONDITION


@dataclass
class RuleLine:
    """One threshold on one metric: `subject` (A1, C3, ...) passes when metric `comparison`
    `value`; a `context` rule is shown, never counted. `kind` says how a figure draws it: "level"
    (a horizontal line), "trend" (`value` is the smallest spread the trend must move), "ratio"
    (metric / `relative_to` against `value`), "effect" (metric over its value at wd = 0 against
    `value`), "benefit" (test error below wd = 0's by more than `value`; `band` for B6) or
    "regime" (a condition a case must meet to be decided). `axis` is a trend's axis; `where` the
    rule's row selection."""

    subject: str
    metric: str
    comparison: str
    value: float
    kind: str = "level"
    counted: bool = True
    relative_to: str = ""
    band: tuple[float, float] | None = None
    axis: str = ""
    where: dict = field(default_factory=dict)

    @property
    def gid(self) -> str:
        """The SVG id of the drawn line: `rule-<subject>-<metric>` (tests look for it)."""
        return f"rule-{self.subject}-{self.metric}"


def _applies(check: dict, experiment: str | None) -> bool:
    wanted = check.get("experiments")
    return experiment is None or not wanted or experiment in wanted


def check_lines(subject: str, check: dict) -> list[RuleLine]:
    """The lines one check draws (none for a kind no figure can show as a line), each with the
    check's `where` (a figure draws a rule only on the rows it reads)."""
    lines = _lines(subject, check)
    for line in lines:
        line.where = check.get("where", {})
    return lines


def _lines(subject: str, check: dict) -> list[RuleLine]:
    kind, counted = check["kind"], check.get("role", "decides") == "decides"
    comparison = check.get("comparison", ">=")
    if kind == "level" and "relative_to" in check:
        metric, relative_to = check["metric"], check["relative_to"]
        return [
            RuleLine(subject, metric, comparison, check["threshold"], "ratio", counted, relative_to)
        ]
    if kind == "level" and "target" in check:  # |metric − target| <= t: a band around the target
        target, width = check["target"], check["threshold"]
        low, high = (">=", "<=") if comparison.startswith("<") else ("<", ">")
        return [
            RuleLine(subject, check["metric"], low, target - width, "level", counted),
            RuleLine(subject, check["metric"], high, target + width, "level", counted),
        ]
    if kind == "level":
        lines = [
            RuleLine(subject, check["metric"], comparison, check["threshold"], "level", counted)
        ]
        if "control_metric" in check:
            lines.append(
                RuleLine(
                    subject,
                    check["control_metric"],
                    check.get("control_comparison", comparison),
                    check.get("control_threshold", check["threshold"]),
                    "level",
                    counted,
                )
            )
        return lines
    if kind in ("trend", "wd_effect"):
        value = check.get("min_spread", 0.0) if kind == "trend" else check["threshold"]
        shown = "trend" if kind == "trend" else "effect"
        return [
            RuleLine(
                subject,
                m,
                comparison,
                value,
                shown,
                counted,
                axis=check.get("axis", ""),
                where=check.get("where", {}),
            )
            for m in (check["metric"], check.get("control_metric"))
            if m
        ]
    if kind == "wd_benefit":
        band = tuple(check["band"]) if "band" in check else None
        value = check.get("threshold", band[0] if band else 0.0)
        return [RuleLine(subject, "test_error", comparison, value, "benefit", counted, band=band)]
    if kind == "share":
        lines = []
        for column, condition in check["condition"].items():
            match = CONDITION.match(condition) if isinstance(condition, str) else None
            if match and match.group(1) in ("<=", "<", ">=", ">"):
                value = float(match.group(2))
                lines.append(RuleLine(subject, column, match.group(1), value, "regime", counted))
        return lines
    return []


def rule_lines(
    registry: dict, subjects: list[str], experiment: str | None = None
) -> list[RuleLine]:
    """Every line the checks of `subjects` (claim and concern ids) draw in `experiment`'s
    figures; a check whose `experiments` leave this one out draws nothing."""
    entries = {**registry.get("concerns", {}), **registry.get("claims", {})}
    lines = []
    for subject in subjects:
        for check in entries.get(subject, {}).get("checks", []):
            if _applies(check, experiment):
                lines += check_lines(subject, check)
    return lines


def lines_for(lines: list[RuleLine], metric: str, kind: str = "level") -> list[RuleLine]:
    return [line for line in lines if line.metric == metric and line.kind == kind]
