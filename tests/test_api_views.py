"""The Python API without Ray or MLflow: `import gatelab` stays light, bad input raises the CLI's typed errors, and
the progress views of a submit (plain lines, the live table, the notebook bar) show what the loop hands them."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import gatelab
from gatelab.grid.dispatch.progress import GridClock, PlainLines, RunningTrial, Silent, Snapshot, format_duration

TWO_RUNNING = (
    RunningTrial(key="aaa", label="g1_elementwise_sigmoid seed=0", step=10, max_steps=40, loss=4.25, elapsed_s=5.0),
    RunningTrial(key="bbb", label="baseline seed=0", step=0, max_steps=40, loss=None, elapsed_s=1.0),
)


def _snapshot(results: dict[str, str], running=TWO_RUNNING, elapsed_s: float = 10.0) -> Snapshot:
    return Snapshot(headline="done 1/4", running=running, queued=1, results=results, elapsed_s=elapsed_s)


def test_import_gatelab_loads_no_heavy_library_until_a_function_is_used():
    code = (
        "import sys, gatelab; heavy = {'torch', 'mlflow', 'ray', 'pandas', 'rich', 'tqdm', 'gatelab.grid'}; "
        "assert not heavy & set(sys.modules), heavy & set(sys.modules); "
        "gatelab.load_grid, gatelab.results, gatelab.submit; assert not {'torch', 'mlflow', 'ray'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_every_public_name_resolves_and_has_a_docstring_with_an_example():
    for name in gatelab.__all__:
        value = getattr(gatelab, name)
        assert value.__doc__, name
        if callable(value) and not isinstance(value, type):
            assert ">>> " in value.__doc__, name
    with pytest.raises(AttributeError):
        gatelab.no_such_function  # noqa: B018


def test_load_grid_lists_the_trials_with_their_cost():
    grid = gatelab.load_grid("smoke", set=["axes.variant=[baseline, g1_headwise_sigmoid]", "axes.seed=[0, 1]"])
    trials = grid.trials()
    assert [t.variant for t in trials] == ["baseline", "baseline", "g1_headwise_sigmoid", "g1_headwise_sigmoid"]
    assert all(t.est_flops > 0 for t in trials) and trials[2].est_flops > trials[0].est_flops  # the gate's FLOPs
    assert trials[1].overrides == {"variant": "baseline", "seed": 1}
    assert grid.overrides == ("axes.variant=[baseline, g1_headwise_sigmoid]", "axes.seed=[0, 1]")


def test_bad_input_raises_the_typed_error_with_its_key(tmp_path):
    with pytest.raises(gatelab.ConfigError) as caught:
        gatelab.load_grid("smoke", set=["base.schedule.max_steps=-3"])
    assert caught.value.key == "base.schedule.max_steps"
    with pytest.raises(gatelab.ConfigError):
        gatelab.results(tmp_path / "no_such_grid.yaml", home=tmp_path / "home")
    with pytest.raises(ValueError, match="set= overrides a grid being loaded"):
        gatelab.status(gatelab.load_grid("smoke"), set=["axes.seed=[1]"])
    assert not (tmp_path / "home").exists()  # nothing made for bad input


def test_a_grid_never_submitted_reads_as_all_new_without_starting_anything(tmp_path):
    found = gatelab.status("smoke", home=tmp_path / "home")
    assert found.counts() == {"new": 26} and all(row.run_id is None for row in found.rows)
    df = gatelab.results("smoke", home=tmp_path / "home")
    assert len(df) == 26 and set(df.status) == {"new"} and df.run_id.isna().all()
    assert gatelab.mlflow_pages("smoke", home=tmp_path / "home") is None
    assert not (tmp_path / "home" / "mlflow.db").exists()


def test_plain_lines_keep_the_clis_progress_format():
    said = []
    PlainLines(said.append).show(_snapshot({"x": "finished"}))
    (line,) = said
    assert line.endswith("] done 1/4  running 2  queued 1  | aaa@10/40 bbb@0/40") and line.startswith("[")


def test_the_grids_eta_comes_from_the_estimated_cost_of_what_is_left():
    clock = GridClock({"x": 100.0, "aaa": 100.0, "bbb": 100.0, "y": 200.0}, {"x", "aaa", "bbb", "y"})
    # trained: x whole (100) + aaa a quarter (25) + bbb nothing = 125 FLOPs in 10 s; left: 500 - 125 = 375
    assert clock.eta_s(_snapshot({"x": "finished"})) == pytest.approx(375 / 12.5)
    assert clock.eta_s(_snapshot({}, running=TWO_RUNNING[1:])) is None  # nothing trained yet: unknown
    assert TWO_RUNNING[0].eta_s == pytest.approx(15.0) and TWO_RUNNING[1].eta_s is None
    assert [format_duration(s) for s in (None, 42, 185, 3720)] == ["?", "42s", "3m05s", "1h02m"]


def test_the_live_table_shows_each_running_trial_and_the_counts():
    from rich.console import Console

    from gatelab.live_table import LiveTable

    screen = io.StringIO()
    view = LiveTable(Console(file=screen, force_terminal=True, width=120, color_system=None))
    view.start("smoke", GridClock({"x": 1.0, "aaa": 1.0, "bbb": 1.0, "y": 1.0}, {"x", "aaa", "bbb", "y"}), 3)
    view.say("  finished  x baseline seed=1  val_ppl=150.000")
    view.show(_snapshot({"x": "finished"}))
    view.finish(_snapshot({k: "finished" for k in ("x", "aaa", "bbb")} | {"y": "failed"}, running=()))
    view.close()
    text = screen.getvalue()
    assert "finished  x baseline seed=1  val_ppl=150.000" in text
    assert "grid smoke  done 1/4 (+3 before)  failed 0  running 2  queued 1" in text
    assert "g1_elementwise_sigmoid seed=0" in text and "10/40" in text and "4.250" in text
    assert "done 3/4 (+3 before)  failed 1  running 0  queued 0" in text  # the last state stays on screen


def test_the_notebook_bar_counts_results(capsys):
    from gatelab.progress_bar import ProgressBar

    bar = ProgressBar()
    bar.start("smoke", GridClock({"x": 1.0, "y": 1.0}, {"x", "y"}), 0)
    bar.say("  finished  x")
    bar.show(_snapshot({"x": "finished"}, running=()))
    assert bar.bar.n == 1 and "grid ETA" in str(bar.bar.postfix)
    bar.finish(_snapshot({"x": "finished", "y": "diverged"}, running=()))
    assert bar.bar.n == 2
    bar.close()
    assert "finished  x" in capsys.readouterr().out


def test_progress_choices(tmp_path):
    from gatelab.api_submit import progress_view

    assert isinstance(progress_view(False), Silent) and isinstance(progress_view("none"), Silent)
    assert isinstance(progress_view(True), PlainLines)  # pytest's stdout is no terminal, and this is no notebook
    with pytest.raises(ValueError, match="progress='fancy'"):
        progress_view("fancy")
    with pytest.raises(ValueError, match="progress='fancy'"):
        gatelab.submit("smoke", home=tmp_path / "home", progress="fancy")
    assert not (tmp_path / "home").exists()  # refused before the home is made
