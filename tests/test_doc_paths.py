"""Every repository path and gatelab module the documentation names exists.

README.md and docs/*.md name files (`grid/dispatch/loop.py`, `tracking/runs/`, `ablations/smoke.yaml`), link
pages and images ([cluster guide](docs/cluster.md), img/x.png relative to a page in docs/) and modules
(`gatelab.grid.dispatch.loop`, `gatelab.grid.spec.grid_file.load_grid`). When the code moves, the pages that
name the old place are wrong; this test names each such mention, page and line.

What counts as a repository path: a token that starts with one of the repository's top-level entries (TOP),
wherever it stands on the page (prose, backticks, a code block). Not paths: anything with a <placeholder>, and
what lives in a gatelab home at run time (`<home>/mlflow.db`, `gatelab-runs/...`), which starts with no top-level
entry. A trailing `:LINE`, `#anchor` (checked against the target page's headings) or `::test_name` is split
off; a glob must match something; `module.name` after a path (`grid/spec/expand.resolved`) must be a module file
that defines the name.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_DIRS = ("ablations", "api", "grid", "trainer", "tracking", "tests", "docs", "scripts", ".ci")
TOP_FILES = ("ray_cluster.yaml", "pyproject.toml", "constraints.txt", "README.md")
PACKAGES = {"grid": "grid", "trainer": "trainer", "tracking": "tracking", "ablations": "ablations"}

# A path starts where no word, dot, slash or hyphen precedes it (so `../grid/x.py` in a link and a URL's
# `/tests/` are not read as paths here), and runs to the first character a path in this repository never has.
_PATH = re.compile(
    r"(?<![\w./\-])(?:(?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[^\s`'\"()\[\]{},;|]*"
    r"|(?:" + "|".join(re.escape(f) for f in TOP_FILES) + r")(?:#[\w\-]+)?)"
)
_MODULE = re.compile(r"(?<![\w./\-])gatelab((?:\.[A-Za-z_]\w*)+)")
_CODE_SPAN = re.compile(r"`([^`]+)`")
# In backticks, `trainer.run.run_trial` names a module as `gatelab.trainer.run.run_trial` would; `tracking.uri` is
# a key of the grid file (GRID_KEYS), not a module.
_FILE_NAME = re.compile(r"\.(py|md|ya?ml|json|txt|toml|png)$")  # `grid.py` in a list of a folder's files
_BARE_MODULE = re.compile(r"(?<![\w./\-])((?:grid|trainer|tracking)(?:\.[A-Za-z_]\w*)+)")
_LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@cache
def grid_keys() -> frozenset[str]:
    """The dotted keys of a grid file's sections (`tracking.uri`, `ray.max_retries`, ...)."""
    from gatelab.grid.spec.grid_spec import GridSpec

    keys = set()
    for name, hint in typing.get_type_hints(GridSpec).items():
        for inner in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(inner):
                keys |= {f"{name}.{f.name}" for f in dataclasses.fields(inner)}
    return frozenset(keys)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|!?\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    found, seen, fenced = set(), {}, False
    for line in page.read_text().splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            slug = _slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


@cache
def defined_names(module: Path) -> dict[str, frozenset[str]]:
    """Top-level names a module defines or imports, each with the names a class of that name defines."""
    names: dict[str, frozenset[str]] = {}
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = frozenset()
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members |= {t.id for t in item.targets if isinstance(t, ast.Name)}
            names[node.name] = frozenset(members)
        elif isinstance(node, ast.Assign):
            names.update({t.id: frozenset() for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = frozenset()
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: frozenset() for a in node.names})
    return names


def _names_in(module: Path, attrs: list[str]) -> str | None:
    """None when `module` defines attrs[0] (and, for a class, attrs[1]); else what is missing."""
    names = defined_names(module)
    if attrs[0] not in names:
        return f"{module.relative_to(ROOT)} defines no {attrs[0]!r}"
    if len(attrs) > 1 and names[attrs[0]] and attrs[1] not in names[attrs[0]]:
        return f"{module.relative_to(ROOT)}: {attrs[0]} has no {attrs[1]!r}"
    return None


