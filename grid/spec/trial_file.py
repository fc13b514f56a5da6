"""Load a single-trial YAML (the schema `gatelab train` takes; a grid's `base` uses the same)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatelab.grid.spec.config_loader import ConfigError, build, from_override, parse_override, read_yaml, set_dotted
from gatelab.grid.spec.examples import no_such_file, resolve_config_path
from gatelab.grid.spec.file_kinds import TRIAL_KEYS, refuse_grid_as_trial_config
from gatelab.trainer.config.invalid import join_key
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.corpus import DataError, check_corpus, checked_fingerprint


def anchor_catalog(trial_data: Any, directory: Path) -> Any:
    """A relative `catalog:` path taken from `directory` (the file that names it; the working directory for
    --set), made absolute here so a worker with another working directory finds the same file."""
    catalog = trial_data.get("catalog") if isinstance(trial_data, dict) else None
    if not isinstance(catalog, str) or Path(catalog).expanduser().is_absolute():
        return trial_data
    return {**trial_data, "catalog": str((directory / catalog).resolve())}


def load_trial_config(path: Path, overrides: list[str] = ()) -> TrialConfig:
    """Read, override (`--set dotted.key=value`) and validate a trial file; errors are ConfigErrors at the
    file's line of their key, or on the command line for a key a --set gave."""
    return _load(path, overrides)[0]


def load_trial_with_data(
    path: Path, overrides: list[str] = (), *, cache_dir: Path | None = None
) -> tuple[TrialConfig, str]:
    """`load_trial_config` and the data's fingerprint, the data checked as far as it can be without tokenizing
    (`trainer.corpus.checked_fingerprint`), and with `cache_dir` (the home's cache) tokenized and checked whole
    as the trial will (`check_corpus`); a bad dataset is a ConfigError at its `data.` key like any other bad
    value, so a command refuses it before it opens a run."""
    config, locate = _load(path, overrides)
    try:
        fingerprint = checked_fingerprint(config.data, config.model_config().vocab_size)
        if cache_dir is not None:
            check_corpus(config.data, config.seq_len, config.model_config().vocab_size, cache_dir)
        return config, fingerprint
    except DataError as err:
        raise locate(ConfigError(join_key("data", err.key), str(err))) from None


def _load(path: Path, overrides: list[str]) -> tuple[TrialConfig, Callable[[ConfigError], ConfigError]]:
    """The trial config and how to locate an error about one of its keys."""
    path = resolve_config_path(path)
    if not path.is_file():
        raise no_such_file("trial config", path)
    data, lines = read_yaml(path)
    overridden: list[str] = []

    def locate(err: ConfigError) -> ConfigError:
        return from_override(err, overridden) or err.located(str(path), lines)

    if data is not None and not isinstance(data, dict):  # None: an empty file, every field at its default
        raise ConfigError(
            "",
            f"expected a mapping of trial keys ({', '.join(TRIAL_KEYS)}), got {type(data).__name__}",
            str(path),
            min(lines.values(), default=1),
        )
    try:
        refuse_grid_as_trial_config(data, str(path))
    except ConfigError as err:
        raise locate(err) from None
    data = anchor_catalog(data, Path(path).parent)
    for text in overrides:
        key, value = parse_override(text)
        data = set_dotted(data if isinstance(data, dict) else {}, key, value)
        overridden.append(key)
    data = anchor_catalog(data, Path.cwd())  # a catalog given by --set is taken from the working directory
    try:
        return build(TrialConfig, data), locate
    except ConfigError as err:
        raise locate(err) from None
