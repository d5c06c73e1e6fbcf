"""Provenance that cannot lie: every result names the code that made it, the report flags results
made by different code, and the commit is that of the workflow's own source tree."""

import json
import os
import shutil
import subprocess

import pytest
from conftest import ROOT, snakemake

from rankbias import __version__, provenance


def test_code_groups_put_the_current_code_first_and_split_by_digest():
    current = provenance.code_record()
    other = {"rankbias": "0.0.9", "source_sha256": "f" * 64}
    groups = provenance.code_groups({"a": other, "b": current, "c": None, "d": current})
    assert [g["current"] for g in groups] == [True, False, False]
    assert groups[0]["results"] == ["b", "d"] and groups[0]["version"] == __version__
    assert {g["code"] for g in groups[1:]} == {"f" * provenance.SHORT, "not recorded"}
    assert len(provenance.code_groups({"a": current, "b": current})) == 1


def test_the_commit_is_the_package_trees_and_an_edit_is_named(monkeypatch):
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src/rankbias"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert provenance.source_commit().startswith(head)
    if not dirty:  # a clean checkout (CI's): the package imported is the commit's
        assert provenance.source_commit() == head
    monkeypatch.setattr(provenance, "source_digest", lambda: "an edited module")
    assert provenance.source_commit() == (
        f"{head}, with uncommitted changes to the package (its digest differs)"
    )


@pytest.mark.workflow
def test_every_result_records_its_code_and_the_report_flags_mixed_code(tiny_run, tmp_path):
    results = tiny_run / "results"
    stamped = [
        *results.glob("data/*.json"),
        *results.glob("runs/*/*/result.json"),
        *results.glob("metrics/*.code.json"),
        *results.glob("statistics/*.json"),
        results / "claims.json",
    ]
    assert len(stamped) > 10
    for path in stamped:  # the tiny run was made by this code, from first step to last
        assert json.loads(path.read_text())["code"] == provenance.code_record(), path
    html = (results / "report" / "index.html").read_text()
    assert 'id="mixed-code"' not in html and "every result was made by this code" in html
    assert provenance.source_digest()[: provenance.SHORT] in html

    # A training result made by other code (as after editing the package without a rerun):
    # the same results, one result.json restamped, its time kept so that nothing upstream reruns
    copy = tmp_path / "mixed"
    shutil.copytree(tiny_run, copy, symlinks=True)
    foreign = sorted((copy / "results" / "runs").glob("*/*/result.json"))[0]
    record = json.loads(foreign.read_text())
    record["code"] = {"rankbias": "0.0.9", "source_sha256": "0123456789ab" + "0" * 52}
    times = os.stat(foreign)
    foreign.write_text(json.dumps(record))
    os.utime(foreign, ns=(times.st_atime_ns, times.st_mtime_ns))
    snakemake(copy, "--cores", "1", "--forcerun", "report", "results/report/index.html")
    html = (copy / "results" / "report" / "index.html").read_text()
    assert 'id="mixed-code"' in html and "made by 2 versions of the code" in html
    job = f"training {foreign.parent.parent.name}/{foreign.parent.name}"
    section = html[html.index('id="mixed-code"') : html.index('id="scope"')]
    assert "0123456789ab" in section and job in section and "this report's code" in section
