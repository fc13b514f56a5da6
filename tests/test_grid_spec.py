"""Grid files: parsing, validation errors (file:line:key), expansion, keys and the dry-run table. No Ray, no MLflow."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from gatelab.grid.cli.dry_run import format_flops, training_flops, trial_rows, trial_table
from gatelab.grid.dispatch.submit import dispatch_order
from gatelab.grid.spec.config_loader import ConfigError
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.identity import trial_key
from gatelab.trainer.config.catalog import get_variant, load_catalog
from gatelab.trainer.config.model_cost import forward_flops_per_token
from gatelab.trainer.config.trial import TrialConfig
from gatelab.trainer.corpus import data_fingerprint

ROOT = Path(__file__).resolve().parents[1]
MALFORMED = sorted((Path(__file__).parent / "malformed_grids").glob("*.yaml"))
GRID_FILES = [p for p in sorted((ROOT / "ablations").glob("*.yaml")) if "base" in (yaml.safe_load(p.read_text()) or {})]


@pytest.fixture
def write(tmp_path):
    """write(body) -> path of a grid file whose `CORPUS` placeholder is a small text file (fast fingerprint)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 50)

    def _write(body: str, name: str = "g.yaml") -> Path:
        path = tmp_path / name
        path.write_text(body.replace("CORPUS", str(corpus)))
        return path

    return _write


BASE = """\
base:
  model: {preset: tiny}
  data: {source: CORPUS}
  schedule: {max_steps: 30, batch_size: 4}
"""


def test_a_valid_grid_parses(write):
    path = write(
        "name: demo\n"
        + BASE
        + """\
axes:
  variant: [baseline, g1_elementwise_sigmoid]
  optim.lr: [1.0e-3, 3.0e-3]
resources: {gpus: 1, cpus: 4}
tracking: {uri: "http://mlflow:5000", experiment: gates}
storage: {checkpoint_root: /shared/ckpt}
ray: {address: auto, max_concurrent: 8, max_retries: 0}
search: {params: {optim.warmup_steps: {int: [0, 10]}}, sampler: {type: random, seed: 0}, n_trials: 4}
"""
    )
    spec = load_grid(path)
    assert spec.name == "demo" and spec.combine == "cross"
    assert spec.axes == {"variant": ("baseline", "g1_elementwise_sigmoid"), "optim.lr": (1e-3, 3e-3)}
    assert (spec.resources.gpus, spec.resources.cpus) == (1, 4)
    assert (spec.tracking.uri, spec.tracking.experiment) == ("http://mlflow:5000", "gates")
    assert spec.storage.checkpoint_root == "/shared/ckpt"
    assert (spec.ray.address, spec.ray.max_concurrent, spec.ray.max_retries) == ("auto", 8, 0)
    assert spec.search.n_trials == 4 and spec.search.sampler.type == "random"
    assert spec.base.schedule.max_steps == 30 and spec.source == str(path)
    assert re.fullmatch(r"[0-9a-f]{16}", spec.file_hash)


def test_defaults_name_from_the_file_stem(write):
    spec = load_grid(write(BASE, name="my_grid.yaml"))
    assert spec.name == "my_grid" and spec.tracking.experiment is None and spec.ray.max_concurrent == 2
    assert [t.overrides for t in expand(spec)] == [{}]  # no axes: the base is the one trial
    assert len(expand(replace(spec, combine="zip"))) == 1


def test_cross_varies_the_last_axis_fastest(write):
    spec = load_grid(write(BASE + "axes:\n  variant: [baseline, g1_headwise_sigmoid]\n  seed: [0, 1, 2]\n"))
    trials = expand(spec)
    assert [(t.config.variant, t.config.seed) for t in trials] == [
        ("baseline", 0),
        ("baseline", 1),
        ("baseline", 2),
        ("g1_headwise_sigmoid", 0),
        ("g1_headwise_sigmoid", 1),
        ("g1_headwise_sigmoid", 2),
    ]
    assert trials[4].label == "g1_headwise_sigmoid seed=1"
    assert trials[4].config.name == "g/g1_headwise_sigmoid seed=1"


