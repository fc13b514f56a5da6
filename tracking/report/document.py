"""A report as a list of typed blocks (headings, paragraphs, tables, figures), computed first, then rendered:
markdown and one self-contained HTML page read the same blocks, so the two formats cannot differ in content."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2
    """1: the report's title; 2: a section."""


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Figure:
    path: Path
    """A PNG beside the report."""
    caption: str


Block = Heading | Paragraph | Table | Figure


def markdown(blocks: Sequence[Block]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|")

    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines += ["| " + " | ".join(map(cell, block.header)) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in block.rows] + [""]
        else:
            lines += [f"![{block.caption}]({block.path.name})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def html_page(blocks: Sequence[Block], title: str) -> str:
    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px} th{background:#f0f0f0} img{max-width:100%}"
        "</style></head><body>"
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in block.rows]
            parts.append("</table>")
        else:  # embedded, so the page stands alone (also in the MLflow artifact viewer)
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{esc(block.caption)}'>"
                f"<figcaption>{esc(block.caption)}</figcaption></figure>"
            )
    return "\n".join(parts + ["</body></html>"])


def write_document(blocks: Sequence[Block], out_dir: Path, fmt: str, title: str) -> Path:
    """report.md or report.html of the blocks."""
    path = out_dir / f"report.{fmt}"
    path.write_text(markdown(blocks) if fmt == "md" else html_page(blocks, title))
    return path
