"""A validated GridSpec -> the list of trials it names, each with its key. No torch.

Order: the axes crossed (first axis written varies slowest) or zipped, then the `include` entries (each
the base plus that entry); any trial that an `exclude` entry matches is dropped (an entry matches when every
key in it equals the trial's value, the base's value counting where the key is not an axis); trials with a
key seen before are dropped (the first is kept). The same spec always gives the same list.

The keys are `grid.identity.trial_key`'s (about 45 us each: the model shape and variant definition are
cached there, so 10,000 trials hash well under the 2 s target).
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatelab.grid.spec.config_loader import ConfigError
from gatelab.grid.spec.identity import trial_key
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.config.suggest import did_you_mean
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.corpus import DataConfig, DataError, check_corpus, data_fingerprint

if TYPE_CHECKING:
    from gatelab.grid.spec.grid_spec import GridSpec

# Dict-valued fields whose keys are the fields of another config: axes may address them one by one.
_DICT_FIELDS: dict[str, type] = {"model.overrides": ModelConfig}


@dataclass(frozen=True)
class Trial:
    """One point of a grid: its key, its resolved config and what the grid changed in it."""

    key: str
    """grid.identity.trial_key of the config: the hash of the fields that change the result."""
    config: TrialConfig
    """The resolved config; its name is the grid name plus the label (not part of the key)."""
    overrides: dict
    """Dotted key -> value: only this trial's axis (or include) values."""
    label: str
    """Short human label, e.g. 'g1_elementwise_sigmoid seed=0 lr=0.003'."""


@dataclass(frozen=True, kw_only=True)
class Resolved:
    """A trial before its key: what `load_grid` validates and `expand` hashes."""

    overrides: dict
    """Dotted key -> value set by the axes or by one include entry."""
    config: TrialConfig
    """base + overrides, built (so validated) by TrialConfig."""
    label: str
    """Short human label (see `label`)."""
    include_index: int | None
    """Index of the include entry it comes from; None for a point of the axes."""


# --- dotted paths into TrialConfig ---------------------------------------------------------------------


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _all_paths() -> tuple[str, ...]:
    paths: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for name, hint in _hints(cls).items():
            paths.append(prefix + name)
            inner = _DICT_FIELDS.get(prefix + name) or (hint if dataclasses.is_dataclass(hint) else None)
            if inner is not None:
                walk(inner, f"{prefix}{name}.")

    walk(TrialConfig, "")
    return tuple(paths)


def field_hint(dotted: str, where: str) -> Any:
    """The type of TrialConfig field `dotted`; a ConfigError at grid key `where` names the nearest path."""
    if dotted in _all_paths():
        cls: type = TrialConfig
        hint: Any = None
        for index, part in enumerate(parts := dotted.split(".")):
            hint = _hints(cls)[part]
            cls = _DICT_FIELDS.get(".".join(parts[: index + 1])) or hint
        return hint
    hint_text = did_you_mean(
        dotted, _all_paths(), otherwise="expected e.g. variant, seed, optim.lr, model.preset", cutoff=0.5
    )
    raise ConfigError(where, f"{dotted!r} is not a trial config field; {hint_text}")


def value_at(config: Any, dotted: str) -> Any:
    """config's value at a dotted path; model.overrides.X falls back to the resolved model's X."""
    value = config
    for part in dotted.split("."):
        if isinstance(value, dict):
            if part not in value and dotted.startswith("model.overrides."):
                return getattr(config.model.resolve(), part)
            value = value.get(part)
        else:
            value = getattr(value, part)
    return value


class _Changes(dict):
    """Nested changes below one config section (a plain dict value replaces a dict field whole)."""


def with_values(config: TrialConfig, values: dict[str, Any]) -> TrialConfig:
    """config with each dotted key set, via dataclasses.replace on the nested sections (validates)."""
    tree = _Changes()
    for dotted, value in values.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, _Changes())
        node[leaf] = value
    return _apply(config, tree)


def _apply(obj: Any, tree: _Changes) -> Any:
    changes = {k: _apply(_field(obj, k), v) if isinstance(v, _Changes) else v for k, v in tree.items()}
    return {**obj, **changes} if isinstance(obj, dict) else dataclasses.replace(obj, **changes)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name, {}) if isinstance(obj, dict) else getattr(obj, name)


