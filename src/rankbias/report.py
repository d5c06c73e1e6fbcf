"""Render the self-contained HTML report: tables, inline figures, methods and provenance.

One file, no external requests: figures are inline SVG (text as text, ids made unique per
figure) labelled with what they show, CSS is inline. It only renders: every number is read from
the workflow's outputs (claims.json, results/statistics/, run and data records, the figures), every
caption, note and metric definition from report/templates/text.yaml beside the template.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import yaml
from markupsafe import Markup

from rankbias import __version__
from rankbias.plan import DEFAULT_FIGURES, format_number
from rankbias.provenance import SHORT, code_groups, code_record, source_commit, source_digest
from rankbias.storage import read_json, write_text

TEXT_FILE = "text.yaml"  # beside the template: the report's prose
PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "seaborn",
    "matplotlib",
    "snakemake",
    "jinja2",
    "safetensors",
)


def _number(value, digits: int = 3) -> str:
    """Table text: 3 significant digits, integers as such, ∞ for infinite bounds, – for missing."""
    if value is None or np.isnan(value):
        return "–"
    if np.isinf(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(value, int | np.integer) or (float(value).is_integer() and abs(value) < 1e6):
        return f"{int(value)}"
    return f"{value:.{digits}g}"


def _formatted(rows: list[dict]) -> list[dict]:
    """Table rows as text: numbers by `_number`, labels and flags as they are."""
    return [
        {k: v if isinstance(v, str | bool) else _number(v) for k, v in row.items()} for row in rows
    ]


def experiment_tables(summary: dict, block: dict, words: dict) -> list[dict]:
    """The tables of one experiment's section, each {title, note, rows}, from its statistics
    (results/statistics/<experiment>.json) and the words of text.yaml; empty ones dropped."""
    tables = summary["tables"]
    deep = tables["deep"]
    paper_b = deep or {"B7", "B8"} & set(block.get("claims") or [])
    where = "every hidden layer" if deep else "W1"
    names = ["rank", "regime", "learned", "paper_a", "trends", "generalization", "tau"]
    names += ["wd_benefit", *(("paper_b", "output") if paper_b else ()), "conv", "reported"]
    extra = ("trends", "tau", "wd_benefit", "conv", "reported")
    rows = {**tables, **{name: summary.get(name, []) for name in extra}}
    out = []
    for name in names:
        text = words["tables"][name]
        title = text["title"].format(where=where, sweep=tables["sweep"])
        out.append({"title": title, "note": text["note"], "rows": _formatted(rows[name])})
    return [table for table in out if table["rows"]]


SVG_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)([^"()]+)')
COMPRESS_ABOVE = 40_000  # bytes: larger figures travel gzip-compressed, unpacked by the browser


def inline_figure(path: Path, prefix: str) -> dict:
    """An SVG figure for inline use: ids (and the references to them) prefixed so that two
    figures never share one, labelled by its <desc> (what it shows) for screen readers. A large
    figure is gzip-compressed (base64), and the page's one script unpacks it in place
    (DecompressionStream: no request, no library); `gz` holds it, `svg` the small ones."""
    text = path.read_text()
    text = text[text.index("<svg") :]
    text = SVG_REFERENCE.sub(lambda m: f"{m[1]}{prefix}-{m[2]}", text)
    found = re.search(r"<desc>(.*?)</desc>", text, flags=re.S)
    alt = found[1] if found else ""  # already XML-escaped
    text = text.replace("<svg", f'<svg role="img" aria-label="{alt}"', 1)
    if len(text.encode()) <= COMPRESS_ABOVE:
        return {"svg": Markup(text), "gz": None, "alt": Markup(alt), "file": str(path)}
    packed = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    return {
        "svg": None,
        "gz": base64.b64encode(packed).decode(),
        "alt": Markup(alt),
        "file": str(path),
    }


def _range(values) -> str:
    values = sorted({v for v in values if v is not None and v == v})
    if not values:
        return "–"
    low, high = format_number(values[0]), format_number(values[-1])
    return low if low == high else f"{low}–{high}"


def setting_summary(scope: dict, train_sizes: dict[str, int]) -> str:
    """One experiment's setting in a line, from its scope values (rankbias.summaries): data
    (training rows), depth, width, training length, weight decays, seeds."""
    data = ", ".join(
        f"{name} ({train_sizes[name]:,} train)" if name in train_sizes else name
        for name in scope["dataset"]
    )
    length = f"{_range(scope['epochs'])} epochs"
    if scope.get("steps"):
        length += f" ({_range(scope['steps'])} steps)"
    return (
        f"{data}; L = {_range(scope['depth'])}, H = {_range(scope['width'])}; {length}; "
        f"wd {_range(scope['weight_decay'])}; {len(scope['seed'])} seeds"
    )


def _data_size(name: str, datasets: dict) -> str:
    size = datasets.get(name, {}).get("train_size")
    return f"{name} ({size:,} rows)" if isinstance(size, int) else f"{name} (all rows)"


def paper_scale(path: Path | None) -> list[dict]:
    """What config/paper.yaml runs instead, experiment by experiment (its training lengths,
    data sizes and seeds), so the scope box can say how a paper-scale run differs."""
    if path is None or not path.exists():
        return []
    config = yaml.safe_load(path.read_text()) or {}
    datasets = config.get("datasets", {})
    rows = []
    for name, block in (config.get("experiments") or {}).items():
        runs = block.get("runs", [])
        lengths = sorted(
            {f"{r['steps']} steps" if r.get("steps") else f"{r.get('epochs')} epochs" for r in runs}
        )
        sizes = sorted({_data_size(r["dataset"], datasets) for r in runs})
        seeds = sorted({len(r.get("seeds", [])) for r in runs})
        rows.append(
            {
                "experiment": name,
                "data": ", ".join(sizes),
                "length": ", ".join(lengths),
                "seeds": ", ".join(map(str, seeds)),
            }
        )
    return rows


def run_scope(
    scopes: dict[str, dict],
    data_infos: list[dict],
    runs: list[dict],
    verdicts: dict,
    paper_config: Path | None,
    checkpoint_experiments: list[str] = (),
) -> dict:
    """The scope-and-fidelity box: what this run is (every experiment's scope values), claim by
    claim beside the paper's own setting, and what a paper-scale run changes (when the papers'
    claims are judged). Experiments of checkpoints trained elsewhere are counted apart."""
    train_sizes = {info["name"]: int(info["n_train"]) for info in data_infos}
    experiments = {name: setting_summary(scope, train_sizes) for name, scope in scopes.items()}
    merged = {
        key: [value for scope in scopes.values() for value in scope.get(key, [])]
        for key in ("seed", "epochs", "steps")
    }
    seeds = sorted({int(seed) for seed in merged["seed"]})
    claims = [
        {
            "id": claim["id"],
            "paper": claim.get("paper_setting", ""),
            "run": [
                f"{name}: {experiments[name]}"
                for name in claim["experiments"]
                if name in experiments
            ],
        }
        for claim in verdicts["claims"]
    ]
    elsewhere = set(checkpoint_experiments)
    train_s = sum(run["wall_time_s"] for run in runs)
    papers_claims = set(c["id"] for c in verdicts["claims"]) - set(
        (verdicts.get("user") or {}).get("claims", [])
    )
    return {
        "members": sum(s["members"] for name, s in scopes.items() if name not in elsewhere),
        "checkpoints": sum(s["members"] for name, s in scopes.items() if name in elsewhere),
        "experiments": len(scopes),
        "seeds": f"{len(seeds)} ({_range(seeds)})",
        "epochs": _range(merged["epochs"]),
        "steps": _range(merged["steps"]),
        "data": ", ".join(f"{name} {size:,}" for name, size in sorted(train_sizes.items())),
        "devices": ", ".join(sorted({run["device"] for run in runs})),
        "train_time": f"{train_s:.0f} s" if train_s < 60 else f"{train_s / 60:.1f} minutes",
        "claims": claims,
        "paper_scale": paper_scale(paper_config) if papers_claims else [],
    }


def result_codes(
    data_records: list[dict],
    runs: list[dict],
    measured: dict[str, dict],
    summaries: dict[str, dict],
    verdicts: dict,
) -> dict[str, dict]:
    """Every result this report reads, by name, with the `code` record it carries."""
    return {
        **{f"data {record['name']}": record.get("code") for record in data_records},
        **{
            f"training {run['spec']['experiment']}/{run['spec']['group']}": run.get("code")
            for run in runs
        },
        **{f"measurement {name}": record.get("code") for name, record in measured.items()},
        **{f"statistics {name}": summary.get("code") for name, summary in summaries.items()},
        "verdicts (claims.json)": verdicts.get("code"),
        "this report": code_record(),
    }


def provenance(runs: list[dict], meta: dict, codes: dict[str, dict]) -> dict:
    """Versions, the commit of the workflow's source tree, and the code behind every result:
    `code_groups` holds more than one entry when results were made by different code."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "rankbias": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": source_commit(),
        "source_sha256": source_digest()[:SHORT],
        "code_groups": code_groups(codes),
        "config_sha256": hashlib.sha256(
            json.dumps(meta.get("config", {}), sort_keys=True).encode()
        ).hexdigest()[:16],
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "devices": sorted({run["device"] for run in runs}),
        "jobs": [
            {
                "job": f"{run['spec']['experiment']}/{run['spec']['group']}",
                "members": len(run["spec"]["members"]),
                "device": run["device"],
                "threads": run.get("threads", "–"),
                "train_s": f"{run['wall_time_s']:.1f}",
            }
            for run in runs
        ],
        "train_total_s": f"{sum(run['wall_time_s'] for run in runs):.0f}",
    }