def test_zip_pairs_the_values(write):
    spec = load_grid(write(BASE + "combine: zip\naxes:\n  seed: [0, 1, 2]\n  optim.lr: [1.0e-3, 2.0e-3, 3.0e-3]\n"))
    trials = expand(spec)
    assert [(t.config.seed, t.config.optim.lr) for t in trials] == [(0, 1e-3), (1, 2e-3), (2, 3e-3)]
    assert trials[2].overrides == {"seed": 2, "optim.lr": 3e-3} and trials[2].label == "baseline seed=2 lr=0.003"


def test_include_adds_trials_and_exclude_removes_them(write):
    spec = load_grid(
        write(
            BASE
            + """\
axes:
  variant: [baseline, g1_elementwise_sigmoid]
  seed: [0, 1]
include:
  - {variant: more_experts, model.preset: tiny-moe}
exclude:
  - {variant: baseline, seed: 1}
  - {variant: g1_elementwise_sigmoid, schedule.max_steps: 30, seed: 0}  # max_steps from the base
  - {variant: g1_elementwise_sigmoid, schedule.max_steps: 99}           # matches nothing
"""
        )
    )
    trials = expand(spec)
    assert [(t.config.variant, t.config.seed, t.config.model.preset) for t in trials] == [
        ("baseline", 0, "tiny"),
        ("g1_elementwise_sigmoid", 1, "tiny"),
        ("more_experts", 0, "tiny-moe"),
    ]
    assert trials[-1].overrides == {"variant": "more_experts", "model.preset": "tiny-moe"}


def test_exclude_can_remove_combinations_that_do_not_build(write):
    spec = load_grid(
        write(
            BASE
            + """\
axes:
  variant: [baseline, more_experts]
  model.preset: [tiny, tiny-moe]
exclude:
  - {variant: more_experts, model.preset: tiny}
"""
        )
    )
    assert [(t.config.variant, t.config.model.preset) for t in expand(spec)] == [
        ("baseline", "tiny"),
        ("baseline", "tiny-moe"),
        ("more_experts", "tiny-moe"),
    ]


@pytest.mark.parametrize("preset", ["tiny", "tiny-moe"])
def test_variant_all_is_every_variant_that_fits_the_preset(write, preset):
    spec = load_grid(write(BASE.replace("preset: tiny", f"preset: {preset}") + "axes:\n  variant: all\n"))
    catalog = list(load_catalog())
    expected = catalog if preset == "tiny-moe" else [name for name in catalog if name != "more_experts"]
    assert spec.axes["variant"] == tuple(expected)
    assert [t.config.variant for t in expand(spec)] == expected


def test_set_overrides_change_the_grid_and_the_keys(write):
    path = write(BASE + "axes:\n  seed: [0]\n  optim.lr: [1.0e-3]\nray: {max_concurrent: 4}\n")
    before = expand(load_grid(path))
    spec = load_grid(
        path, ["base.schedule.max_steps=5", "axes.seed=[0, 1]", "ray.max_concurrent=1", "axes.optim.lr=[2.0e-3]"]
    )
    after = expand(spec)
    assert spec.ray.max_concurrent == 1 and spec.axes == {"seed": (0, 1), "optim.lr": (2e-3,)}
    assert [t.config.schedule.max_steps for t in after] == [5, 5]
    assert len(after) == 2 and not {t.key for t in after} & {t.key for t in before}
    same_values = load_grid(path, ["base.schedule.max_steps=30"])  # the file's own value: the same trials
    assert [t.key for t in expand(same_values)] == [t.key for t in before]


