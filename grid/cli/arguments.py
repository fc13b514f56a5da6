"""Arguments that several subcommands take, written once."""

from __future__ import annotations

import argparse

from gatelab.tracking.store import DEFAULT_HOME, HOME_ENV


def add_home(parser: argparse.ArgumentParser) -> None:
    """`--home DIR`: the gatelab home (tracking/store.py resolve_home decides the default)."""
    parser.add_argument("--home", default=None, help=f"gatelab home (default ${HOME_ENV} or ./{DEFAULT_HOME})")
