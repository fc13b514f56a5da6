"""`gatelab train` on bad input: every case in tests/malformed_train/ ends with one line naming the file (or
`--set`, for a value given on the command line) and the key, exit 2, and nothing created: no gatelab home, so no
MLflow server, run or checkpoint, and no new file in the working directory.

A case is one YAML file whose header says what to expect: `# expect: TEXT` (part of the error line), `# line: N`
(the line of the file it points at; without one the error points at `--set`) and `# set: KEY=VALUE` (the --set
arguments, in order). The data files the cases name lie in tests/malformed_train/data/, relative to the working
directory, as a user's relative `data.source` is.
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatelab.grid.cli.main import main
from gatelab.grid.spec.trial_file import load_trial_with_data

from grid_helpers import run_gatelab

CORPUS = Path(__file__).parent / "malformed_train"
CASES = sorted(CORPUS.glob("*.yaml"))


@dataclass(frozen=True)
class Case:
    expect: str
    """Text the error line contains."""
    where: str
    """What the error line starts with after `gatelab: error: `: FILE:LINE, or --set."""
    args: tuple[str, ...]
    """The command's arguments after `gatelab train`."""


def read_case(path: Path) -> Case:
    # Decoded leniently: one case is a file that is not UTF-8 on purpose.
    header = path.read_bytes().decode("utf-8", errors="replace")
    line = re.search(r"^# line: (\d+)$", header, re.M)
    sets = re.findall(r"^# set: (.+)$", header, re.M)
    return Case(
        expect=re.search(r"^# expect: (.+)$", header, re.M).group(1),
        where=f"{path.name}:{line.group(1)}" if line else "--set",
        args=(path.name, *(arg for text in sets for arg in ("--set", text))),
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A copy of the corpus as the working directory, and a gatelab home of its own that does not exist yet."""
    cwd = tmp_path / "cwd"
    shutil.copytree(CORPUS, cwd)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("GATELAB_HOME", str(tmp_path / "home"))
    return cwd


def _everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _assert_refused(code: int, out: str, err: str, case: Case, workdir: Path, before: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and not out and len(lines) == 1, (code, out, err)
    assert lines[0].startswith(f"gatelab: error: {case.where}: ") and case.expect in lines[0], lines[0]
    # The server, its database, runs and checkpoints all live in the home: no home, none of them.
    assert not (workdir.parent / "home").exists()
    assert _everything_under(workdir) == before


def test_the_corpus_covers_every_kind_of_bad_input():
    required = {
        "unknown_top_level_key",
        "unknown_nested_key",
        "string_for_int",
        "negative_lr",
        "zero_steps",
        "unknown_variant",
        "unknown_preset",
        "bad_yaml_syntax",
        "missing_data_path",
        "empty_data_directory",
        "binary_file_as_text",
        "token_length_not_whole",
        "ids_past_vocab",
        "set_unknown_key",
        "set_wrong_type",
        "set_without_equals",
    }
    assert required <= {p.stem for p in CASES}


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_bad_train_input_exits_2_with_one_line_and_creates_nothing(path, workdir, capsys):
    case = read_case(path)
    before = _everything_under(workdir)
    code = main(["train", *case.args])
    out, err = capsys.readouterr()
    _assert_refused(code, out, err, case, workdir, before)


@pytest.mark.parametrize("path", [p for p in CASES if read_case(p).where == "--set"], ids=lambda p: p.stem)
def test_a_set_case_is_valid_without_its_set(path, workdir):
    # So the error the corpus expects comes from the --set, not from the file under it.
    load_trial_with_data(Path(path.name))


@pytest.mark.parametrize(
    "name", ["bad_yaml_syntax", "not_utf8", "binary_file_as_text", "ids_past_vocab", "set_without_equals"]
)
def test_as_a_real_command(name, workdir):
    # In a process of its own: nothing but the one line reaches stderr (no traceback, no library warning).
    case = read_case(CORPUS / f"{name}.yaml")
    before = _everything_under(workdir)
    proc = run_gatelab("train", *case.args, cwd=workdir)
    _assert_refused(proc.returncode, proc.stdout, proc.stderr, case, workdir, before)


def test_a_home_that_is_a_file_is_one_line(workdir, capsys):
    (workdir / "home-file").write_text("not a folder")
    before = _everything_under(workdir)
    code = main(["train", "set_unknown_key.yaml", "--home", "home-file"])  # the file is valid without its --set
    out, err = capsys.readouterr()
    case = Case(
        expect="a file is in the way, expected a folder", where=f"gatelab home {workdir / 'home-file'}", args=()
    )
    _assert_refused(code, out, err, case, workdir, before)
