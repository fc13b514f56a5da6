"""Layer rules (docs/design.md) and the `gatelab variants` command as a user runs it."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grid_helpers import run_gatelab

ROOT = Path(__file__).resolve().parents[1]


PACKAGES = ("grid", "trainer", "tracking")  # folders at the repository's top, installed as gatelab.<folder>


def imported_modules(folder: str) -> set[str]:
    """Every absolute module name imported anywhere in the folder (`import a.b` and `from a.b import c`)."""
    names = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def layer(module: str) -> str:
    """`gatelab.trainer.model.lm` -> `gatelab.trainer`; a third-party module -> its top-level name."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "gatelab" else parts[0]


def imported_layers(folder: str) -> set[str]:
    return {layer(name) for name in imported_modules(folder)}


def test_trainer_never_imports_ray_mlflow_optuna_or_the_other_layers():
    assert not imported_layers("trainer") & {"ray", "mlflow", "optuna", "gatelab.grid", "gatelab.tracking"}


def test_only_tracking_imports_mlflow():
    for folder in ("grid", "trainer"):
        assert "mlflow" not in imported_layers(folder), folder


def test_grid_never_imports_torch_at_module_level_or_below():
    # grid/ reaches torch only through gatelab.trainer, imported inside the commands that train.
    assert "torch" not in imported_layers("grid") and "lightning" not in imported_layers("grid")


def test_own_code_is_imported_only_under_the_gatelab_name():
    # Bare `grid`, `trainer`, `tracking` would collide with other packages (and a user's own modules), and would
    # load a second copy of a module beside its gatelab.* twin when run from the checkout.
    for folder in (*PACKAGES, "tests"):
        bare = {name for name in imported_modules(folder) if name.split(".")[0] in PACKAGES}
        assert not bare, (folder, sorted(bare))


def test_the_trainers_config_folder_is_its_torch_free_part():
    # What the grid driver imports of the trainer: configs, the catalog, presets, cost, results, metric names.
    imported = imported_modules("trainer/config")
    assert not {layer(name) for name in imported} & {"torch", "lightning", "ray", "mlflow", "optuna"}
    outside = {n for n in imported if n.startswith("gatelab.") and not n.startswith("gatelab.trainer.config")}
    assert outside <= {"gatelab.trainer.corpus"}, sorted(outside)  # the data's identity: numpy only


# tracking/'s rooms, each importing only the rooms named here (and the home's layout, tracking/store.py), so
# the imports run one way: server/ <- runs/ <- report/ -> stats/. None imports the gatelab.tracking facade.
TRACKING_ROOMS = {"server": set(), "runs": {"server"}, "stats": set(), "report": {"server", "runs", "stats"}}


def test_trackings_rooms_import_one_way():
    assert {p.name for p in (ROOT / "tracking").iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        TRACKING_ROOMS
    )
    for room, allowed in TRACKING_ROOMS.items():
        own = {n for n in imported_modules(f"tracking/{room}") if n.startswith("gatelab.tracking")}
        rooms = {n.split(".")[2] if n.count(".") >= 2 else "(facade)" for n in own}
        assert rooms <= {room, "store", *allowed}, (room, sorted(own))


def test_the_statistics_room_is_pure():
    # What the driver (adaptive seeds) and every report share: numbers in, numbers out.
    assert not imported_layers("tracking/stats") & {"mlflow", "matplotlib", "torch", "ray", "optuna", "gatelab.grid"}


def test_the_engine_never_imports_its_benchmarks():
    assert not {n for n in imported_modules("grid/dispatch") if n.startswith("gatelab.grid.bench")}


def module_level_imports(path: Path) -> set[str]:
    """Own modules a file imports when it is loaded: not inside functions, not under `if TYPE_CHECKING:`."""
    names = set()
    pending = list(ast.parse(path.read_text()).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.startswith("gatelab.")}


