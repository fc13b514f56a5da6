import pytest
import torch

from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.presets import preset

CATALOG = load_catalog()


def preset_for(variant_name: str) -> str:
    """Tiny dense preset, except for variants that need experts."""
    return "tiny-moe" if CATALOG[variant_name].shape_change.add_experts else "tiny"


@pytest.fixture
def tokens_BT():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (2, 24), generator=generator)
    tokens[:, 0] = 256  # BOS, as every training sequence starts
    return tokens


@pytest.fixture(params=["tiny", "tiny-moe"])
def tiny_preset(request):
    return preset(request.param)


@pytest.fixture(scope="module")
def served_store(tmp_path_factory):
    """A fresh gatelab home with its MLflow server running for the module: (store, tracking URI)."""
    # Imported here: the GPU check runs the trainer's tests where MLflow (and Ray, Optuna) are not installed.
    from gatelab.tracking import Store, ensure_server, stop_server

    store = Store.open(str(tmp_path_factory.mktemp("home")))
    info, _ = ensure_server(store)
    yield store, info.uri
    stop_server(store)
