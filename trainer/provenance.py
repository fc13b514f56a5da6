"""The git SHA of the checkout gatelab runs from. Pure Python (no torch), so `grid/` can tag parent runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_sha() -> str:
    """HEAD, with '-dirty' when tracked files have uncommitted changes; 'unknown' outside a checkout (an
    installed wheel: its version is in the environment record), even where site-packages lies inside some
    other repository (a research repo's .venv), whose HEAD would say nothing about gatelab's code."""
    if not (REPO_ROOT / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
