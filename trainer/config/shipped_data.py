"""Where the data shipped with gatelab lies: the `ablations/` folder, installed as package data `gatelab.ablations`.

From a checkout (an editable install) that is the repository's `ablations/`; from a wheel, the copy in
site-packages. Pure Python: no torch.
"""

from __future__ import annotations

from pathlib import Path


def _ablations_dir() -> Path:
    """The folder of `gatelab.ablations`, beside the trainer's own folder wherever gatelab is installed: the
    repository's ablations/ beside trainer/ in a checkout (an editable install maps both there), and
    site-packages/gatelab/ablations beside gatelab/trainer from a wheel. Not looked up through the import system:
    it is a folder of YAML files without an __init__.py, which an editable install finds only under a namespace
    `gatelab`, and `gatelab` is a regular package (the Python API, api/). importlib.resources cannot be used
    either: an editable install adds a placeholder entry to a namespace's path, which resources.files() rejects."""
    folder = Path(__file__).resolve().parents[2] / "ablations"  # trainer/config/shipped_data.py -> ../../ablations
    if (folder / "variants.yaml").is_file():
        return folder
    raise ImportError(
        "gatelab.ablations (the variant catalog and example grids) is not installed with gatelab; reinstall gatelab"
    )


ABLATIONS_DIR = _ablations_dir()
CATALOG_PATH = ABLATIONS_DIR / "variants.yaml"
