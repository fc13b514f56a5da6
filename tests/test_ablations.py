"""Every YAML under ablations/ parses and expands: grids into trials, trial files into a TrialConfig."""

from pathlib import Path

import pytest
import yaml

from gatelab.grid.cli.main import main
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.trial_file import load_trial_config
from gatelab.trainer.config.catalog import load_catalog

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"
FILES = sorted(p for p in ABLATIONS.glob("*.yaml") if p.name != "variants.yaml")


def test_catalog_file_loads():
    assert len(load_catalog(ABLATIONS / "variants.yaml")) >= 25


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_ablation_file_parses_and_expands(path):
    data = yaml.safe_load(path.read_text())
    if "axes" in data or "base" in data:
        trials = expand(load_grid(path))
        assert trials and len({t.key for t in trials}) == len(trials)
    else:
        assert load_trial_config(path).schedule.max_steps > 0
    assert path.read_text().startswith("#"), "each file starts with a comment stating its question"


def test_smoke_grid_has_every_dense_variant_and_dry_run_starts_nothing(tmp_path, capsys):
    trials = expand(load_grid(ABLATIONS / "smoke.yaml"))
    assert {t.config.variant for t in trials} == set(load_catalog()) - {"more_experts"}
    assert main(["submit", str(ABLATIONS / "smoke.yaml"), "--dry-run", "--home", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert all(t.key in out for t in trials) and "26 trials" in out
    assert not (tmp_path / "h").exists()
