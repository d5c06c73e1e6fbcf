"""Shared fixtures. Tests never download: raw data come from the offline mirror
($RANKBIAS_DATA_MIRROR, defaulting to ../shared/data beside the checkout) or are generated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = ROOT.parent / "shared" / "data"

if not os.environ.get("RANKBIAS_DATA_MIRROR") and DEFAULT_MIRROR.is_dir():
    os.environ["RANKBIAS_DATA_MIRROR"] = str(DEFAULT_MIRROR)


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = Path(os.environ.get("RANKBIAS_DATA_MIRROR", ""))
    if not (path / "california_housing" / "cal_housing.data").is_file():
        pytest.fail(f"the offline data mirror is missing: set RANKBIAS_DATA_MIRROR (now {path})")
    return path


@pytest.fixture
def offline(monkeypatch):
    """Make every download fail at once, as on CI, so tests exercise the offline paths."""
    from rankbias import data

    def refuse(url: str) -> bytes:
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(data, "_download", refuse)