def preflight_text(record: dict | None) -> str:
    """One line on the device check that preceded training (rankbias.preflight)."""
    if record is None:
        return "not run"
    passed = sum(check["passed"] for check in record["checks"])
    device = record.get("gpu", record["device"])
    driver = f", driver {record['driver']}" if "driver" in record else ""
    note = f" ({record['note']})" if "note" in record else ""
    return (
        f"{passed} of {len(record['checks'])} checks passed on {device}{driver}; torch "
        f"{record['torch']}, CUDA build {record['cuda_build'] or 'none'}{note}"
    )


VERDICT_MARK = {"supported": "✓", "contradicted": "✗", "mixed": "◐", "inconclusive": "?"}
FINDING_MARK = {"borne out": "✓", "not borne out": "✗", "undecided": "?", "context": "·"}
RESULT_MARK = {
    "pass": "✓ pass",
    "fail": "✗ fail",
    "undecided": "– undecided",
    "underpowered": "○ underpowered",
}
CASE_COLUMNS = {  # case key -> column header of the numbers table, in this order
    "case": "case",
    "value": "seed mean",
    "ci": "95 % CI",
    "p": "p",
    "n": "n",
    "median": "median",
    "grid_spread": "grid spread",
    "grid_points": "grid points",
    "best_wd": "best wd (validation)",
    "error_wd0": "test error at wd = 0",
    "error_best": "test error at best wd",
    "relative_to_median": "bound (median)",
    "test": "test",
}
OPEN_CASES = 12  # numbers tables up to this many rows are shown open, longer ones folded


