"""Bad configs and claim registries are refused before any job runs, naming the key and what is
allowed. The corpus is tests/configs/malformed.yaml: every case goes through the checks the
workflow runs at parse time, and a sample of them through `snakemake` itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, project, snakemake

from rankbias.config import ConfigError, check_config, check_schema

MALFORMED = ROOT / "tests" / "configs" / "malformed.yaml"
CASES = {case["name"]: case for case in yaml.safe_load(MALFORMED.read_text())}
SCHEMAS = ROOT / "workflow" / "schemas"
SHIPPED_CLAIMS = ROOT / "config" / "claims.yaml"
THROUGH_SNAKEMAKE = (
    "negative weight decay inside a grid",
    "run naming an undefined data set",
    "claim rule naming an experiment the config lacks",
    "claims file that does not exist",
)


def edit(document: dict, path: str, value=None, delete: bool = False) -> None:
    """Set (or delete) a dotted path such as experiments.tiny.runs.0.lr."""
    *parents, last = path.split(".")
    for part in parents:
        document = document[int(part)] if isinstance(document, list) else document[part]
    key = int(last) if isinstance(document, list) else last
    if delete:
        del document[key]
    else:
        document[key] = value


def write_case(case: dict, folder: Path) -> dict:
    """Write the case's config (and claim registry) into a project folder; return the config."""
    config = yaml.safe_load(TINY.read_text())
    for path, value in case.get("set", {}).items():
        edit(config, path, value)
    for path in case.get("delete", []):
        edit(config, path, delete=True)
    if "user_claims_text" in case:
        config["user_claims_file"] = "config/my_claims.yaml"
    project(folder, config)
    if "user_claims_text" in case:
        (folder / "config" / "my_claims.yaml").write_text(case["user_claims_text"])
    if "claims_set" in case or "claims_text" in case:
        registry = yaml.safe_load(SHIPPED_CLAIMS.read_text())
        for path, value in case.get("claims_set", {}).items():
            edit(registry, path, value)
        dumped = yaml.safe_dump(registry, allow_unicode=True, sort_keys=False)
        text = case.get("claims_text") or dumped
        (folder / "config" / "claims.yaml").write_text(text)
    return config


def test_the_corpus_is_large_and_every_case_distinct():
    assert len(CASES) >= 25
    edits = [
        repr({k: v for k, v in case.items() if k not in ("name", "expect")})
        for case in CASES.values()
    ]
    assert len(set(edits)) == len(edits)


def test_the_unedited_tiny_config_passes(tmp_path, monkeypatch):
    write_case({}, tmp_path)
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(TINY.read_text())
    jobs, registry, _ = check_config(config, SCHEMAS, "config/config.yaml", SHIPPED_CLAIMS)
    assert jobs and set(registry["claims"]) >= {"A1", "B8"}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_config_is_refused_with_key_and_allowed_values(name, tmp_path, monkeypatch):
    case = CASES[name]
    config = write_case(case, tmp_path)
    monkeypatch.chdir(tmp_path)  # claims_file is relative to the project folder, as in a run
    local_claims = Path(config.get("claims_file", "config/claims.yaml"))
    claims = local_claims if local_claims.exists() or "claims_file" in config else SHIPPED_CLAIMS
    with pytest.raises(ConfigError) as refused:
        check_config(
            config, SCHEMAS, "config/config.yaml", claims, config.get("user_claims_file") or ""
        )
    message = str(refused.value)
    for expected in case["expect"]:
        assert expected in message, f"{name}: {expected!r} not in\n{message}"


@pytest.mark.parametrize("name", THROUGH_SNAKEMAKE)
def test_snakemake_refuses_before_any_job_and_creates_nothing(name, tmp_path):
    write_case(CASES[name], tmp_path)
    result = snakemake(tmp_path, "--cores", "1", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid configuration, nothing was run" in output
    for expected in CASES[name]["expect"]:
        assert expected in output, f"{expected!r} not in\n{output}"
    assert not any((tmp_path / folder).exists() for folder in ("results", "resources", "logs"))


def test_every_error_is_listed_not_only_the_first():
    config = yaml.safe_load(TINY.read_text())
    config["device"] = "gpu"
    config["experiments"]["tiny"]["runs"][0]["width"] = 0
    with pytest.raises(ConfigError) as refused:
        check_schema(config, SCHEMAS / "config.schema.yaml", "my.yaml")
    assert str(refused.value).count("my.yaml: ") == 2


@pytest.mark.parametrize("section", ["datasets", "experiments"])
def test_a_name_of_dots_only_is_refused(section):
    """`..` as a data set or experiment name would make results/<section>/.. a parent folder."""
    config = yaml.safe_load(TINY.read_text())
    config[section][".."] = config[section].pop(next(iter(config[section])))
    with pytest.raises(ConfigError, match=rf"{section}: '\.\.' does not match"):
        check_schema(config, SCHEMAS / "config.schema.yaml", "config.yaml")
