"""A grid file read and validated into a GridSpec: its base (inline or a file), `--set` overrides, axes,
include/exclude and search, each error with its file, line and key. Every trial is built here once, so a bad
value fails at its axis line before anything runs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from gatelab.grid.spec.config_loader import (
    ConfigError,
    build,
    convert,
    from_override,
    parse_override,
    read_yaml,
    set_dotted,
)
from gatelab.grid.spec.examples import no_such_file, resolve_config_path
from gatelab.grid.spec.expand import check_corpora, data_prints, field_hint, resolved
from gatelab.grid.spec.file_kinds import GRID_KEYS, refuse_trial_config_as_grid
from gatelab.grid.spec.grid_spec import (
    COMBINE_MODES,
    FILE_HASH_LENGTH,
    GridSpec,
    RaySpec,
    Resources,
    StorageSpec,
    TrackingSpec,
)
from gatelab.grid.spec.ladder_spec import parse_ladder
from gatelab.grid.spec.search_spec import check_search, parse_search
from gatelab.grid.spec.seed_policy import parse_seed_policy
from gatelab.grid.spec.trial_file import anchor_catalog
from gatelab.trainer.config.catalog import get_variant, load_catalog
from gatelab.trainer.config.gate_spec import SpecError
from gatelab.trainer.config.presets import PRESETS
from gatelab.trainer.config.suggest import did_you_mean
from gatelab.trainer.config.trial import TrialConfig


class _Where:
    """Which file and line a grid key came from: the grid file, the base file, or the command line."""

    def __init__(self, source: str, lines: dict[str, int]) -> None:
        self.source, self.lines = source, lines
        self.base_source: str | None = None
        self.base_lines: dict[str, int] = {}
        self.overridden: list[str] = []

    def locate(self, err: ConfigError) -> ConfigError:
        if err.source != "<config>":
            return err  # located already (a YAML syntax error, a --set that does not parse)
        key, message = err.key, _with_yaml_hint(err.message)
        located = ConfigError(key, message, value=err.value)
        on_command_line = from_override(located, self.overridden)
        if on_command_line is not None:
            return on_command_line
        if self.base_source and key.startswith("base."):
            return located.located(self.base_source, self.base_lines)
        return located.located(self.source, self.lines)


_NUMBER_AS_STRING = re.compile(r"expected a number, got '([^']*)'")


def _with_yaml_hint(message: str) -> str:
    """PyYAML reads 3e-3 (no dot) as a string; say so, since the YAML looks right to the user."""
    match = _NUMBER_AS_STRING.search(message)
    if match:
        try:
            float(match.group(1))
        except ValueError:
            return message
        return f"{message} (YAML reads a number without a dot as a string: write 3.0e-3, not 3e-3)"
    return message


def load_grid(path: Path, overrides: list[str] = (), *, cache_dir: Path | None = None) -> GridSpec:
    """Read, override (`--set dotted.key=value`, keys from the grid's top level) and validate a grid file. With
    `cache_dir` (the home's cache: submit and resume) every dataset is also tokenized and checked as its trials
    will check it (expand.check_corpora), so bad data is refused at its key before any run opens."""
    path = resolve_config_path(path)
    source = str(path)
    if not path.is_file():
        raise no_such_file("grid", path)
    file_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:FILE_HASH_LENGTH]
    data, lines = read_yaml(path)
    where = _Where(source, lines)
    try:
        if not isinstance(data, dict):
            raise ConfigError(
                "",
                f"expected a mapping of grid keys ({', '.join(GRID_KEYS)}), got {type(data).__name__}",
                source,
                min(lines.values(), default=1),
            )
        refuse_trial_config_as_grid(data, source)
        data = _inline_base(data, path.parent, where)
        for text in overrides:
            key, value = parse_override(text)
            data = _override(data, key, value)
            where.overridden.append(key)
        if isinstance(data.get("base"), str):  # `--set base=other.yaml`: its errors are that file's
            data = _inline_base(data, path.parent, where)
            where.overridden.remove("base")
        if "base" in data:  # a catalog named by --set base.catalog=... is taken from the working directory
            data = {**data, "base": anchor_catalog(data["base"], Path.cwd())}
        spec = _spec(data, name=path.stem, source=source, file_hash=file_hash)
        if not resolved(spec):  # builds every trial: a bad value fails at its axis line
            raise ConfigError("exclude", "axes/include/exclude leave no trial")
        data_prints(spec)  # a missing or empty dataset fails here, before anything runs
        if cache_dir is not None:
            check_corpora(spec, cache_dir)  # ids past the vocabulary, a split without a window
        if spec.search is not None:
            check_search(spec)  # each searched bound (or choice) builds at every grid point
    except ConfigError as err:
        raise where.locate(err) from None
    return spec


def _inline_base(data: dict, grid_dir: Path, where: _Where) -> dict:
    """`base: trial.yaml` -> that file's mapping (its lines kept for errors). A `catalog:` path in the base is
    taken from the file that names it: the trial file, or the grid file for an inline base."""
    base = data.get("base")
    if not isinstance(base, str):
        return {**data, "base": anchor_catalog(base, grid_dir)} if "base" in data else data
    base_path = Path(base).expanduser()
    base_path = base_path if base_path.is_absolute() else grid_dir / base_path
    if not base_path.is_file():
        raise ConfigError(
            "base",
            f"no such trial file {str(base_path)!r}; expected a mapping or a path to a "
            "trial YAML (relative to the grid file)",
        )
    base_data, base_lines = read_yaml(base_path)
    base_data = anchor_catalog(base_data, base_path.parent)
    where.base_source = str(base_path)
    where.base_lines = {f"base.{k}": line for k, line in base_lines.items()}
    return {**data, "base": base_data}


def _override(data: dict, key: str, value: Any) -> dict:
    """`axes.optim.lr=[...]` sets the axis 'optim.lr' (axis keys are flat), as does
    `search.params.optim.lr={...}` the searched field; other keys nest."""
    head, _, rest = key.partition(".")
    if head == "axes" and rest:
        axes = data.get("axes") if isinstance(data.get("axes"), dict) else {}
        return {**data, "axes": {**axes, rest: value}}
    if head == "search" and rest.startswith("params.") and len(rest) > len("params."):
        search = data.get("search") if isinstance(data.get("search"), dict) else {}
        params = search.get("params") if isinstance(search.get("params"), dict) else {}
        return {**data, "search": {**search, "params": {**params, rest[len("params.") :]: value}}}
    return set_dotted(data, key, value)


def _spec(data: dict, *, name: str, source: str, file_hash: str) -> GridSpec:
    for key in data:
        if key not in GRID_KEYS:
            raise ConfigError(str(key), f"unknown grid key{_nearest(str(key), GRID_KEYS)}")
    name = data.get("name", name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ConfigError("name", f"expected a non-empty name without '/', got {name!r}")
    if "base" not in data or not isinstance(data["base"], dict):
        got = f", got {data['base']!r}" if "base" in data else ""
        raise ConfigError(
            "base",
            "expected a mapping of trial-config fields (the schema `gatelab train` takes) "
            f"or a path to a trial YAML{got}",
        )
    model = data["base"].get("model")
    _check_name("model.preset", model.get("preset") if isinstance(model, dict) else None, "base.model.preset")
    base = build(TrialConfig, data["base"], "base")
    combine = data.get("combine", "cross")
    if combine not in COMBINE_MODES:
        raise ConfigError("combine", f"expected 'cross' or 'zip', got {combine!r}")
    axes = _axes(data.get("axes"), base)
    if combine == "zip" and len({len(values) for values in axes.values()}) > 1:
        lengths = ", ".join(f"{key}: {len(values)}" for key, values in axes.items())
        first = len(next(iter(axes.values())))
        odd = next(key for key, values in axes.items() if len(values) != first)
        raise ConfigError(f"axes.{odd}", f"combine: zip needs axes of equal length, got {lengths}")
    search = parse_search(data.get("search"), axes)
    ladder = parse_ladder(data.get("ladder"), base, axes)
    if ladder is not None and search is not None:
        raise ConfigError("ladder", "a ladder and a search block in one grid are not supported: tune with an axis")
    seeds = parse_seed_policy(data.get("seeds"), axes, base.variant, search is not None)
    if seeds is not None:  # the most seeds it may use; the adaptive driver runs the part the verdicts need
        axes = {**axes, "seed": tuple(range(seeds.max))}
    return GridSpec(
        name=name,
        base=base,
        axes=axes,
        combine=combine,
        include=_entries(data.get("include"), "include", base.catalog),
        exclude=_entries(data.get("exclude"), "exclude", base.catalog),
        resources=build(Resources, data.get("resources"), "resources"),
        tracking=build(TrackingSpec, data.get("tracking"), "tracking"),
        storage=build(StorageSpec, data.get("storage"), "storage"),
        ray=build(RaySpec, data.get("ray"), "ray"),
        search=search,
        seeds=seeds,
        ladder=ladder,
        source=source,
        file_hash=file_hash,
    )


def _nearest(word: str, options) -> str:
    return f"; {did_you_mean(word, options)}"


def _axes(raw: Any, base: TrialConfig) -> dict[str, tuple]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("axes", f"expected a mapping of dotted trial-config keys to lists of values, got {raw!r}")
    axes: dict[str, tuple] = {}
    for key, values in raw.items():
        key, where = str(key), f"axes.{key}"
        _check_key(key, where)
        hint = field_hint(key, where)
        if key == "variant" and values == "all":
            axes[key] = applicable_variants(base)
            continue
        if isinstance(values, dict):
            raise ConfigError(
                where,
                f"expected a list of values, got a mapping; write axis keys dotted and flat, "
                f"e.g. axes: {{{key}.{next(iter(values), 'x')}: [...]}}",
            )
        if not isinstance(values, list):
            raise ConfigError(where, f"expected a list of values, got {values!r} (write [{values!r}] for one value)")
        if not values:
            raise ConfigError(where, "expected at least one value, got an empty list")
        converted = tuple(convert(hint, value, f"{where}.{i}") for i, value in enumerate(values))
        for index, value in enumerate(converted):
            _check_name(key, value, f"{where}.{index}", base.catalog)
        _check_distinct(converted, where)
        axes[key] = converted
    _check_no_overlap(list(axes), "axes")
    return axes


def applicable_variants(base: TrialConfig) -> tuple[str, ...]:
    """Every catalog variant whose shape change fits the base model (more_experts needs an MoE preset)."""
    model = base.model.resolve()
    names = []
    for name, variant in load_catalog(base.catalog).items():
        try:
            variant.model_config(model)
        except SpecError:
            continue
        names.append(name)
    return tuple(names)


def _entries(raw: Any, where: str, catalog: str | None) -> tuple[dict, ...]:
    """include/exclude: a list of mappings of dotted trial-config keys to values."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(where, f"expected a list of mappings of dotted keys to values, got {raw!r}")
    entries = []
    for index, entry in enumerate(raw):
        at = f"{where}.{index}"
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(at, f"expected a non-empty mapping of dotted keys to values, got {entry!r}")
        converted = {}
        for key, value in entry.items():
            key = str(key)
            _check_key(key, f"{at}.{key}")
            converted[key] = convert(field_hint(key, f"{at}.{key}"), value, f"{at}.{key}")
            _check_name(key, converted[key], f"{at}.{key}", catalog)
        _check_no_overlap(list(converted), at)
        entries.append(converted)
    return tuple(entries)


def _check_name(key: str, value: Any, where: str, catalog: str | None = None) -> None:
    """An unknown variant or preset, at its own line with the nearest name (TrialConfig blames all of
    `model` for a preset; an exclude entry is never built, and one that cannot match is a typo)."""
    if key == "variant" and isinstance(value, str):
        try:
            get_variant(value, catalog)
        except SpecError as err:
            raise ConfigError(where, str(err)) from None
    if key == "model.preset" and isinstance(value, str) and value not in PRESETS:
        raise ConfigError(where, f"unknown model preset {value!r}{_nearest(value, sorted(PRESETS))}")


def _check_key(key: str, where: str) -> None:
    if key == "name":
        raise ConfigError(
            where,
            "trial names are made from the grid name and the axis values; set the grid's top-level `name` instead",
        )


def _check_distinct(values: tuple, where: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        text = repr(value)
        if text in seen:
            raise ConfigError(f"{where}.{index}", f"value {value!r} appears twice in this axis")
        seen.add(text)


def _check_no_overlap(keys: list[str], where: str) -> None:
    for key in keys:
        for other in keys:
            if key.startswith(other + "."):
                raise ConfigError(f"{where}.{key}", f"overlaps {other!r}: set one or the other")