def case_rows(check: dict) -> list[dict]:
    """The numbers table of one check: every case with its outcome, the seed statistic with its
    95 % interval and p-value, and why a case is undecided, underpowered or fails otherwise."""
    keys = [k for k in CASE_COLUMNS if any(case.get(k) is not None for case in check["cases"])]
    rows = []
    for case in check["cases"]:
        row = {}
        for key in keys:
            value = case.get(key)
            if key == "ci":
                value = (
                    f"[{_number(value[0])}, {_number(value[1])}]"
                    if value and None not in value
                    else "–"
                )
            row[CASE_COLUMNS[key]] = (
                value if isinstance(value, str) else _number(np.nan if value is None else value)
            )
        row["outcome"] = RESULT_MARK[case["outcome"]]
        reason = case.get("reason", "")
        if case.get("excluded") and case["outcome"] in ("pass", "fail"):
            reason = (reason + "; " if reason else "") + f"left out: {case['excluded']}"
        row["reason"] = reason
        rows.append(row)
    return rows


def _stability_text(stability: dict) -> str:
    share = f"{stability['agreement']:.0%} of {stability['resamples']} seed resamples agree"
    if stability["stable"] or not stability.get("competing"):
        return share
    return f"unstable: {share}; the competing verdict is {stability['competing']}"


