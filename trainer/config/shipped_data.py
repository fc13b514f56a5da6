"""Where the data shipped with gatelab lies: the `ablations/` folder, installed as package data `gatelab.ablations`.

From a checkout (an editable install) that is the repository's `ablations/`; from a wheel, the copy in
site-packages. Pure Python: no torch.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


def _ablations_dir() -> Path:
    """The folder of `gatelab.ablations`, a namespace package of YAML files found through the installed
    package-dir mapping (not a path built from this file's location). importlib.resources cannot be used: an
    editable install adds a placeholder entry to the namespace's path, which resources.files() rejects."""
    spec = find_spec("gatelab.ablations")
    for entry in (spec.submodule_search_locations or []) if spec else []:
        if (Path(entry) / "variants.yaml").is_file():
            return Path(entry)
    raise ImportError(
        "gatelab.ablations (the variant catalog and example grids) is not installed with gatelab; reinstall gatelab"
    )


ABLATIONS_DIR = _ablations_dir()
CATALOG_PATH = ABLATIONS_DIR / "variants.yaml"
