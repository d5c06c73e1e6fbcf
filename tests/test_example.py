"""README's "Audit your own claim", run as written: its three commands in a project folder that
holds the default config (so `only` is what keeps the ten default experiments out)."""

import json
import re
import shlex
import shutil
import sys

import pandas as pd
import pytest
from conftest import ROOT, run, snakemake

from rankbias.vocabulary import VERDICTS


def example_commands() -> list[list[str]]:
    """The bash block after README's `your-claim-example` marker, one command a line."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- your-claim-example -->\n```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no your-claim-example block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A user's folder beside the checkout: the default config, then the README's commands."""
    workdir = tmp_path_factory.mktemp("your_claim")
    (workdir / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", workdir / "config" / "config.yaml")
    outputs = []
    for command in example_commands():
        if command[0] == "snakemake":
            args = [ROOT / a if a.startswith("config/") else a for a in command[1:]]
            dry = snakemake(workdir, *map(str, args), "-n", "--quiet", "rules")
            outputs.append(dry.stdout)
            outputs.append(snakemake(workdir, *map(str, args), "--cores", "2").stdout)
        else:
            assert command[0] == "python", command
            script = [str(ROOT / command[1])] if command[1].endswith(".py") else command[1:3]
            rest = command[2:] if command[1].endswith(".py") else command[3:]
            outputs.append(run([sys.executable, *script, *rest], cwd=workdir).stdout)
    return workdir, outputs


@pytest.mark.workflow
def test_only_the_example_runs_and_its_claims_get_verdicts_under_their_heading(example):
    workdir, outputs = example
    planned = outputs[1]
    assert "train                  1" in planned and "measure                2" in planned
    tables = sorted(path.stem for path in (workdir / "results" / "tables").glob("*.csv"))
    assert tables == ["my_checkpoints", "my_checkpoints_history", "my_sweep", "my_sweep_history"]
    verdicts = json.loads((workdir / "results" / "claims.json").read_text())
    assert [claim["id"] for claim in verdicts["claims"]] == ["U1", "U2"]
    assert verdicts["concerns"] == [] and verdicts["user"]["claims"] == ["U1", "U2"]
    for claim in verdicts["claims"]:
        assert claim["verdict"] in VERDICTS
        assert (
            sum(
                check["counts"].get("pass", 0) + check["counts"].get("fail", 0)
                for check in claim["checks"]
            )
            >= 1
        ), f"{claim['id']} decided nothing"
    html = (workdir / "results" / "report" / "index.html").read_text()
    assert '<section id="user-claims">' in html and verdicts["user"]["title"] in html
    assert 'id="claim-U1"' in html and 'id="claim-U2"' in html
    assert 'id="concerns"' not in html and 'id="claim-A1"' not in html
    assert "10 checkpoints trained elsewhere" in html


@pytest.mark.workflow
def test_the_checkpoint_experiment_measures_every_file_with_its_training(example):
    workdir, _ = example
    table = pd.read_csv(workdir / "results" / "tables" / "my_checkpoints.csv")
    assert len(table) == 20 and set(table["tensor"]) == {"0.weight", "2.weight"}
    assert table["status"].eq("ok").all() and table["train_acc"].gt(0.8).all()
    assert table["effective_rank_learned"].notna().all()
    assert table["decay_horizon"].round(6).isin([0.0, 12.0]).all()
    info = json.loads((workdir / "results" / "data" / "my_points.json").read_text())
    assert info["scaling"]["constant_features"] == ["border_0", "border_1"]
    assert info["raw_manifest"]["files"]["points.csv"]["sha256_checked"] is False


@pytest.mark.workflow
def test_the_one_line_audit_prints_the_table_the_readme_shows(example):
    _, outputs = example
    printed = outputs[-1]
    readme = (ROOT / "README.md").read_text()
    header = printed.splitlines()[0]
    assert header.startswith("| tensor | layer_kind | shape |") and header in readme
    assert printed.splitlines()[2].split("|")[1:4] == [" 0.weight ", " dense ", " 64×18 "]
    assert "model: train_loss" in printed and "bound_grs" in printed