def figure_entry(key: tuple[str, str], figure_uris: dict, placed: dict, captions: dict) -> dict:
    """One figure of a section: inline unless placed earlier (then a link to where it is)."""
    experiment, kind = key
    return {
        "id": f"fig-{experiment}-{kind}",
        "experiment": experiment,
        "title": captions[kind]["title"],
        "caption": captions[kind]["caption"],
        "inline": None if key in placed else figure_uris[key],
        "shown_in": placed.get(key),
    }


def claim_groups(claim_list: list[dict], verdicts: dict) -> list[dict]:
    """The papers' claims and the user's (`user_claims_file`), each under its own heading; a
    claim's `origin` says whose it is ("Paper A", or the user registry's reference)."""
    user = verdicts.get("user") or {}
    mine = set(user.get("claims", []))
    for claim in claim_list:
        reference = verdicts["papers"].get(claim["paper"], "")
        claim["origin"] = reference if claim["id"] in mine else f"Paper {claim['paper']}"
    groups = [
        {
            "id": "claims",
            "heading": "Claims, one by one",
            "glance": "The papers' claims",
            "claims": [c for c in claim_list if c["id"] not in mine],
        },
        {
            "id": "user-claims",
            "heading": user.get("title", ""),
            "glance": user.get("title", ""),
            "claims": [c for c in claim_list if c["id"] in mine],
        },
    ]
    return [group for group in groups if group["claims"]]


def claim_sections(
    verdicts: dict, figure_uris: dict, experiment_kinds: dict, captions: dict
) -> tuple[list, dict]:
    """Claims in registry order, each figure embedded at its first claim and linked after that;
    `captions`: text.yaml's figures.

    Returns the sections and {(experiment, kind): claim id} of the figures placed."""
    placed: dict[tuple[str, str], str] = {}
    sections = []
    for claim in verdicts["claims"]:
        figures = []
        for kind in claim["figures"]:
            for experiment in claim["experiments"]:
                key = (experiment, kind)
                if kind not in experiment_kinds.get(experiment, ()):
                    continue
                figures.append(figure_entry(key, figure_uris, placed, captions))
                placed.setdefault(key, claim["id"])
        sections.append(
            {
                **claim,
                "mark": VERDICT_MARK[claim["verdict"]],
                "stability_text": _stability_text(claim["stability"]),
                "checks": [
                    {
                        **check,
                        "rows": case_rows(check),
                        "open": len(check["cases"]) <= OPEN_CASES,
                        "mark": VERDICT_MARK[check["verdict"]],
                    }
                    for check in claim["checks"]
                ],
                "figure_list": figures,
            }
        )
    return sections, placed


def deciding_share(concern: dict) -> str:
    """The number a concern's finding rests on: how many decided cases point to "borne out",
    against the share its registry entry asks for."""
    toward = "pass" if concern["borne_out_when"] == "supported" else "fail"
    counts = concern["counts"]
    decided = counts.get("pass", 0) + counts.get("fail", 0)
    if not decided:
        return "No case decided: undecided."
    share = concern.get("borne_out_share", 0.5)
    return (
        f"{counts.get(toward, 0)} of {decided} decided cases point to borne out (all: borne "
        f"out; none: not; in between, borne out from {share:.0%} of them)."
    )


def concern_index(verdicts: dict) -> list[dict]:
    """Each concern with its finding, the number that decides it, its evidence and the claims
    whose sections answer it."""
    return [
        {
            **concern,
            "decides": deciding_share(concern) if concern["checks"] else "",
            "mark": FINDING_MARK[concern["finding"]],
            "stability_text": _stability_text(concern["stability"]),
            "checks": [
                {**check, "rows": case_rows(check), "open": len(check["cases"]) <= OPEN_CASES}
                for check in concern["checks"]
            ],
        }
        for concern in verdicts["concerns"]
    ]


