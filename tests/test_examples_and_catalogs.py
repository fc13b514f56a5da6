"""What a user meets installing gatelab into their own environment: shipped examples found by name, `gatelab
init`, a catalog of their own, a file given to the wrong command, --version and --help."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from gatelab.grid.cli.main import build_parser, main
from gatelab.grid.spec import examples
from gatelab.grid.spec.examples import resolve_config_path
from gatelab.grid.spec.expand import expand
from gatelab.grid.spec.grid_file import load_grid
from gatelab.trainer import provenance
from gatelab.trainer.config.shipped_data import ABLATIONS_DIR, CATALOG_PATH

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_data_is_the_checkouts_ablations_folder():
    # An editable install maps gatelab.ablations to the repository's own folder: one source for the catalog.
    assert ABLATIONS_DIR == ROOT / "ablations" and CATALOG_PATH == ROOT / "ablations" / "variants.yaml"


def test_a_name_resolves_to_the_shipped_example_and_an_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("smoke") == ABLATIONS_DIR / "smoke.yaml"
    assert resolve_config_path("tiny_trial.yaml") == ABLATIONS_DIR / "tiny_trial.yaml"
    assert resolve_config_path("variants") == Path("variants")  # the catalog is not a grid or a trial config
    (tmp_path / "smoke").write_text("name: mine\n")
    assert resolve_config_path("smoke") == Path("smoke")
    assert resolve_config_path("sub/smoke.yaml") == Path("sub/smoke.yaml")  # a folder in it: a path, as given


def test_unknown_name_is_one_line_listing_the_shipped_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "smok", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such grid file" in err and "smoke, tiny_trial" in err
    assert not (tmp_path / "gatelab-runs").exists()


def test_trial_config_given_to_submit_and_grid_given_to_train_name_their_command(capsys):
    assert main(["submit", "tiny_trial", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "tiny_trial.yaml:" in err and "is a trial config" in err and "gatelab train" in err
    assert "unknown grid key" not in err
    assert main(["train", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "smoke.yaml:" in err and "is a grid" in err and "gatelab submit" in err


def test_init_copies_every_example_and_never_overwrites_without_force(tmp_path, capsys):
    target = tmp_path / "mine"
    assert main(["init", str(target)]) == 0
    shipped = {p.name for p in ABLATIONS_DIR.glob("*.yaml")}
    assert {p.name for p in target.iterdir()} == shipped
    (target / "smoke.yaml").write_text("# edited\n")
    (target / "variants.yaml").unlink()
    assert main(["init", str(target)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (target / "smoke.yaml").read_text() == "# edited\n" and not (target / "variants.yaml").exists()
    assert main(["init", str(target), "--force"]) == 0
    assert (target / "smoke.yaml").read_bytes() == (ABLATIONS_DIR / "smoke.yaml").read_bytes()


def _own_catalog(folder: Path) -> Path:
    """The shipped catalog plus `my_gate`, a copy of G1 elementwise under another name."""
    data = yaml.safe_load(CATALOG_PATH.read_text())
    g1 = next(row for row in data["variants"] if row["name"] == "g1_elementwise_sigmoid")
    data["variants"].append({**g1, "name": "my_gate", "paper_ref": "mine"})
    path = folder / "my_variants.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _grid(folder: Path, catalog: str, variants: str = "[baseline, g1_elementwise_sigmoid, my_gate]") -> Path:
    path = folder / "grid.yaml"
    path.write_text(
        f"base:\n  catalog: {catalog}\n  model: {{preset: tiny}}\n  schedule: {{max_steps: 5}}\n"
        f"axes:\n  variant: {variants}\n"
    )
    return path


def test_a_grid_may_name_its_own_catalog_relative_to_the_grid_file(tmp_path, monkeypatch):
    catalog = _own_catalog(tmp_path)
    monkeypatch.chdir(ROOT)  # not the grid's folder: the relative path is the grid file's
    spec = load_grid(_grid(tmp_path, catalog.name))
    assert spec.base.catalog == str(catalog)
    trials = {t.config.variant: t for t in expand(spec)}
    assert set(trials) == {"baseline", "g1_elementwise_sigmoid", "my_gate"}
    # The key hashes the variant's definition, not the catalog's path: the baseline keeps its trials.
    shipped = load_grid(_grid(tmp_path, "null", "[baseline]"))
    assert expand(shipped)[0].key == trials["baseline"].key
    assert trials["my_gate"].key != trials["g1_elementwise_sigmoid"].key  # the name is part of the definition


def test_a_catalog_path_in_the_base_file_is_taken_from_the_base_file(tmp_path):
    (tmp_path / "trials").mkdir()
    _own_catalog(tmp_path / "trials")
    (tmp_path / "trials" / "base.yaml").write_text("catalog: my_variants.yaml\nmodel: {preset: tiny}\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: trials/base.yaml\naxes:\n  variant: [my_gate]\n")
    assert load_grid(grid).base.catalog == str(tmp_path / "trials" / "my_variants.yaml")


def test_own_catalog_errors_name_file_line_and_key(tmp_path, capsys):
    _own_catalog(tmp_path)
    assert main(["submit", str(_grid(tmp_path, "my_variants.yaml", "[baseline, my_gaet]")), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml:6: axes.variant.1: unknown variant 'my_gaet' in catalog" in err and "'my_gate'" in err
    assert main(["submit", str(_grid(tmp_path, "missing.yaml")), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml:2: base.catalog:" in err and "cannot read it" in err
    (tmp_path / "broken.yaml").write_text("variants: {not: a list}\n")
    assert main(["submit", str(_grid(tmp_path, "broken.yaml")), "--dry-run"]) == 2
    assert "expected a mapping with a non-empty list `variants:`" in capsys.readouterr().err


def test_variants_lists_a_catalog_of_ones_own(tmp_path, capsys):
    assert main(["variants", "--catalog", str(_own_catalog(tmp_path)), "--model", "tiny"]) == 0
    assert "my_gate" in capsys.readouterr().out


def test_help_lists_every_command_with_a_line_and_where_names_resolve(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in commands._choices_actions}
    assert set(helps) == set(commands.choices) and all(helps.values())
    lines = parser.format_help().splitlines()
    for name, help_text in helps.items():  # the name and its whole help on one line of 80 columns
        assert any(line.split() == [name, *help_text.split()] for line in lines), name
    text = " ".join(parser.format_help().split())
    assert "name of an example shipped with gatelab" in text and "smoke" in text


def test_version_is_the_installed_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("gatelab 0.")


def test_git_sha_only_from_gatelabs_own_checkout(tmp_path, monkeypatch):
    # An installed wheel in a venv inside some other repository must not report that repository's HEAD.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    site = tmp_path / "venv" / "site-packages" / "gatelab"
    site.mkdir(parents=True)
    monkeypatch.setattr(provenance, "REPO_ROOT", site)
    assert provenance.git_sha() == "unknown"
    monkeypatch.setattr(provenance, "REPO_ROOT", ROOT)
    assert len(provenance.git_sha().removesuffix("-dirty")) == 40


def test_examples_module_lists_grids_and_trial_configs():
    kinds = {p.stem: examples.example_kind(p) for p in examples.shipped_examples()}
    assert kinds["smoke"].startswith("grid") and kinds["tiny_trial"].startswith("trial config")
    assert "variants" not in kinds


@pytest.mark.parametrize(
    "extra, message",
    [
        ([{"position": "g1"}, {"position": "g1"}], "variant 'bad_gate' has two gates at g1"),
        ([{"position": "g1"}], "variant 'bad_gate': sdpa_transform and a g1 gate both act on the SDPA output"),
    ],
    ids=["two-gates-at-one-position", "sdpa-transform-and-g1-gate"],
)
def test_every_variant_rule_is_checked_when_the_catalog_loads(tmp_path, capsys, extra, message):
    # These two rules were once checked only when a worker built the torch model, long after the grid passed.
    data = yaml.safe_load(CATALOG_PATH.read_text())
    g1 = next(row for row in data["variants"] if row["name"] == "g1_elementwise_sigmoid")["gates"][0]
    row = {"name": "bad_gate", "paper_ref": "mine", "description": "invalid", "gates": [{**g1, **e} for e in extra]}
    if "sdpa" in message:
        row["sdpa_transform"] = "rmsnorm"
    data["variants"].append(row)
    (tmp_path / "my_variants.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    grid = _grid(tmp_path, "my_variants.yaml", "[baseline]")
    assert main(["submit", str(grid), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml:2: base.catalog:" in err and message in err
