"""What a run was made with: package versions, source revision, host."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "headdb",
    "torch",
    "transformers",
    "transformer-lens",
    "trl",
    "duckdb",
    "polars",
    "pyarrow",
    "math-verify",
)


@cache
def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def headdb_version() -> str:
    return versions()["headdb"] or "0+unknown"


@cache
def git_sha() -> str | None:
    """The commit of the headdb source tree, with '-dirty' when it has local changes."""
    source = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def host() -> str:
    return socket.gethostname()
