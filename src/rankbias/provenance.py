"""Which code made a result: the package version and a digest of its sources, stamped on every
result file, so the report can say when its numbers came from different code.

Snakemake reruns a job when its rule's text or params change, not when the package it calls is
edited; a result made before an edit stays in place, so each one carries its code's digest and
the report compares them. The commit is read from the source tree the package was imported from
(the workflow's own, through PYTHONPATH), not from the working directory.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from rankbias import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
SHORT = 12  # hex digits shown for a digest


def _digest(files: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, content in sorted(files):
        digest.update(name.encode() + content)
    return digest.hexdigest()


@functools.cache
def source_digest() -> str:
    """SHA-256 of the package's modules (file names and bytes), as imported by this process."""
    return _digest([(path.name, path.read_bytes()) for path in PACKAGE_DIR.glob("*.py")])


def code_record() -> dict:
    """What a result file records of the code that wrote it."""
    return {"rankbias": __version__, "source_sha256": source_digest()}


def stamped(record: dict) -> dict:
    return {**record, "code": code_record()}


def _git(*args: str) -> bytes:
    """A git command run in the package's folder (raises if that is not a checkout)."""
    command = ["git", "-C", str(PACKAGE_DIR), *args]
    return subprocess.run(command, capture_output=True, check=True, timeout=10).stdout


def source_commit() -> str:
    """The commit of the source tree this package was imported from, and whether the package
    imported is that commit's: its digest compared with the digest of the committed modules."""
    try:
        commit = _git("rev-parse", "HEAD").decode().strip()
        prefix = _git("rev-parse", "--show-prefix").decode().strip()  # the package's folder
        listed = _git("ls-tree", "--name-only", "HEAD", "--", ".").decode().split()
        committed = [
            (name, _git("cat-file", "blob", f"HEAD:{prefix}{name}"))
            for name in listed
            if name.endswith(".py")
        ]
    except (OSError, subprocess.SubprocessError):
        return f"unknown ({PACKAGE_DIR} is not in a git checkout)"
    if _digest(committed) == source_digest():
        return commit
    return f"{commit}, with uncommitted changes to the package (its digest differs)"


def code_groups(records: dict[str, dict]) -> list[dict]:
    """Results grouped by the code that made them: [{code, version, results}], the code of this
    process first. `records` maps a result's name to its `code` record (None: not recorded)."""
    groups: dict[str, dict] = {}
    for name, code in records.items():
        digest = (code or {}).get("source_sha256", "not recorded")
        group = groups.setdefault(
            digest,
            {
                "code": digest[:SHORT],
                "version": (code or {}).get("rankbias", "–"),
                "current": digest == source_digest(),
                "results": [],
            },
        )
        group["results"].append(name)
    return sorted(groups.values(), key=lambda group: (not group["current"], group["code"]))