# --- points of the grid ----------------------------------------------------------------------------------


def points(axes: dict[str, tuple], combine: str) -> Iterator[dict[str, Any]]:
    """The axis values of every point: cartesian product in axis order, or zipped."""
    keys = list(axes)
    # zip() of no axes is empty, product() of none is the one empty point: no axes means the base alone
    rows = zip(*axes.values()) if combine == "zip" and axes else itertools.product(*axes.values())
    for row in rows:
        yield dict(zip(keys, row))


def ladder_points(spec: GridSpec) -> Iterator[dict[str, Any]]:
    """The grid's points, each at every rung of its ladder (grid/spec/ladder_spec.py), rung by rung."""
    for point in points(spec.axes, spec.combine):
        if spec.ladder is None:
            yield point
            continue
        for rung in spec.ladder.rungs:
            yield {**rung.values(), **point}


def _excluded(overrides: dict, config: TrialConfig | None, base: TrialConfig, exclude: tuple[dict, ...]) -> bool:
    for entry in exclude:
        if all(_value_of(overrides, config, base, key) == value for key, value in entry.items()):
            return True
    return False


def _value_of(overrides: dict, config: TrialConfig | None, base: TrialConfig, key: str) -> Any:
    if config is not None:
        return value_at(config, key)
    # No config (the point does not build): read the override, else the base. Lets `exclude` remove
    # invalid combinations, e.g. more_experts on a dense preset.
    for set_key, value in overrides.items():
        if key == set_key:
            return value
        if key.startswith(set_key + "."):
            return value_at(value, key[len(set_key) + 1 :])
    return value_at(base, key)


def resolve(spec: GridSpec) -> list[Resolved]:
    """Every trial of the grid built (so validated), excludes applied; ConfigErrors name the grid key."""
    out = []
    for overrides in ladder_points(spec):
        text = label(spec.base, overrides)
        config = _build(spec, overrides, text)
        if config is not None and not _excluded(overrides, config, spec.base, spec.exclude):
            out.append(Resolved(overrides=overrides, config=config, label=text, include_index=None))
        elif config is None and not _excluded(overrides, None, spec.base, spec.exclude):
            raise _blame_point(spec, overrides)
    for index, entry in enumerate(spec.include):
        text = label(spec.base, entry)
        config = _build(spec, entry, text)
        if config is None:
            raise _blame_include(spec, index, entry)
        if not _excluded(entry, config, spec.base, spec.exclude):
            out.append(Resolved(overrides=dict(entry), config=config, label=text, include_index=index))
    return out


def _build(spec: GridSpec, overrides: dict, text: str) -> TrialConfig | None:
    try:
        return with_values(spec.base, {**overrides, "name": f"{spec.name}/{text}"})
    except (ValueError, TypeError):
        return None


def _why(base: TrialConfig, values: dict) -> str | None:
    try:
        with_values(base, values)
        return None
    except (ValueError, TypeError) as err:
        return str(err)


def _blame_point(spec: GridSpec, overrides: dict) -> ConfigError:
    """The axis value that breaks the point: one that fails on its own, else the one whose addition does."""
    keys = list(overrides)
    for key in keys:
        message = _why(spec.base, {key: overrides[key]})
        if message:
            return ConfigError(_axis_item(spec, key, overrides[key]), message)
    for count in range(2, len(keys) + 1):
        message = _why(spec.base, {k: overrides[k] for k in keys[:count]})
        if message:
            key = keys[count - 1]
            others = ", ".join(f"{k}={overrides[k]!r}" for k in keys[: count - 1])
            return ConfigError(_axis_item(spec, key, overrides[key]), f"with {others}: {message}")
    return ConfigError("axes", "this combination of axis values does not build: " + repr(overrides))


def _blame_include(spec: GridSpec, index: int, entry: dict) -> ConfigError:
    for key in entry:
        message = _why(spec.base, {key: entry[key]})
        if message:
            return ConfigError(f"include.{index}.{key}", message)
    return ConfigError(f"include.{index}", _why(spec.base, entry) or "does not build")


