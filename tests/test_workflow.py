"""The Snakemake workflow itself: lint, format, dry run, config refusal, a tiny end-to-end run."""

import json
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BIN, ROOT, planned_jobs, project, run, snakemake

from rankbias import plan
from rankbias.summaries import with_derived
from rankbias.vocabulary import DERIVED_COLUMNS, FINDINGS, METRICS, VERDICTS


def test_lint_reports_nothing():
    result = run([str(BIN / "snakemake"), "--lint"], cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_snakefmt_and_ruff_are_clean():
    run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"], cwd=ROOT)
    run([str(BIN / "ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT)


def test_default_config_dry_run_plans_the_audit(tmp_path):
    workdir = project(tmp_path, ROOT / "config" / "config.yaml")
    counts = planned_jobs(snakemake(workdir, "-n", "--quiet", "rules"))
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    sources = {spec["source"] for spec in config["datasets"].values()} - {"teacher"}
    assert counts["fetch_dataset"] == len(sources) == 3  # MNIST, Fashion-MNIST, housing
    assert counts["train"] == len(plan.jobs(config))
    assert counts["figure"] == sum(
        len(plan.experiment_figures(block)) for block in config["experiments"].values()
    )
    assert counts["measure"] == len(config["experiments"]) and counts["report"] == 1


@pytest.mark.workflow
def test_tiny_config_runs_end_to_end(tiny_run):
    workdir = tiny_run
    html = (workdir / "results" / "report" / "index.html").read_text()
    assert "Tiny end-to-end check" in html
    # sections follow the config's order (tiny_batch first), not the alphabet
    assert html.index("Tiny batch-size sweep") < html.index("Tiny end-to-end check")
    # 6 default figures in each of 2 experiments, the 5 listed by tiny_deep and the 2 of
    # tiny_conv: inline SVG or, when large, gzip-compressed for the page's one script to unpack
    assert html.count('<svg role="img"') + html.count("data-gz=") == 6 * 2 + 5 + 2
    assert "The output layer, reported apart" in html and "Seed-combined Spearman trend" in html
    assert "How sure are we?" in html and "seed resamples agree" in html
    statistics = json.loads((workdir / "results" / "statistics" / "tiny_deep.json").read_text())
    assert set(statistics) == {"trends", "tau", "wd_benefit", "conv", "reported", "tables", "code"}
    tables = statistics["tables"]  # what the report renders instead of reading results/tables
    assert tables["deep"] and tables["output"] and tables["settings"]
    assert tables["scope"]["members"] == sum(tables["counts"].values())
    conv = json.loads((workdir / "results" / "statistics" / "tiny_conv.json").read_text())["conv"]
    assert [row["m_l"] for row in conv] == [784, 196, 1]  # conv, pool, conv, head on 28 × 28
    assert "Conv layers: Paper B" in html  # the conv table and its note
    assert "http://" not in html.replace("http://www.w3.org", "")
    assert html.count("<script") == 1 and "<script src" not in html and "<link" not in html
    table = pd.read_csv(workdir / "results" / "tables" / "tiny.csv")
    # teacher: 4 members x 2 layers; housing: 2 members x (2 + 3 layers)
    assert len(table) == 4 * 2 + 2 * (2 + 3)
    first = table[table["layer"] == 1]
    two_layer = first["depth"] == 2  # Paper A's quantities exist for two-layer nets only
    assert (first.loc[two_layer, "eps_batch_max"] > 0).all()
    assert first.loc[~two_layer, "eps_batch_max"].isna().all()
    assert np.isinf(first.loc[two_layer & (first["weight_decay"] == 0), "thm26_bound"]).all()
    assert first.loc[two_layer, ["units_dead", "units_linear"]].stack().between(0, 1).all()
    batch = pd.read_csv(workdir / "results" / "tables" / "tiny_batch.csv")
    assert sorted(batch["batch_size"].unique()) == [16, 200]
    assert set(batch["wd_function"]) == {"constant", "target_abs"}
    assert set(table["status"]) <= {"ok", "diverged", "collapsed"}
    assert table["rank_galanti"].between(0, 16).all()
    assert (workdir / "results" / "figures" / "tiny" / "spectra.svg").stat().st_size > 1000
    deep = pd.read_csv(workdir / "results" / "tables" / "tiny_deep.csv")
    assert set(deep["layer"]) == {1, 2, 3} and deep["batch_norm"].all()
    assert deep["norm_ratio"].notna().all() and "eps_batch_max" not in deep
    # model-level bounds on every row; regression: no margin bound, vacuity against const_loss
    healthy = table[table["status"] == "ok"]
    assert (healthy["bound_grs"] > 0).all() and healthy["bound_spectral"].isna().all()
    vacuous = healthy["bound_grs"] >= healthy["const_loss"]
    assert (healthy["bound_grs_vacuous"] == vacuous).all()
    # every metric a claim rule may name is a column of the tables or derived from them
    columns = set(with_derived(table).columns) | set(with_derived(deep).columns)
    assert set(METRICS) <= columns and set(DERIVED_COLUMNS) <= columns
    # a verdict for every claim of the registry, and the report's summary shows each
    verdicts = json.loads((workdir / "results" / "claims.json").read_text())
    registry = yaml.safe_load((ROOT / "config" / "claims.yaml").read_text())
    assert [c["id"] for c in verdicts["claims"]] == sorted(
        registry["claims"], key=lambda cid: (cid[0], int(cid[1:]))
    )
    assert {c["verdict"] for c in verdicts["claims"]} <= set(VERDICTS)
    findings = {c["id"]: c["finding"] for c in verdicts["concerns"]}
    assert set(findings) == set(registry["concerns"])
    assert set(findings.values()) <= set(FINDINGS)
    assert findings["C4"] == findings["C11"] == "context"
    assert all(0 <= c["stability"]["agreement"] <= 1 for c in verdicts["claims"])
    assert verdicts["summary"]["claims"] == len(registry["claims"])
    by_id = {c["id"]: c for c in verdicts["claims"]}
    assert by_id["B7"]["experiments"] == ["tiny_deep", "tiny_conv"]
    assert by_id["B7"]["checks"][0]["cases"]
    assert by_id["A4"]["evidence"] == "no experiment of this config bears on it"
    assert html.count('<article class="claim"') == len(registry["claims"])
    assert html.count('class="badge') >= len(registry["claims"]) * 2  # summary + section
    # everything is up to date afterwards: nothing reruns
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout + snakemake(workdir, "-n").stderr
    # Snakemake's own report bundles the figures and the HTML report
    snakemake(workdir, "--report", "report.zip")
    with zipfile.ZipFile(workdir / "report.zip") as bundle:
        names = bundle.namelist()
        bundled = bundle.read(next(n for n in names if n.endswith("report.html"))).decode()
    words = yaml.safe_load((ROOT / "report" / "templates" / "text.yaml").read_text())
    assert words["figures"]["spectra"]["title"] in bundled  # one caption, both reports
    assert "system-message" not in bundled  # every caption is valid reStructuredText
    assert any(name.endswith("spectra.svg") for name in names)
    assert any(name.endswith("index.html") for name in names)
    assert any(name.endswith("claims.json") for name in names)


@pytest.mark.workflow
def test_every_figure_a_rule_reads_draws_its_threshold(tiny_run):
    """Checked from the SVG files: wherever a panel's axis is labelled with the metric of a level
    rule of the experiment's claims, that rule's line is drawn (its id names rule and metric)."""
    from rankbias.thresholds import rule_lines

    registry = yaml.safe_load((ROOT / "config" / "claims.yaml").read_text())
    config = yaml.safe_load((tiny_run / "config" / "config.yaml").read_text())
    checked = 0
    for name, block in config["experiments"].items():
        lines = rule_lines(registry, block.get("claims", []), name)
        for path in (tiny_run / "results" / "figures" / name).glob("*.svg"):
            svg = path.read_text()
            labels = set(re.findall(r"<text[^>]*>([^<]+)</text>", svg))
            for line in lines:
                shown = line.kind == "level" and any(
                    re.fullmatch(rf"{re.escape(line.metric)}( \(W\d+\))?", label)
                    for label in labels
                )
                if shown:
                    assert f'id="{line.gid}-p' in svg, (path, line)
                    checked += 1
        if {"B7"} & set(block.get("claims", [])):
            assert (
                'id="rule-B7-sv_above_0.1-p'
                in (tiny_run / "results" / "figures" / name / "bound.svg").read_text()
            )
    assert checked >= 5  # residual_2 (A1), eps_rel, eps_batch_max, thm26_ratio (A5, A6), ...
