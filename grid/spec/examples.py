"""The example grids and trial configs shipped with gatelab (package data `gatelab.ablations`): found by name
from any directory (`gatelab submit smoke`, `gatelab train tiny_trial`), and copied by `gatelab init DIR`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from gatelab.grid.spec.config_loader import ConfigError
from gatelab.trainer.config.shipped_data import ABLATIONS_DIR, CATALOG_PATH

WHERE_NAMES_RESOLVE = (
    "a YAML path, or the name of an example shipped with gatelab (a path that exists wins; "
    "`gatelab init DIR` lists and copies them)"
)


def shipped_examples() -> list[Path]:
    """Every shipped YAML file but the catalog: the example grids and trial configs, by name."""
    return sorted(p for p in ABLATIONS_DIR.glob("*.yaml") if p != CATALOG_PATH)


def resolve_config_path(arg: str | Path) -> Path:
    """The file as given when it exists or has a folder in it; else the shipped example of that name (`smoke`
    or `smoke.yaml`); else the path as given, for its loader to report."""
    path = Path(arg).expanduser()
    if path.exists() or len(path.parts) != 1:
        return path
    shipped = ABLATIONS_DIR / f"{path.name.removesuffix('.yml').removesuffix('.yaml')}.yaml"
    return shipped if shipped.is_file() and shipped != CATALOG_PATH else path


def no_such_file(kind: str, path: Path) -> ConfigError:
    names = ", ".join(p.stem for p in shipped_examples())
    return ConfigError("", f"no such {kind} file; expected {WHERE_NAMES_RESOLVE}: {names}", str(path))


def cmd_init(args: argparse.Namespace) -> int:
    """Copy the shipped catalog, grids and trial configs into a folder to edit. Nothing is overwritten:
    one file already there is an error (exit 2) and nothing is copied, unless --force."""
    target = Path(args.dir).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError("", "expected a folder to copy the examples into, found a file", str(target))
    sources = [CATALOG_PATH, *shipped_examples()]
    clashes = [target / p.name for p in sources if (target / p.name).exists()]
    if clashes and not args.force:
        raise ConfigError(
            "",
            f"{len(clashes)} of the example files already exist there (first: "
            f"{clashes[0].name}); nothing copied; use --force to overwrite them",
            str(target),
        )
    target.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copyfile(source, target / source.name)
    print(f"copied {len(sources)} files into {target}:")
    print(
        f"  {CATALOG_PATH.name:22} the variant catalog; a trial or a grid's base uses your copy with "
        f"`catalog: {CATALOG_PATH.name}`"
    )
    for source in shipped_examples():
        print(f"  {source.name:22} {example_kind(source)}")
    print(f"try: gatelab submit {target / 'smoke.yaml'} --dry-run")
    return 0


def example_kind(path: Path) -> str:
    """'grid' (it has a `base:`) or 'trial config' (the schema `gatelab train` takes)."""
    data = yaml.safe_load(path.read_text())
    return "grid (gatelab submit)" if isinstance(data, dict) and "base" in data else "trial config (gatelab train)"


def add_init_command(commands) -> None:
    init = commands.add_parser("init", help="copy the shipped catalog and examples into DIR")
    init.add_argument("dir", help="folder to create or fill")
    init.add_argument("--force", action="store_true", help="overwrite example files already in DIR")
    init.set_defaults(func=cmd_init)
