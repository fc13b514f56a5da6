"""--set parsing and single-trial config errors (file, line, dotted key, nearest name)."""

import pytest

from gatelab.grid.spec.config_loader import ConfigError, parse_override
from gatelab.grid.spec.trial_file import load_trial_config


@pytest.mark.parametrize(
    "text, expected",
    [
        ("optim.lr=3e-3", ("optim.lr", 0.003)),
        ("optim.lr=3.0e-3", ("optim.lr", 0.003)),
        ("seed=2", ("seed", 2)),
        ("axes.seed=[0, 1]", ("axes.seed", [0, 1])),
        ("data.source=a/b.txt", ("data.source", "a/b.txt")),
        ("model.overrides={n_layers: 3}", ("model.overrides", {"n_layers": 3})),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_bad_override_and_config_errors_name_file_line_and_key(tmp_path):
    with pytest.raises(ConfigError, match="expected --set dotted.key=value"):
        parse_override("optim.lr")
    path = tmp_path / "t.yaml"
    path.write_text("variant: baseline\noptim:\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        load_trial_config(path)
    assert str(err.value) == f"{path}:3: optim.lr: expected a number, got 'fast'"
    path.write_text("variant: g1_elementwize_sigmoid\n")
    with pytest.raises(ConfigError, match=r":1: variant: unknown variant .*did you mean 'g1_elementwise_sigmoid'"):
        load_trial_config(path)
    assert load_trial_config(path, ["variant=baseline", "optim.lr=1e-3"]).optim.lr == 0.001