def test_a_bad_set_value_is_reported_as_the_command_line(write):
    path = write(BASE)
    with pytest.raises(ConfigError) as err:
        load_grid(path, ["base.schedule.max_steps=0"])
    assert str(err.value) == "--set: base.schedule.max_steps=0: expected a positive integer"
    with pytest.raises(ConfigError, match=r"^--set: axes.variant.1: unknown variant 'g1'"):
        load_grid(path, ["axes.variant=[baseline, g1]"])


def test_resubmitting_gives_the_same_keys_and_each_trial_its_own(write):
    path = write(BASE + "axes:\n  variant: [baseline, g1_elementwise_sigmoid]\n  seed: [0, 1]\n")
    first, second = expand(load_grid(path)), expand(load_grid(path))
    assert [t.key for t in first] == [t.key for t in second]
    assert len({t.key for t in first}) == 4  # seeds and variants each change the key


def test_names_and_labels_do_not_change_keys(write):
    path = write(BASE + "axes:\n  seed: [0, 1]\n")
    renamed = load_grid(path, ["name=renamed", "base.name=other", "tracking.experiment=elsewhere"])
    original, edited = expand(load_grid(path)), expand(renamed)
    assert [t.config.name for t in edited] == ["renamed/baseline seed=0", "renamed/baseline seed=1"]
    assert [t.key for t in edited] == [t.key for t in original]


def test_axes_that_do_not_change_the_result_collapse_to_one_trial(write):
    trials = expand(load_grid(write(BASE + "axes:\n  checkpoint.every: [5, 10]\n  seed: [0, 1]\n")))
    assert [(t.config.checkpoint.every, t.config.seed) for t in trials] == [(5, 0), (5, 1)]


def test_expand_keys_equal_trial_key_for_every_kind_of_axis(write):
    spec = load_grid(
        write(
            BASE
            + """\
axes:
  variant: [baseline, more_q_heads]
  schedule.seq_len: [null, 32]
  model.overrides.n_layers: [2, 3]
  optim.lr: [1.0e-3, 1]
  eval.batches: [1, 2]
  stability.spike_factor: [1.3, 2]
  data.val_percent: [1.0, 5]
  schedule.batch_size: [4, 8]
include:
  - {optim: {lr: 2.0e-3, warmup_steps: 3}, seed: 7}
"""
        )
    )
    trials = expand(spec)
    assert len(trials) == 2**8 + 1
    assert trials[-1].label == "baseline optim={lr=0.002,warmup_steps=3} seed=7"
    prints = {t.config.data: data_fingerprint(t.config.data) for t in trials}
    assert [t.key for t in trials] == [trial_key(t.config, prints[t.config.data]) for t in trials]


def test_a_10000_trial_grid_has_10000_distinct_keys(write):
    spec = load_grid(write(BASE + "axes:\n  seed: [0]\n"), [f"axes.seed={list(range(10_000))}"])
    assert len({t.key for t in expand(spec)}) == 10_000


def test_a_spec_built_by_hand_expands(write):
    spec = GridSpec(name="hand", base=TrialConfig(), axes={"seed": (0, 1)})
    assert [t.label for t in expand(spec)] == ["baseline seed=0", "baseline seed=1"]
    assert expand(replace(spec, axes={"seed": (2,)}))[0].config.seed == 2  # replace: no stale cache


def test_base_may_be_a_trial_file_and_its_errors_name_that_file(write, tmp_path):
    trial = tmp_path / "trial.yaml"
    trial.write_text(f"variant: g1_elementwise_sigmoid\ndata: {{source: {tmp_path / 'corpus.txt'}}}\n")
    spec = load_grid(write("base: trial.yaml\naxes:\n  seed: [0, 1]\n"), ["base.schedule.max_steps=7"])
    assert [(t.config.variant, t.config.schedule.max_steps) for t in expand(spec)] == [
        ("g1_elementwise_sigmoid", 7),
        ("g1_elementwise_sigmoid", 7),
    ]
    trial.write_text("variant: g1_elementwise_sigmoid\nschedule:\n  max_steps: 0\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(trial))}:3: base.schedule.max_steps=0"):
        load_grid(tmp_path / "g.yaml")


