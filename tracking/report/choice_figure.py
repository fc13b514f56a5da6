"""A searched `choice` parameter whose values are not numbers (strings, bools) in a search report: final val loss and
spike count per value, every run a point, one column of points per study beside the others, and the mean per value
as a bar. A number line would invent an order and distances the values do not have, so this is the categorical twin
of tracking/report/figures.py lr_sweep (same input: series -> (value, status, final loss, spikes))."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gatelab.tracking.report.figures import _colors
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.figure_file import headless_pyplot, save_figure

plt = headless_pyplot()  # Agg, unless a notebook chose its own backend (trainer/figure_file.py)

Point = tuple[object, str, float, float]  # (the run's value of the parameter, status, final val loss, spike count)


@dataclass(frozen=True)
class CategoryStats:
    """One choice value's runs in one study."""

    runs: int
    """Runs that finished or diverged."""
    loss: float | None
    """Mean final val loss of the finished runs with a finite loss; None without one."""
    spikes: float | None
    """Mean spike count of the runs (diverged ones too); None without runs."""
    diverged: int
    """Runs that diverged."""


def choice_label(value: object) -> str:
    """How a choice value is written on the axis and in the table: as the grid file writes it."""
    return str(value)


def categories(choices: Sequence, points: dict[str, list[Point]]) -> list[str]:
    """The axis: every choice in the grid's order (one never tried shows empty), then any other value a run
    holds (a study made before the choices were edited)."""
    labels = [choice_label(c) for c in choices]
    for rows in points.values():
        labels += [label for value, *_ in rows if (label := choice_label(value)) not in labels]
    return labels


def by_category(rows: list[Point], labels: list[str]) -> dict[str, CategoryStats]:
    """Each category's runs summarised (categories without runs are left out)."""
    out = {}
    for label in labels:
        at = [(status, loss, spikes) for value, status, loss, spikes in rows if choice_label(value) == label]
        if not at:
            continue
        losses = [loss for status, loss, _ in at if status == Status.FINISHED and math.isfinite(loss)]
        out[label] = CategoryStats(
            runs=len(at),
            loss=statistics.fmean(losses) if losses else None,
            spikes=statistics.fmean(spikes for _, _, spikes in at),
            diverged=sum(status == Status.DIVERGED for status, _, _ in at),
        )
    return out


def choice_strip(points: dict[str, list[Point]], choices: Sequence, path: Path, *, key: str) -> Path | None:
    """`points`: series (a study) -> one Point per finished or diverged run. None when there is no run."""
    points = {name: rows for name, rows in points.items() if rows}
    if not points:
        return None
    labels = categories(choices, points)
    finite = [
        loss for rows in points.values() for _, s, loss, _ in rows if s == Status.FINISHED and math.isfinite(loss)
    ]
    top = max(finite) * 1.05 if finite else 1.0  # where diverged runs are drawn (their loss is NaN or capped)
    fig, (loss_ax, spike_ax) = plt.subplots(1, 2, figsize=(max(9.0, 3.0 + 2.4 * len(labels)), 4.5))
    width = 0.7 / len(points)  # each study its own slot inside a category, so equal values do not hide
    for index, (color, (name, rows)) in enumerate(zip(_colors(len(points)), points.items())):
        shift = (index - (len(points) - 1) / 2) * width
        for x, label in enumerate(labels):
            at = [(s, loss, sp) for value, s, loss, sp in rows if choice_label(value) == label]
            ok = [loss for s, loss, _ in at if s == Status.FINISHED and math.isfinite(loss)]
            loss_ax.plot([x + shift] * len(ok), ok, "o", color=color, alpha=0.7)
            bad = sum(s != Status.FINISHED or not math.isfinite(loss) for s, loss, _ in at)
            loss_ax.plot([x + shift] * bad, [top] * bad, "x", color=color, ms=9, mew=2)
            spike_ax.plot([x + shift] * len(at), [sp for *_, sp in at], "o", color=color, alpha=0.7)
        stats = by_category(rows, labels)
        for ax, attr in ((loss_ax, "loss"), (spike_ax, "spikes")):
            bars = [
                (labels.index(label), getattr(s, attr)) for label, s in stats.items() if getattr(s, attr) is not None
            ]
            ax.hlines(
                [v for _, v in bars],
                [x + shift - width / 2 for x, _ in bars],
                [x + shift + width / 2 for x, _ in bars],
                color=color,
                lw=2,
                label=name,
            )
    for ax in (loss_ax, spike_ax):
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xlabel(key)
    loss_ax.set(ylabel="final val loss", title=f"Final loss per {key} (dots: runs, bar: mean, x = diverged)")
    spike_ax.set(ylabel="loss spikes", title=f"Spike count per {key}")
    spike_ax.legend(fontsize=7)
    return save_figure(fig, path)