def _axis_item(spec: GridSpec, key: str, value: Any) -> str:
    if key not in spec.axes:  # a value a ladder's rung sets
        return "ladder"
    return f"axes.{key}.{spec.axes[key].index(value)}"


# Per spec object (GridSpec compares by identity): load_grid builds every trial to validate it, and expand, the
# search and the dry run reuse them. Building a TrialConfig is most of the cost of expanding (~80 us each);
# fingerprinting lists and stats every data file.
_RESOLVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DATA_PRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def resolved(spec: GridSpec) -> tuple[Resolved, ...]:
    """Every trial of the spec built (so validated), excludes applied, before keys; built once per spec."""
    if spec not in _RESOLVED:
        _RESOLVED[spec] = tuple(resolve(spec))
    return _RESOLVED[spec]


def data_prints(spec: GridSpec) -> dict[DataConfig, str]:
    """data_fingerprint of each distinct DataConfig of the spec's trials, computed once per spec; a DataError
    is a ConfigError at its key."""
    if spec not in _DATA_PRINTS:
        _DATA_PRINTS[spec] = _fingerprints(spec, resolved(spec))
    return _DATA_PRINTS[spec]


def _fingerprints(spec: GridSpec, items: tuple[Resolved, ...]) -> dict[DataConfig, str]:
    out: dict[DataConfig, str] = {}
    for item in items:
        data = item.config.data
        if data in out:
            continue
        try:
            out[data] = data_fingerprint(data)
        except DataError as err:
            raise ConfigError(_data_key(spec, item), str(err)) from None
    return out


def check_corpora(spec: GridSpec, cache_dir: Path) -> None:
    """Each distinct dataset of the grid tokenized (or read from `cache_dir`, the home's cache the trials use)
    and checked as a trial will check it (trainer.corpus.check_corpus: ids below the model's vocabulary, a
    window of the training length in each split); a DataError is a ConfigError at its key. `submit` and `resume`
    run it before they open any run; it is the one check that reads the data whole, so validation (load_grid)
    and the dry run leave it out."""
    seen: set = set()
    for item in resolved(spec):
        config = item.config
        checked = (config.data, config.seq_len, config.model_config().vocab_size)
        if checked in seen:
            continue
        seen.add(checked)
        try:
            check_corpus(*checked, cache_dir)
        except DataError as err:
            raise ConfigError(_data_key(spec, item, err.key), str(err)) from None


def _data_key(spec: GridSpec, item: Resolved, field: str = "source") -> str:
    for key, value in item.overrides.items():
        if key.split(".")[0] == "data":
            if item.include_index is not None:
                return f"include.{item.include_index}.{key}"
            return _axis_item(spec, key, value)
    return f"base.data.{field}"


# --- labels and the public entry point -------------------------------------------------------------------


def format_value(value: Any) -> str:
    """Compact text of an override value: 0.003, 1e-05, [1, 2], tiny-moe."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):  # a whole section: only what differs from its defaults
        default = type(value)()
        value = {
            f.name: getattr(value, f.name)
            for f in dataclasses.fields(value)
            if getattr(value, f.name) != getattr(default, f.name)
        }
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


@cache
def short_keys(keys: tuple[str, ...]) -> dict[str, str]:
    """Each dotted key's last part, or the whole key where two keys share a last part."""
    last = [key.rpartition(".")[2] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def label(base: TrialConfig, overrides: dict) -> str:
    """'<variant> k=v ...' from the variant (the base's when not an axis) and the other overrides."""
    variant = overrides.get("variant", base.variant)
    others = tuple(key for key in overrides if key != "variant")
    short = short_keys(others)
    return " ".join([str(variant), *(f"{short[key]}={format_value(overrides[key])}" for key in others)])


def expand(spec: GridSpec) -> list[Trial]:
    """The grid's trials in a deterministic order, unique by key."""
    prints = data_prints(spec)
    trials: dict[str, Trial] = {}
    for item in resolved(spec):
        key = trial_key(item.config, prints[item.config.data])
        if key not in trials:
            trials[key] = Trial(key=key, config=item.config, overrides=item.overrides, label=item.label)
    return list(trials.values())
