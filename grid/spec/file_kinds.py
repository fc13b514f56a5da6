"""Which command a YAML file is for: a grid (`gatelab submit`, `resume`, `status`, `report`) or one trial
config (`gatelab train`, or a grid's `base:`). A file given to the other command says so, at its first key
that belongs to the other kind, instead of "unknown key"."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from gatelab.grid.spec.config_loader import ConfigError
from gatelab.trainer.config.trial import TrialConfig

GRID_KEYS = (
    "name",
    "base",
    "axes",
    "combine",
    "include",
    "exclude",
    "resources",
    "tracking",
    "storage",
    "ray",
    "search",
    "seeds",
    "ladder",
)
TRIAL_KEYS = tuple(f.name for f in fields(TrialConfig))


def refuse_trial_config_as_grid(data: Any, source: str) -> None:
    """A mapping with trial-config keys and no `base:` is a trial config, not a grid."""
    if not isinstance(data, dict) or "base" in data:
        return
    key = next((str(k) for k in data if k in TRIAL_KEYS and k not in GRID_KEYS), None)
    if key is not None:
        raise ConfigError(
            key,
            f"this file is a trial config (the schema `gatelab train` takes), not a grid: run "
            f"`gatelab train {source}`, or name it as a grid's `base: {source}`",
        )


def refuse_grid_as_trial_config(data: Any, source: str) -> None:
    """A mapping with a key only grids have is a grid, not a trial config."""
    if not isinstance(data, dict):
        return
    key = next((str(k) for k in data if k in GRID_KEYS and k not in TRIAL_KEYS), None)
    if key is not None:
        raise ConfigError(
            key,
            f"this file is a grid (it has `{key}:`), not a trial config: run "
            f"`gatelab submit {source}` (`--dry-run` lists its trials)",
        )
