"""The ladder section of a ladder grid's report: the fit's verdict at the target first (with the extrapolation
factor, the backtest and every warning), a table per rung and variant, the two figures (loss against compute,
the difference against compute, and when the ladder tunes LRs the max stable LR against compute) and
`ladder.json` with all of it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gatelab.tracking.report.document import Block, Figure, Heading, Paragraph, Table
from gatelab.tracking.stats.ladder import LadderResult, LadderTarget
from gatelab.tracking.stats.ladder_points import RungRow, RungStableLr
from gatelab.trainer.figure_file import headless_pyplot, save_figure

plt = headless_pyplot()  # Agg, unless a notebook chose its own backend (trainer/figure_file.py)

STABLE_HEADER = ["Rung", "Variant", "FLOPs", "LRs tried", "Max stable LR"]
RUNG_HEADER = ["Rung", "Variant", "FLOPs", "LR", "Seeds", "Final val loss (mean ± sd)", "Δ vs baseline (90% CI)"]


def _num(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:{spec}}"


def verdict_lines(result: LadderResult, target: LadderTarget) -> list[str]:
    lines = []
    for v in result.variants:
        lines.append(
            f"{v.variant}: {v.verdict} at {result.target_flops:.3g} FLOPs (extrapolated "
            f"{result.extrapolation_factor:.3g}x beyond the largest rung): Δ = {v.delta.median:+.4f} nats "
            f"(90% interval {v.delta.low:+.4f} to {v.delta.high:+.4f}), P(better) = {v.p_better:.2f}, "
            f"compute multiplier {v.multiplier.median:.3g} "
            f"({v.multiplier.low:.3g} to {v.multiplier.high:.3g})"
            + (f"; the paper measured {target.paper_delta:+.4f} nats at its scale" if target.paper_delta else "")
            + (
                f"; backtest: predicted {v.backtest.predicted.median:+.4f} ({v.backtest.predicted.low:+.4f} to "
                f"{v.backtest.predicted.high:+.4f}) at the largest rung, measured {v.backtest.measured:+.4f}, "
                + ("inside" if v.backtest.inside else "OUTSIDE")
                if v.backtest
                else "; no backtest (too few rungs)"
            )
        )
    return lines


def ladder_blocks(
    result: LadderResult,
    rows: list[RungRow],
    target: LadderTarget,
    baseline: str,
    pictures,
    stable: list[RungStableLr],
) -> list[Block]:
    failed = [v.variant for v in result.variants if v.backtest and not v.backtest.inside]
    out: list[Block] = [Heading("Model ladder: the answer at the target scale")]
    if failed:
        out.append(Paragraph(f"This ladder's own backtest failed for {', '.join(failed)}: read its verdicts as such."))
    out += [Paragraph(line) for line in verdict_lines(result, target)]
    out += [Paragraph("Warning: " + w) for w in result.warnings]
    out.append(
        Paragraph(
            f"Fit: L_v(C) = E + A_v C^-alpha_v, E {'fitted' if result.floor_fitted else 'held'} at "
            f"{result.law.floor:.4g}, {result.resamples} paired seed resamples (tracking/stats/ladder.py; "
            "docs/ladder.md explains the method and how to read the verdict)."
        )
    )
    out.append(
        Table(
            RUNG_HEADER,
            [
                [
                    str(r.rung),
                    r.variant,
                    f"{r.flops:.3g}",
                    f"{r.lr:g}",
                    f"{r.seeds}" + (f" ({r.diverged} diverged)" if r.diverged else ""),
                    f"{_num(r.loss_mean)} ± {_num(r.loss_sd)}",
                    "(baseline)" if r.variant == baseline else f"{_num(r.delta, '+.4f')} ± {_num(r.delta_half_width)}",
                ]
                for r in rows
            ],
        )
    )
    if stable:
        out.append(
            Paragraph(
                "Max stable LR per rung: the largest LR that neither diverged nor ended more than the sweep rule's "
                "margin above the variant's best final loss at that rung (logged on the grid's parent run as "
                "max_stable_lr.<variant>.rung<k>); the paper's claim is partly that gates tolerate larger LRs."
            )
        )
        out.append(
            Table(
                STABLE_HEADER,
                [
                    [
                        str(s.rung),
                        s.variant,
                        f"{s.flops:.3g}",
                        ", ".join(f"{lr:g}" for lr in s.lrs),
                        _num(s.max_stable_lr, "g") if s.max_stable_lr else "none",
                    ]
                    for s in stable
                ],
            )
        )
    out += [Figure(path, caption) for path, caption in pictures]
    return out


def ladder_figures(
    result: LadderResult,
    rows: list[RungRow],
    baseline: str,
    out_dir: Path,
    points,
    paper_delta: float | None,
    stable: list[RungStableLr],
) -> list:
    law, target = result.law, result.target_flops
    span = np.geomspace(min(p.flops for p in points) / 1.5, target * 1.5, 200)
    largest = max(p.flops for p in points)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, variant in enumerate(sorted(law.coefficient, key=lambda v: v != baseline)):
        color = plt.get_cmap("tab10")(i)
        mine = [p for p in points if p.variant == variant and math.isfinite(p.loss)]
        ax.scatter([p.flops for p in mine], [p.loss for p in mine], s=12, color=color, label=variant)
        inside, beyond = span[span <= largest], span[span >= largest]
        ax.plot(inside, law.loss(variant, inside), color=color, lw=1)
        ax.plot(beyond, law.loss(variant, beyond), color=color, lw=1, ls="--")
    ax.axvline(target, color="black", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="final val loss (nats)", title="Loss against compute")
    ax.legend(fontsize=7)
    loss_png = save_figure(fig, out_dir / "ladder_loss.png")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, v in enumerate(result.variants):
        color = plt.get_cmap("tab10")(i + 1)
        curve = law.loss(v.variant, span) - law.loss(baseline, span)
        ax.plot(span, curve, color=color, lw=1, label=f"{v.variant} (fit)")
        mine = [r for r in rows if r.variant == v.variant and r.delta is not None]
        ax.errorbar(
            [r.flops for r in mine],
            [r.delta for r in mine],
            yerr=[r.delta_half_width or 0 for r in mine],
            fmt="o",
            color=color,
            ms=4,
            capsize=2,
        )
        ax.errorbar([target], [v.delta.median], yerr=[[v.delta.median - v.delta.low], [v.delta.high - v.delta.median]],
                    fmt="s", color=color, ms=5, capsize=3)  # fmt: skip
    if paper_delta is not None:
        ax.scatter(
            [target], [paper_delta], marker="D", facecolors="none", edgecolors="black", label="paper (1.7B dense)"
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(target, color="black", lw=0.8, ls=":")
    ax.set(
        xscale="log", xlabel="training FLOPs", ylabel="Δ loss vs baseline (nats)", title="Difference against compute"
    )
    ax.legend(fontsize=7)
    delta_png = save_figure(fig, out_dir / "ladder_delta.png")
    pictures = [
        (loss_png, "Loss against training FLOPs: every seed a point, each variant's fit, dashed beyond the rungs"),
        (delta_png, "Δ against FLOPs: per-rung paired differences (90% CI), the fit, and the target with its interval"),
    ]
    if stable:
        pictures.append((_stable_lr_figure(stable, baseline, out_dir), "Max stable LR per rung against FLOPs"))
    return pictures


def _stable_lr_figure(stable: list[RungStableLr], baseline: str, out_dir: Path) -> Path:
    """Each variant's max stable LR against its rung's FLOPs (log-log); a rung with none stable is an x at the
    bottom, at the smallest LR tried there."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    variants = sorted({s.variant for s in stable}, key=lambda v: (v != baseline, v))
    for i, variant in enumerate(variants):
        color = plt.get_cmap("tab10")(i)
        mine = [s for s in stable if s.variant == variant]
        found = [s for s in mine if s.max_stable_lr]
        ax.plot([s.flops for s in found], [s.max_stable_lr for s in found], "o-", color=color, ms=4, label=variant)
        none = [s for s in mine if not s.max_stable_lr]
        ax.scatter([s.flops for s in none], [min(s.lrs) for s in none], marker="x", color=color)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="max stable LR", title="Max stable LR")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir / "ladder_lr.png")


def write_ladder_json(
    result: LadderResult, rows: list[RungRow], target: LadderTarget, out_dir: Path, stable: list[RungStableLr]
) -> Path:
    path = out_dir / "ladder.json"
    data = {
        "target": asdict(target),
        "result": asdict(result),
        "rungs": [asdict(r) for r in rows],
        "max_stable_lr": [asdict(s) for s in stable],
    }
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path
