"""envs/rankbias.yaml (the jobs' conda env) and pyproject.toml ask for the same packages."""

import re
from pathlib import Path

import pytest
import yaml

from rankbias.report import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {  # PyPI name -> conda-forge / bioconda name where they differ
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",
    "seaborn": "seaborn-base",
    "snakemake": "snakemake-minimal",
}
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)\s*(.*)$")


def requirements(lines: list[str]) -> dict[str, str]:
    """{name: bounds} with spaces and comments dropped."""
    out = {}
    for line in lines:
        name, bounds = REQUIREMENT.match(line.split("#")[0].strip()).groups()
        out[name.lower()] = bounds.replace(" ", "")
    return out


def test_the_conda_env_pins_what_pyproject_pins():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {CONDA_NAMES.get(n, n): b for n, b in requirements(pyproject).items()}
    env = yaml.safe_load((ROOT / "envs" / "rankbias.yaml").read_text())["dependencies"]
    listed = requirements([entry for entry in env if not entry.startswith("python")])
    assert listed == wanted


def test_the_env_holds_every_package_the_report_names():
    env = yaml.safe_load((ROOT / "envs" / "rankbias.yaml").read_text())["dependencies"]
    listed = set(requirements(env))
    assert {CONDA_NAMES.get(name, name) for name in PACKAGES} <= listed
