"""What a trial ran on: git SHA, package versions, device (docs/design.md, conventions)."""

from __future__ import annotations

import copy
import functools
import platform
from importlib import metadata

import torch

from gatelab.trainer.provenance import git_sha

PACKAGES = ("gatelab", "torch", "lightning", "numpy", "ray", "mlflow", "optuna", "pyyaml")


def environment_record() -> dict:
    """The record for this process, taken at its first trial. Once per process, not per trial: a process keeps
    running the code and packages it imported, so a later `git status` (after the user edits the checkout
    mid-grid) would describe code this process is not running; it also saves two git calls per trial."""
    return copy.deepcopy(_process_environment())


@functools.cache
def _process_environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "cuda": torch.version.cuda if cuda else None,
    }
