"""YAML -> frozen config dataclasses, with errors that name the file, the line and the dotted key.

Pure Python (PyYAML only). Every error is one `ConfigError` whose str() is a single line:
`FILE:LINE: KEY: what was expected (did you mean ...?)`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gatelab.trainer.config.invalid import NO_VALUE, InvalidValue, join_key
from gatelab.trainer.config.suggest import did_you_mean


class ConfigError(InvalidValue):
    """Bad user input; the CLI prints str(err) and exits 2.

    An InvalidValue whose key is a full path in one file (a grid's `base.schedule.max_steps`), not one relative
    to a validated object, and which knows that file and, once located, the line."""

    def __init__(
        self, key: str, message: str, source: str = "<config>", line: int | None = None, *, value=NO_VALUE
    ) -> None:
        super().__init__(key, message, value=value)
        self.source, self.line = source, line

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        if self.value is NO_VALUE:
            return f"{where}: {self.key or '<top>'}: {self.message}"
        return f"{where}: {self.stated(self.key)}"

    def located(self, source: str, lines: dict[str, int]) -> "ConfigError":
        """The same error with the file and the line of its key (or of its nearest parent key)."""
        key = self.key
        while key and key not in lines:
            key = key.rpartition(".")[0]
        return ConfigError(self.key, self.message, source, lines.get(key, 1), value=self.value)


# libyaml's parser when PyYAML was built with it: the same nodes, marks and errors, ~10x faster on a
# 10,000-value axis (`--set axes.seed=[...]`); the pure-Python parser otherwise.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """(data, line of each dotted key). YAML syntax errors become ConfigErrors with their line."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            "",
            f"expected UTF-8 text (YAML), found byte 0x{raw[err.start]:02x}",
            str(path),
            raw.count(b"\n", 0, err.start) + 1,
        ) from None
    try:
        node = yaml.compose(text, Loader=_SAFE_LOADER)
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("", f"invalid YAML: {problem}", str(path), mark.line + 1 if mark else None) from None
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _collect_lines(node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, f"{key}.", lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[f"{prefix}{index}"] = item.start_mark.line + 1
            _collect_lines(item, f"{prefix}{index}.", lines)


def parse_override(text: str) -> tuple[str, Any]:
    """`dotted.key=value` with the value parsed as YAML (so 3.0e-3, true, [1, 2] work). A bare number in
    exponent form without a dot (3e-3), which YAML 1.1 reads as a string, is taken as the number it is."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "expected --set dotted.key=value", "--set")
    try:
        value = yaml.load(raw, Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        raise ConfigError(key, f"could not parse value {raw!r}", "--set") from None
    if isinstance(value, str) and _BARE_EXPONENT.match(value.strip()):
        value = float(value)
    return key.strip(), value


_BARE_EXPONENT = re.compile(r"^[-+]?\d+(\.\d*)?[eE][-+]?\d+$")


def from_override(err: ConfigError, overridden: list[str]) -> ConfigError | None:
    """The error placed on the command line (`--set: KEY: ...`) when its key is, or lies inside, a key a
    `--set` gave; None when the key comes from the file. A file line would point at text the user did not write."""
    if any(err.key == key or err.key.startswith(key + ".") for key in overridden):
        return ConfigError(err.key, err.message, "--set", value=err.value)
    return None


def set_dotted(data: dict, key: str, value: Any) -> dict:
    """A copy of data with data[a][b][c] = value for key 'a.b.c' (creating mappings on the way)."""
    out = dict(data)
    head, _, rest = key.partition(".")
    if rest:
        inner = out.get(head) if isinstance(out.get(head), dict) else {}
        out[head] = set_dotted(inner, rest, value)
    else:
        out[head] = value
    return out


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _convert(hint, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, key)
            except ConfigError as err:
                errors.append(err.message)
        raise ConfigError(key, errors[0] if errors else "expected a value")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return value
    if hint is tuple or origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return tuple(value)
    return value


def convert(hint, value: Any, key: str) -> Any:
    """value checked against (and converted to) the type `hint`, as `build` does for a field at `key`."""
    return _convert(hint, value, key)


def build(cls, data: Any, prefix: str = ""):
    """Instantiate dataclass `cls` from a mapping; unknown keys get the nearest valid name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = join_key(prefix, str(key))
        if key not in names:
            raise ConfigError(dotted, f"unknown key; {did_you_mean(str(key), names)}")
        kwargs[key] = _convert(hints[key], value, dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise  # from a nested build: its key is already the full path
    except InvalidValue as err:
        raise ConfigError(join_key(prefix, err.key), err.message, value=err.value) from None
    except (ValueError, TypeError) as err:  # a check without a key (a library's): the object at fault
        raise ConfigError(prefix, str(err)) from None


def check_block(raw: Any, block: str, keys: tuple[str, ...]) -> dict:
    """A grid's sub-block (`search:`, `ladder:`) as a mapping of known keys, or the ConfigError naming what is not."""
    if not isinstance(raw, dict):
        raise ConfigError(block, f"expected a mapping with {', '.join(keys)}, got {raw!r}")
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{block}.{key}", f"unknown {block} key; {did_you_mean(str(key), keys)}")
    return raw