def test_no_import_cycles():
    # A cycle makes import order matter and hides which module is the lower layer.
    def name(path: Path) -> str:
        parts = path.relative_to(ROOT).with_suffix("").parts
        return ".".join(("gatelab", *(parts[:-1] if parts[-1] == "__init__" else parts)))

    graph = {name(path): module_level_imports(path) for folder in PACKAGES for path in (ROOT / folder).rglob("*.py")}
    # api/ is the package `gatelab` itself: api/api_grid.py is gatelab.api_grid
    graph |= {
        "gatelab" if path.stem == "__init__" else f"gatelab.{path.stem}": module_level_imports(path)
        for path in (ROOT / "api").glob("*.py")
    }
    graph = {
        module: {other for other in imports if other in graph and other != module} for module, imports in graph.items()
    }
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(module) :] + [module]))
        if module not in done:
            for other in sorted(graph[module]):
                visit(other, [*trail, module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_api_sits_below_the_cli_and_import_gatelab_loads_nothing():
    # The CLI (grid/cli/) is a thin layer over the API (api/, the package `gatelab`): never the other way round.
    assert not {n for n in imported_modules("api") if n.startswith("gatelab.grid.cli")}
    # Every gatelab.* import (a Ray worker's too) runs api/__init__.py first: it imports nothing at all.
    assert module_level_imports(ROOT / "api" / "__init__.py") == set()


def test_grid_cli_does_not_load_torch():
    code = "import sys, gatelab.grid.cli.main; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ablations_holds_yaml_only():
    assert all(p.suffix in (".yaml", ".yml") for p in (ROOT / "ablations").rglob("*") if p.is_file())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_gatelab(*args)


def test_variants_json_matches_paper_table1():
    result = run_cli("variants", "--model", "paper-moe-15a2b", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["g1_elementwise_sigmoid"]["extra_params"] == 2048 * 32 * 128 * 24
    assert round(rows["g1_headwise_sigmoid"]["extra_params"] / 1e6, 1) == 1.6
    assert round(rows["g2_elementwise_sigmoid"]["extra_params"] / 1e6) == 25
    assert round(rows["g5_elementwise_sigmoid"]["extra_params"] / 1e6, -1) == 100
    assert round(rows["more_kv_heads"]["extra_params"] / 1e6) == 50
    assert round(rows["more_q_heads"]["extra_params"] / 1e6) == 201
    assert all(isinstance(r["extra_params"], int) and r["paper_ref"] for r in rows.values())


def test_variants_table_and_bad_preset():
    table = run_cli("variants", "--model", "tiny")
    assert table.returncode == 0 and "g1_headwise_sigmoid" in table.stdout and "more_experts" in table.stdout
    bad = run_cli("variants", "--model", "huge")
    assert bad.returncode == 2 and "invalid choice: 'huge'" in bad.stderr


@pytest.mark.parametrize("name", ["baseline", "g1_elementwise_sigmoid"])
def test_bench_gates_json(name):
    from gatelab.trainer.bench.gates import bench_gates
    from gatelab.trainer.config.presets import preset

    results = {r.name: r for r in bench_gates(preset("tiny"), rounds=2, warmup=1, names=[name])}
    # The baseline is timed against itself too (its ratio is the noise floor); its value is a timing, which a
    # loaded machine moves (5.3 seen beside the rest of the suite), so only its presence is checked here.
    assert set(results) == {"baseline", name} and all(r.ratio > 0 and r.median_ms > 0 for r in results.values())
    assert (results[name].extra_flop_share > 0) == (name != "baseline")


def test_output_into_a_pipe_that_closes_ends_quietly():
    # 26 variants x 100 seeds: ~200 KB, more than a pipe holds, so `head` closes it while gatelab still writes.
    seeds = "[" + ",".join(map(str, range(100))) + "]"
    done = subprocess.run(
        f"{sys.executable} -m gatelab.grid.cli submit smoke --dry-run --set 'axes.seed={seeds}' | head -2",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.stdout.startswith("key ") and len(done.stdout.splitlines()) == 2
    assert done.stderr == "", done.stderr[-2000:]


@pytest.mark.parametrize("grid", ["no_such_grid", "tiny_trial"])  # unknown; a trial config, not a grid
def test_ui_with_a_bad_grid_exits_2_with_one_line_and_starts_nothing(grid, tmp_path):
    result = run_cli("ui", grid, "--home", str(tmp_path / "home"), "--port", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("gatelab: error: ") and grid in result.stderr
    assert not (tmp_path / "home").exists()
