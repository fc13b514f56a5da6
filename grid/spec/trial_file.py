"""Load a single-trial YAML (the schema `gatelab train` takes; a grid's `base` uses the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatelab.grid.spec.config_loader import ConfigError, build, parse_override, read_yaml, set_dotted
from gatelab.grid.spec.examples import no_such_file, resolve_config_path
from gatelab.grid.spec.file_kinds import refuse_grid_as_trial_config
from gatelab.trainer.config.trial import TrialConfig


def anchor_catalog(trial_data: Any, directory: Path) -> Any:
    """A relative `catalog:` path taken from `directory` (the file that names it; the working directory for
    --set), made absolute here so a worker with another working directory finds the same file."""
    catalog = trial_data.get("catalog") if isinstance(trial_data, dict) else None
    if not isinstance(catalog, str) or Path(catalog).expanduser().is_absolute():
        return trial_data
    return {**trial_data, "catalog": str((directory / catalog).resolve())}


def trial_config_from(data: dict, overrides: list[str], source: str, lines: dict[str, int]) -> TrialConfig:
    for text in overrides:
        key, value = parse_override(text)
        data = set_dotted(data if isinstance(data, dict) else {}, key, value)
    data = anchor_catalog(data, Path.cwd())
    try:
        return build(TrialConfig, data)
    except ConfigError as err:
        raise err.located(source, lines) from None


def load_trial_config(path: Path, overrides: list[str] = ()) -> TrialConfig:
    path = resolve_config_path(path)
    if not path.is_file():
        raise no_such_file("trial config", path)
    data, lines = read_yaml(path)
    try:
        refuse_grid_as_trial_config(data, str(path))
    except ConfigError as err:
        raise err.located(str(path), lines) from None
    return trial_config_from(anchor_catalog(data, Path(path).parent), list(overrides), str(path), lines)