def load_words(template_dir: Path) -> dict:
    """The report's prose (report/templates/text.yaml): figure captions, table notes, metrics."""
    return yaml.safe_load((template_dir / TEXT_FILE).read_text())


def build_context(
    meta: dict,
    words: dict,
    figures: list[Path],
    data_infos: list[Path],
    runs: list[Path],
    claims: Path,
    statistics: list[Path],
    paper_config: Path | None = None,
    measured: list[Path] = (),
    preflight: Path | None = None,
) -> dict:
    """Everything the template shows, from the workflow's outputs and `words` (`load_words`)."""
    summaries = {path.stem: read_json(path) for path in statistics}
    figure_paths = {(path.parent.name, path.name): path for path in figures}
    figure_uris = {  # short id prefixes: a figure has thousands of references
        (exp, name.removesuffix(".svg")): inline_figure(path, f"f{number}")
        for number, ((exp, name), path) in enumerate(figure_paths.items())
    }
    experiment_kinds = {
        name: block.get("figures") or list(DEFAULT_FIGURES)
        for name, block in meta.get("experiments", {}).items()
    }
    verdicts = read_json(claims)
    captions = words["figures"]
    claim_list, placed = claim_sections(verdicts, figure_uris, experiment_kinds, captions)
    experiments = []
    for name, summary in summaries.items():
        block = meta.get("experiments", {}).get(name, {})
        tables = summary["tables"]
        kinds = block.get("figures") or list(DEFAULT_FIGURES)
        experiments.append(
            {
                "name": name,
                "title": block.get("title", name),
                "description": block.get("description", ""),
                "claims": block.get("claims", []),
                "settings": tables["settings"],
                "sweep": tables["sweep"],
                "tables": experiment_tables(summary, block, words),
                "counts": tables["counts"],
                "excluded": tables["excluded"],
                "figures": [
                    figure_entry((name, kind), figure_uris, placed, captions) for kind in kinds
                ],
            }
        )
    run_records = [read_json(path) for path in runs]
    data_records = [read_json(path) | {"name": path.stem} for path in data_infos]
    checked = read_json(preflight) if preflight else None
    codes = result_codes(
        data_records,
        run_records,
        {path.name.removesuffix(".code.json"): read_json(path) for path in measured},
        summaries,
        verdicts,
    ) | ({"preflight": checked.get("code")} if checked else {})
    verdict_counts = {v: sum(c["verdict"] == v for c in verdicts["claims"]) for v in VERDICT_MARK}
    groups = claim_groups(claim_list, verdicts)
    scopes = {name: summary["tables"]["scope"] for name, summary in summaries.items()}
    return {
        "claims": claim_list,
        "claim_groups": groups,
        "user_claims": list((verdicts.get("user") or {}).get("claims", [])),
        "concerns": concern_index(verdicts),
        "papers": verdicts["papers"],
        "verdict_counts": verdict_counts,
        "verdict_marks": VERDICT_MARK,
        "how_sure": verdicts["summary"],
        "alpha": verdicts.get("alpha", 0.05),
        "experiments": experiments,
        "datasets": data_records,
        "scope": run_scope(
            scopes,
            data_records,
            run_records,
            verdicts,
            paper_config,
            [name for name, block in meta["experiments"].items() if block.get("checkpoints")],
        ),
        "provenance": provenance(run_records, meta, codes)
        | {"registry": verdicts.get("registry", {}), "preflight": preflight_text(checked)},
        "metric_table": [(entry["name"], entry["definition"]) for entry in words["metrics"]],
    }


def render(template_dir: Path, context: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("index.html.j2").render(**context)


def write_report(
    out: Path,
    template_dir: Path,
    meta: dict,
    figures: list[Path],
    data_infos: list[Path],
    runs: list[Path],
    claims: Path,
    statistics: list[Path],
    paper_config: Path | None = None,
    measured: list[Path] = (),
    preflight: Path | None = None,
) -> None:
    words = load_words(template_dir)
    context = build_context(
        meta,
        words,
        figures,
        data_infos,
        runs,
        claims,
        statistics,
        paper_config,
        measured,
        preflight,
    )
    write_text(out, render(template_dir, context))
