"""Load a single-trial YAML (the schema `gatelab train` takes; a grid's `base` uses the same)."""
from __future__ import annotations

from pathlib import Path

from gatelab.grid.config_loader import ConfigError, build, parse_override, read_yaml, set_dotted
from gatelab.trainer.config import TrialConfig


def trial_config_from(data: dict, overrides: list[str], source: str, lines: dict[str, int]) -> TrialConfig:
    for text in overrides:
        key, value = parse_override(text)
        data = set_dotted(data if isinstance(data, dict) else {}, key, value)
    try:
        return build(TrialConfig, data)
    except ConfigError as err:
        raise err.located(source, lines) from None


def load_trial_config(path: Path, overrides: list[str] = ()) -> TrialConfig:
    if not Path(path).is_file():
        raise ConfigError("", "no such config file", str(path))
    data, lines = read_yaml(path)
    return trial_config_from(data, list(overrides), str(path), lines)