def check_module(dotted: str) -> str | None:
    """None when `gatelab.<dotted>` is a package, a module, or a module and names it defines."""
    parts = dotted.split(".")
    if (ROOT / "api" / f"{parts[0]}.py").is_file():  # a module of the API, the package `gatelab` itself (api/)
        return _names_in(ROOT / "api" / f"{parts[0]}.py", parts[1:]) if parts[1:] else None
    if parts[0] not in PACKAGES:
        return None  # a run tag such as gatelab.status, or a name the API exports (api/__init__.py), not a module
    here = ROOT / PACKAGES[parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        if (here / part).is_dir():
            here = here / part
        elif (here / f"{part}.py").is_file():
            rest = parts[i + 1 :]
            return _names_in(here / f"{part}.py", rest) if rest else None
        else:
            init = here / "__init__.py"
            missing = f"no module {(here / part).relative_to(ROOT)}(.py)"
            return _names_in(init, parts[i:]) and missing if init.is_file() else missing
    return None


def check_path(target: str, base: Path) -> str | None:
    """None when `target` (relative to `base`) names something in the repository; else what is wrong."""
    if "<" in target or ">" in target:
        return None  # a placeholder, e.g. checkpoints/<key>/
    target, _, anchor = target.partition("#")
    target = target.split("::")[0]
    target = re.sub(r":\d+(-\d+)?$", "", target).rstrip(".:")
    path = (base / target).resolve() if target else None
    if path is None:
        return None
    if not path.is_relative_to(ROOT):
        return "outside the repository"
    if any(c in target for c in "*?"):
        return None if list(base.glob(target)) else "the glob matches nothing"
    if not path.exists():
        stem, dot, attrs = path.name.partition(".")
        module = path.with_name(stem + ".py")
        if dot and module.is_file() and all(a.isidentifier() for a in attrs.split(".")):
            return _names_in(module, attrs.split("."))  # `grid/spec/expand.resolved`: a module and a name in it
        return "no such file or folder"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"{path.relative_to(ROOT)} has no heading #{anchor}"
    return None


def problems(text: str, page: Path) -> list[str]:
    """Every path, link, anchor and gatelab module `text` (the text of `page`) names that does not resolve."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}:{number}"
        for match in _PATH.finditer(line):
            why = check_path(match.group(0), ROOT)
            if why:
                found.append(f"{where}: {match.group(0)}: {why}")
        for match in _LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.\-]*:", target):
                continue  # https:, mailto:
            if target.startswith("#"):
                why = None if target[1:] in anchors(page) else f"no heading {target} on this page"
            else:
                why = check_path(target, page.parent)
            if why:
                found.append(f"{where}: link ({target}): {why}")
        for match in _MODULE.finditer(line):
            why = check_module(match.group(1)[1:].rstrip("."))
            if why:
                found.append(f"{where}: gatelab{match.group(1)}: {why}")
        for span in _CODE_SPAN.finditer(line):
            for match in _BARE_MODULE.finditer(span.group(1)):
                if match.group(1) not in grid_keys() and not _FILE_NAME.search(match.group(1)):
                    why = check_module(match.group(1))
                    if why:
                        found.append(f"{where}: {match.group(1)}: {why}")
    return found


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_path_exists(page):
    assert problems(page.read_text(), page) == []


def test_the_checker_reports_what_is_missing():
    page = ROOT / "docs" / "design.md"
    text = "\n".join(
        [
            "Loop: `grid/dispatch/loop.py` (`gatelab.grid.dispatch.loop`, `gatelab.grid.spec.grid_file.load_grid`).",
            "Stale: `grid/ddp.py`, `gatelab.grid.ddp`, [cluster](nowhere.md), ![x](img/missing.png).",
            "Stale: `tracking/ledger.py:12`, `gatelab.grid.spec.grid_file.no_such_function`, [s](paper.md#no-such).",
            "A glob `tests/test_nothing_*.py`; and `grid/spec/expand.no_such_name`; [r](../grid/gone.py).",
            "Not paths: `<home>/mlflow.db`, `gatelab-runs/smoke`, `checkpoints/<key>/`, tag `gatelab.status`.",
            "Fine: [guide](cluster.md#1-start-the-cluster), ![ui](img/mlflow-ui-smoke.png), `tests/test_*.py`.",
            "Fine: `grid/spec/expand.resolved`, `tests/test_identity.py::test_x`, `gatelab.trainer.run.Launch`.",
            "Bare: `grid.ddp.run_ddp_trial` is stale; `trainer.run.run_trial`, `grid.py`, key `tracking.uri` are fine.",
        ]
    )
    found = problems(text, page)
    reported = "\n".join(found)
    for missing in [
        "grid/ddp.py",
        "gatelab.grid.ddp",
        "(nowhere.md)",
        "(img/missing.png)",
        "tracking/ledger.py:12",
        "no_such_function",
        "(paper.md#no-such)",
        "tests/test_nothing_*.py",
        "no_such_name",
        "(../grid/gone.py)",
        "grid.ddp.run_ddp_trial",
    ]:
        assert missing in reported, missing
    assert len(found) == 11, reported
