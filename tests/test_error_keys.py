"""Where an error points comes from the key the validator raised with, never from the words of its message."""

import pickle
from dataclasses import dataclass

import pytest
import yaml

from gatelab.grid.spec.config_loader import ConfigError, build, read_yaml
from gatelab.grid.spec.trial_file import load_trial_config
from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.gate_spec import SpecError
from gatelab.trainer.config.invalid import InvalidValue
from gatelab.trainer.corpus import DataError


@dataclass(frozen=True, kw_only=True)
class _Pair:
    low: int = 0
    high: int = 1

    def __post_init__(self) -> None:
        if self.high <= self.low:
            # The message opens with another field's name: only the key says which line is at fault.
            raise InvalidValue("high", f"low={self.low} leaves no room: expected a larger value", value=self.high)


@dataclass(frozen=True, kw_only=True)
class _Outer:
    pair: _Pair


@dataclass(frozen=True, kw_only=True)
class _Library:
    level: int = 0

    def __post_init__(self) -> None:
        if self.level < 0:
            raise ValueError("math domain error")  # as a library raises it: no key


def _located(tmp_path, cls, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    data, lines = read_yaml(path)
    with pytest.raises(ConfigError) as err:
        build(cls, data)
    return str(err.value.located(str(path), lines)).removeprefix(f"{path}:")


def test_a_message_that_names_another_field_is_located_at_its_key(tmp_path):
    line = _located(tmp_path, _Outer, "pair:\n  low: 5\n  high: 3\n")
    assert line == "3: pair.high=3: low=5 leaves no room: expected a larger value"


def test_a_value_error_without_a_key_falls_back_to_the_object_at_fault(tmp_path):
    assert _located(tmp_path, _Library, "level: -1\n") == "1: <top>: math domain error"


def _trial(tmp_path, text: str) -> str:
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_trial_config(path)
    return str(err.value).removeprefix(f"{path}:")


def test_a_model_override_is_located_at_its_own_line(tmp_path):
    # ModelConfig -> ModelChoice.overrides -> TrialConfig.model: each holder adds its part of the key.
    text = "variant: baseline\nmodel:\n  preset: tiny\n  overrides:\n    n_kv_heads: 3\n"
    assert _trial(tmp_path, text) == "5: model.overrides.n_kv_heads=3: expected a divisor of n_q_heads=4 " + (
        "(grouped-query attention)"
    )
    assert _trial(tmp_path, "seed: 1\nmodel:\n  preset: tiny-mo\n").startswith("3: model.preset: unknown model preset")


def test_a_variant_that_does_not_fit_the_model_is_located_at_the_variant(tmp_path):
    assert _trial(tmp_path, "seed: 1\nvariant: more_experts\n") == (
        "2: variant: variant 'more_experts' adds experts, which needs an MoE preset (model.n_experts > 0)"
    )


def test_a_catalog_row_error_keeps_its_place_in_the_catalog(tmp_path):
    rows = [
        {"name": "baseline", "paper_ref": "x", "description": "y"},
        {"name": "bad", "paper_ref": "x", "description": "y", "gates": [{"position": "g1"}, {"position": "g9"}]},
    ]
    catalog = tmp_path / "mine.yaml"
    catalog.write_text(yaml.safe_dump({"variants": rows}))
    with pytest.raises(SpecError) as err:
        load_catalog(catalog)
    assert err.value.key == "variants.1.gates.1.position"
    # In a trial config the catalog is the `catalog:` line; the place inside that file is in the message.
    assert _trial(tmp_path, "seed: 0\ncatalog: mine.yaml\n") == (
        "2: catalog: variants.1.gates.1.position: variant 'bad': gate.position='g9' is not one of: g1, g2, g3, g4, g5"
    )


def test_a_string_is_not_an_integer_even_where_the_schema_is_a_dict(tmp_path):
    assert _trial(tmp_path, "schedule:\n  max_steps: '5'\n") == "2: schedule.max_steps: expected an integer, got '5'"
    overrides = "model:\n  overrides:\n    n_layers: '5'\n"
    assert _trial(tmp_path, overrides) == "3: model.overrides.n_layers='5': expected a positive integer"


@pytest.mark.parametrize(
    "err",
    [
        InvalidValue("optim.lr", "expected a positive number", value=0.0),
        SpecError("gates", "variant 'x' has two gates at g1").under("variants.3"),
        DataError("expected 'auto', 'text' or 'tokens'", "format", value="jsonl"),
        ConfigError("base.seed", "expected an integer, got 'x'", "grid.yaml", 4),
    ],
    ids=lambda err: type(err).__name__,
)
def test_errors_cross_a_process_boundary_with_their_key(err):
    # Ray pickles a task's exception back to the driver.
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err) and back.key == err.key and back.value == err.value
