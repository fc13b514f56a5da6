"""gatelab as a researcher installs it: the wheel built from this checkout, installed into a fresh virtual
environment outside the checkout, used from an empty directory.

By default the venv is new and takes the tested set (constraints.txt). `.ci/run` also points
GATELAB_WHEEL_VENV at a venv that already holds the lowest torch and numpy the ranges admit, with
GATELAB_WHEEL_CONSTRAINTS=.ci/lowest.txt: the wheel must install beside that torch without replacing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PREPARED_VENV = os.environ.get("GATELAB_WHEEL_VENV")
CONSTRAINTS = Path(os.environ.get("GATELAB_WHEEL_CONSTRAINTS", ROOT / "constraints.txt")).resolve()
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _torch_version(python: Path) -> str | None:
    found = subprocess.run(
        [str(python), "-c", "from importlib import metadata; print(metadata.version('torch'))"],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The venv's python and gatelab script, an empty working directory, and torch before/after the install."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(work / "dist")],
        check=True,
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("gatelab-*.whl")
    env_dir = Path(PREPARED_VENV) if PREPARED_VENV else work / "venv"
    if not PREPARED_VENV:
        venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    torch_before = _torch_version(python)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), str(wheel)], check=True, cwd=work
    )
    empty = work / "empty"
    empty.mkdir()
    return {
        "python": python,
        "gatelab": env_dir / "bin" / "gatelab",
        "cwd": empty,
        "torch_before": torch_before,
        "torch_after": _torch_version(python),
    }


def run(installed: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GATELAB_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(installed["gatelab"]), *args],
        capture_output=True,
        text=True,
        cwd=installed["cwd"],
        env=env,
        timeout=timeout,
    )


def test_torch_already_there_is_kept(installed):
    if PREPARED_VENV:
        assert installed["torch_before"] is not None, "the prepared venv should hold a torch before the install"
        assert installed["torch_after"] == installed["torch_before"]
    else:
        assert installed["torch_after"] is not None


def test_no_generic_top_level_module_is_installed(installed):
    code = (
        "import importlib.util, json, sysconfig; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in ('grid', 'trainer', 'tracking', 'api')}"
        " | {'site': sysconfig.get_paths()['purelib']}))"
    )
    found = json.loads(
        subprocess.run(
            [str(installed["python"]), "-c", code], capture_output=True, text=True, cwd=installed["cwd"], check=True
        ).stdout
    )
    site = Path(found.pop("site"))
    assert found == {"grid": False, "trainer": False, "tracking": False, "api": False}
    assert not [name for name in ("grid", "trainer", "tracking", "api") if (site / name).exists()]
    assert {p.name for p in (site / "gatelab").iterdir()} >= {"__init__.py", "grid", "trainer", "tracking", "ablations"}


def test_version_and_help(installed):
    version = run(installed, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gatelab {VERSION}"
    helped = run(installed, "--help")
    assert helped.returncode == 0
    for command in ("variants", "bench", "train", "submit", "resume", "status", "ui", "stop-server", "init", "report"):
        assert f"    {command}" in helped.stdout, command


def test_variants_json_from_the_shipped_catalog(installed):
    listed = run(installed, "variants", "--json")
    assert listed.returncode == 0, listed.stderr
    names = [row["name"] for row in json.loads(listed.stdout)]
    assert names[0] == "baseline" and "g1_elementwise_sigmoid" in names and len(names) >= 25


def test_smoke_grid_dry_run_by_name(installed):
    dry = run(installed, "submit", "smoke", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "grid smoke: 26 trials (26 new)" in dry.stdout and "dry run: nothing started" in dry.stdout
    assert not (installed["cwd"] / "gatelab-runs" / "mlflow.db").exists()


SHORT_TRAIN = (
    "train",
    "tiny_trial",
    "--set",
    "schedule.max_steps=20",
    "--set",
    "eval.every=10",
    "--set",
    "eval.long_context_factors=[1, 2]",
)


def test_short_train_of_the_tiny_trial(installed):
    trained = run(installed, *SHORT_TRAIN)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "finished" in trained.stdout and "final_val_ppl=" in trained.stdout
    again = run(installed, *SHORT_TRAIN)
    assert again.returncode == 0 and "is already finished" in again.stdout
    run(installed, "stop-server")


def test_init_copies_editable_examples(installed):
    copied = run(installed, "init", "mine")
    assert copied.returncode == 0, copied.stderr
    assert {p.name for p in (installed["cwd"] / "mine").iterdir()} >= {"variants.yaml", "smoke.yaml", "tiny_trial.yaml"}
    assert run(installed, "init", "mine").returncode == 2  # nothing overwritten without --force
    dry = run(installed, "submit", "mine/smoke.yaml", "--dry-run")
    assert dry.returncode == 0 and "26 trials" in dry.stdout


# A one-trial cut of the smoke grid, a few steps long: enough for a finished run to read back.
ONE_TRIAL = ("axes.variant=[baseline]", "base.schedule.max_steps=4", "base.eval.every=2", "base.checkpoint.every=4")


def test_the_python_api_reads_a_finished_grid(installed):
    sets = [arg for override in ONE_TRIAL for arg in ("--set", override)]
    submitted = run(installed, "submit", "smoke", *sets)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    code = (
        "import json, gatelab; "
        f"df = gatelab.results('smoke', set={list(ONE_TRIAL)!r}, home='gatelab-runs'); "
        "print(json.dumps(df[['variant', 'status', 'final_val_loss', 'run_id']].to_dict('records')))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GATELAB_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    read = subprocess.run(
        [str(installed["python"]), "-c", code], capture_output=True, text=True, cwd=installed["cwd"], env=env
    )
    assert read.returncode == 0, read.stderr[-3000:]
    (row,) = json.loads(read.stdout.strip().splitlines()[-1])
    assert row["variant"] == "baseline" and row["status"] == "finished" and row["run_id"]
    assert 0 < row["final_val_loss"] < 10
    run(installed, "stop-server")