def test_dry_run_table(write):
    spec = load_grid(write(BASE + "axes:\n  variant: [baseline, g1_elementwise_sigmoid]\n  optim.lr: [1.0e-3]\n"))
    trials = expand(spec)
    table = trial_table(spec, trials, {trials[0].key: "finished"})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["key", "variant", "overrides"] and len(lines) == 4
    assert lines[1].split()[:4] == [trials[0].key, "baseline", "lr=0.001", "finished"]
    assert lines[2].split()[:4] == [trials[1].key, "g1_elementwise_sigmoid", "lr=0.001", "new"]
    assert "2 trials (1 finished, 1 new)" in lines[-1]
    config = trials[1].config
    forward = forward_flops_per_token(config.model.resolve(), get_variant(config.variant), 64).total
    assert trial_rows(spec, trials)[1]["est_flops"] == 3 * forward * 4 * 64 * 30
    assert lines[2].split()[-1] == format_flops(3 * forward * 4 * 64 * 30)
    assert (format_flops(1.23e12), format_flops(9.96e9), format_flops(5.0)) == ("1.2e12", "1.0e10", "5.0e0")


def test_trials_are_dispatched_longest_first_and_ties_keep_the_grid_order(write):
    spec = load_grid(
        write(
            BASE + "axes:\n  variant: [baseline, g1_elementwise_sigmoid]\n"
            "  schedule.max_steps: [10, 40]\n  seed: [0, 1]\n"
        )
    )
    trials = expand(spec)
    ordered = dispatch_order(trials)
    flops = [training_flops(t) for t in ordered]
    assert flops == sorted(flops, reverse=True) and flops[0] > flops[-1]
    assert sorted(t.key for t in ordered) == sorted(t.key for t in trials)
    first = [t for t in ordered if training_flops(t) == flops[0]]
    assert [t.overrides["seed"] for t in first] == [0, 1]  # stable: seed 0 before seed 1, as in the grid
    assert first[0].overrides["variant"] == "g1_elementwise_sigmoid" and first[0].config.schedule.max_steps == 40


@pytest.mark.parametrize("path", GRID_FILES, ids=lambda p: p.stem)
def test_every_grid_in_ablations_parses_and_expands(path):
    trials = expand(load_grid(path))
    assert trials and len({t.key for t in trials}) == len(trials)


def test_the_smoke_grid_runs_every_dense_variant_briefly():
    spec = load_grid(ROOT / "ablations" / "smoke.yaml")
    trials = expand(spec)
    assert len(trials) == len(load_catalog()) - 1 and spec.resources.gpus == 0
    assert all(t.config.model.preset == "tiny" and t.config.schedule.max_steps <= 60 for t in trials)


def test_there_are_at_least_20_malformed_grids():
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_grid_names_file_line_and_key(path):
    text = path.read_text()
    expect = re.search(r"^# expect: (.+)$", text, re.M).group(1)
    line = int(re.search(r"^# line: (\d+)$", text, re.M).group(1))
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:{line}:") and expect in message, message


def test_grid_modules_do_not_import_torch():
    modules = "gatelab.grid.spec.grid_spec, gatelab.grid.spec.expand, gatelab.grid.cli.dry_run"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_relative_checkpoint_root_reaches_workers_as_an_absolute_path(write, tmp_path, monkeypatch):
    # Ray workers do not run in the submitting process's directory.
    monkeypatch.chdir(tmp_path)
    spec = load_grid(write(BASE + "storage: {checkpoint_root: ckpts}\n"))
    assert spec.storage.root(Path("/unused")) == str(tmp_path / "ckpts")
    assert load_grid(write(BASE)).storage.root(tmp_path / "home") == str(tmp_path / "home")
