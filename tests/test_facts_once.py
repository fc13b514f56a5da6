"""Each fact is written once (docs/design.md, conventions): a metric's name, a run tag's name and a stored
status appear as string literals only in the module that defines them (trainer/config/metric_names.py,
trainer/config/run_tags.py, trainer/config/outcome.py); everywhere else they are those modules' constants.

The scan reads the product code's syntax trees: every string constant, leaving out docstrings and the literal
text of f-strings (a sentence that names a metric is prose, not the fact)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from gatelab.trainer.config import metric_names, run_tags
from gatelab.trainer.config.outcome import Status

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("grid", "tracking", "trainer")
GENERIC_WORDS = {metric_names.STEP, metric_names.LR}  # also a chart's axis and Lightning's interval; torch's key


def _constants(module) -> set[str]:
    return {v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}


def string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    prose = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            prose |= {id(part) for part in node.values}
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                prose.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
    ]


def literals_outside(names: set[str], owner: str, folders=PRODUCT) -> list[str]:
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() == owner:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{line}: {value!r}" for line, value in string_literals(path) if value in names
            ]
    return found


@pytest.mark.parametrize(
    "names, owner",
    [
        (_constants(metric_names) - GENERIC_WORDS, "trainer/config/metric_names.py"),
        (_constants(run_tags), "trainer/config/run_tags.py"),
    ],
    ids=["metric names", "run tags"],
)
def test_names_are_literals_only_where_they_are_defined(names, owner):
    assert len(names) >= 10  # the scan looks for something
    assert literals_outside(names, owner) == []


def test_stored_statuses_are_literals_only_in_their_enum():
    # tracking/ and trainer/ write and read the statuses of runs; grid/ has vocabularies of its own that share
    # words with them (Optuna's trial states, the search's `diverged:` policy key).
    stored = {s.value for s in Status if s not in (Status.NEW, Status.BUSY)}
    assert literals_outside(stored, "trainer/config/outcome.py", folders=("tracking", "trainer")) == []


def test_the_scan_finds_a_literal(tmp_path, monkeypatch):
    module = tmp_path / "tracking" / "m.py"
    module.parent.mkdir()
    module.write_text('"""f_attn in a docstring is prose."""\nx = {"f_attn": 1}\ny = f"{x} f_attn"\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert literals_outside({"f_attn"}, "owner.py", folders=("tracking",)) == ["tracking/m.py:2: 'f_attn'"]
