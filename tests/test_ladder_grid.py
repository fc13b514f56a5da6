"""A grid's `ladder:` block (grid/spec/ladder_spec.py): rungs from a width rule or as written, each rung's
budget (tokens per non-embedding parameter), steps, LR and warmup rules, the trials it multiplies the grid
into, and the dry run's per-rung table with measured wall time."""

import math

import pytest
import yaml

from gatelab.grid.cli.main import main
from gatelab.grid.spec.config_loader import ConfigError
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.ladder_spec import PAPER_TARGET_PARAMS, PAPER_TARGET_TOKENS
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.model_cost import non_embedding_params

BASE = {
    "model": {"preset": "tiny"},
    "data": {"source": "stdlib"},
    "optim": {"lr": 3e-3, "warmup_steps": 5},
    "schedule": {"max_steps": 60, "batch_size": 128},
}


def _grid(tmp_path, ladder: dict, **grid):
    path = tmp_path / "ladder.yaml"
    axes = grid.pop("axes", {"variant": ["baseline", "g1_elementwise_sigmoid"], "seed": [0, 1]})
    path.write_text(yaml.safe_dump({"name": "lad", "base": BASE, "axes": axes, "ladder": ladder, **grid}))
    return load_grid(path)


def test_the_shipped_smoke_ladder_budgets_each_rung_by_its_parameters():
    spec = load_grid("ladder_smoke")
    trials = expand(spec)
    rungs = spec.ladder.rungs
    assert len(rungs) == 4 and len(trials) == 4 * 2 * 2  # rungs x variants x seeds, each its own key
    assert len({t.key for t in trials}) == len(trials)
    baseline = get_variant("baseline")
    tokens_per_step = spec.base.tokens_per_step
    for rung in rungs:
        at = [t for t in trials if t.config.model.overrides == rung.model_overrides]
        assert len(at) == 4
        params = non_embedding_params(at[0].config.model.resolve(), baseline)
        assert rung.non_embedding_params == params and rung.tokens == 20 * params
        assert {t.config.schedule.max_steps for t in at} == {math.ceil(20 * params / tokens_per_step)}
        # LR falls as N^(-1/3) from the base's at the first rung; warmup ~ N tokens
        assert rung.lr == pytest.approx(3e-3 * (params / rungs[0].non_embedding_params) ** (-1 / 3))
        assert {t.config.optim.lr for t in at} == {rung.lr}
        assert rung.warmup_steps == min(rung.steps - 1, math.ceil(params / tokens_per_step))
        # a gate's own FLOPs are counted, beyond the baseline's at the same size and tokens
        flops = {t.config.variant: training_flops(t) for t in at}
        assert flops["g1_elementwise_sigmoid"] > flops["baseline"]
    sizes = [r.non_embedding_params for r in rungs]
    assert all(1.5 <= b / a <= 3 for a, b in zip(sizes, sizes[1:]))  # spaced ~2x (1.8-2.2x), as ladders are
    assert spec.ladder.target_flops == pytest.approx(6 * PAPER_TARGET_PARAMS * PAPER_TARGET_TOKENS)


def test_rungs_as_written_an_lr_axis_and_a_flops_target(tmp_path):
    rungs = [{"d_model": 16, "n_q_heads": 2, "n_kv_heads": 1}, {"d_model": 32}, {"d_model": 64, "n_q_heads": 8}]
    spec = _grid(
        tmp_path,
        {"rungs": rungs, "tokens_per_param": 5, "target": {"flops": 1e18}, "floor": 1.5},
        axes={"variant": ["baseline", "g1_headwise_sigmoid"], "optim.lr": [1e-3, 3e-3]},
    )
    assert [r.model_overrides for r in spec.ladder.rungs] == rungs
    assert spec.ladder.lr_rule == "none"  # the axis tunes the LR per rung; the fit takes each rung's best
    assert {t.config.optim.lr for t in expand(spec)} == {1e-3, 3e-3}
    assert spec.ladder.target_flops == 1e18 and spec.ladder.floor == 1.5


@pytest.mark.parametrize(
    "ladder, key",
    [
        ({"widths": [16, 24, 32], "rungs": [{"d_model": 16}] * 3}, "ladder"),
        ({"widths": [32, 24, 48]}, "ladder.widths"),  # not growing
        ({"widths": [16, 24, 32], "lr_rule": "sqrt"}, "ladder.lr_rule"),
        ({"widths": [16, 24, 32], "target": {"params": 1e9}}, "ladder.target"),
        ({"widths": [16, 24, 32], "tokens_per_param": 0}, "ladder.tokens_per_param"),
    ],
)
def test_a_bad_ladder_names_its_key(tmp_path, ladder, key):
    with pytest.raises(ConfigError) as err:
        _grid(tmp_path, ladder)
    assert err.value.key == key, str(err.value)


def test_the_dry_run_lists_every_rung_with_its_cost_and_measured_wall_time(capsys):
    assert main(["submit", "ladder_smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rung "))
    rows = lines[header + 1 : header + 5]
    assert [row.split()[0] for row in rows] == ["0", "1", "2", "3"]
    for row in rows:
        assert row.rstrip().endswith(" s") or row.rstrip().endswith(" min")  # a measured wall time
    assert "ladder ladder_smoke: 4 rungs, 20 tokens per non-embedding parameter" in out
    assert "the largest rung's trial (the extrapolation the fit makes)" in out
