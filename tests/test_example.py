"""README's "Audit your own claim", run as written: its three commands in a project folder that
holds the default config (so `only` is what keeps the ten default experiments out)."""

import json

import pandas as pd
import pytest
from conftest import ROOT

from rankbias.vocabulary import VERDICTS


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


@pytest.mark.workflow
def test_the_users_rules_can_fail_on_the_same_numbers(example):
    """Both ways: the same tables contradict the opposite claims (rank rises with wd; wd 0.02
    keeps at least 1.1 × the rank of wd 0)."""
    from rankbias.claims import evaluate_claims
    from rankbias.registry import load_registry, selected

    workdir, _ = example
    registry = load_registry(
        str(ROOT / "config" / "claims.yaml"),
        [str(ROOT / "config" / "examples" / "your_claim" / "claims.yaml")],
    )
    config = json.loads((workdir / "results" / "run_config.json").read_text())["config"]
    opposite = selected(registry, config["only"])
    opposite["claims"]["U1"]["checks"][0]["comparison"] = ">="
    opposite["claims"]["U2"]["checks"][0] |= {"comparison": ">=", "threshold": 1.1}
    tables = {
        name: pd.read_csv(workdir / "results" / "tables" / f"{name}.csv")
        for name in ("my_sweep", "my_checkpoints")
    }
    verdicts = evaluate_claims(opposite, config, tables, resamples=20)
    assert {c["id"]: c["verdict"] for c in verdicts["claims"]} == {
        "U1": "contradicted",
        "U2": "contradicted",
    }
