"""The report's answer figures (matplotlib, headless; the numbers come from tracking/stats/forest.py):

- forest.png: each variant's paired difference to the baseline with its interval, grouped by what it changes,
  the verdict marked, the paper's difference beside ours (Table 1 / Table 3 Avg PPL);
- val_loss_gap.png: val_loss minus the baseline's along training, one panel per family, ± one standard error
  over seeds, so a gap that opens or closes shows (paper Fig. 1 left shows the same question as raw curves);
- f_attn_heatmap.png: first-token attention share per variant and layer (paper Fig. 2 / Table 4's F-Attn).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gatelab.tracking.stats.forest import DIFFERENT, FAMILIES, Forest, GapCurve
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS, FINAL_VAL_PPL
from gatelab.trainer.figure_file import headless_pyplot, save_figure

plt = headless_pyplot()  # Agg, unless a notebook chose its own backend (trainer/figure_file.py)

# Verdict -> (colour, filled): a filled marker is a decided comparison, an open one is not (yet).
VERDICT_STYLE = {
    DIFFERENT: ("#c0392b", True),
    "equivalent": ("#27ae60", True),
    "not significant": ("#7f8c8d", False),
    "open": ("#2980b9", False),
    "undecided": ("#7f8c8d", False),
    "blocked": ("#8e44ad", False),
    "not tested": ("#bdc3c7", False),
}
FAMILY_TITLES = {
    "position": "gate position (Table 1)",
    "granularity": "granularity and sharing (Table 1)",
    "activation": "activation, combine and input (Tables 3-4)",
    "controls": "controls: parameter-matched, SDPA-output (Tables 1, 3)",
    "other": "other",
}
UNITS = {FINAL_VAL_LOSS: "final val loss (nats)", FINAL_VAL_PPL: "final val PPL"}


def forest_plot(data: Forest, baseline: str, path: Path) -> Path | None:
    """Horizontal forest plot: a row per comparison, a heading per family; None without a single pair."""
    rows = [r for r in data.rows if r.mean is not None]
    if not rows:
        return None
    lines: list[tuple[str, object]] = []  # ('family', name) | ('row', ForestRow), top to bottom
    for name in FAMILIES:
        members = [r for r in rows if r.family == name]
        if members:
            lines += [("family", name), *(("row", r) for r in members)]
    fig, ax = plt.subplots(figsize=(11, 2.2 + 0.3 * len(lines)))
    if data.margin:
        ax.axvspan(-data.margin, data.margin, color="#27ae60", alpha=0.12, lw=0)
    ax.axvline(0, color="black", lw=0.8)
    ticks, labels, headings = [], [], []
    for y, (kind, item) in enumerate(reversed(lines)):
        ticks.append(y)
        if kind == "family":
            labels.append(FAMILY_TITLES[item])
            headings.append(len(labels) - 1)
            continue
        colour, filled = VERDICT_STYLE.get(item.verdict, ("black", False))
        if item.ci is not None:
            ax.plot(item.ci, [y, y], color=colour, lw=1.6)
        ax.plot(item.mean, y, "o", ms=7, mec=colour, mew=1.6, mfc=colour if filled else "white")
        if item.paper is not None:
            ax.plot(item.paper, y, "D", ms=5, color="black", mfc="none")
        labels.append(f"{item.label} (n={item.n})")
        ci = f" [{item.ci[0]:+.3f}, {item.ci[1]:+.3f}]" if item.ci else ""
        paper = f"; paper {item.paper:+.3f}" if item.paper is not None else ""
        ax.text(
            1.01,
            y,
            f"{item.mean:+.4f}{ci} {item.verdict}{paper}",
            transform=ax.get_yaxis_transform(),
            fontsize=7,
            va="center",
        )
    ax.set_yticks(ticks, labels, fontsize=8)
    for index in headings:
        ax.get_yticklabels()[index].set_fontweight("bold")
    ax.set_ylim(-0.7, len(lines) - 0.3)
    ax.set_xlabel(f"{UNITS.get(data.metric, data.metric)}: variant - {baseline}, paired by seed (lower is better)")
    ax.set_title("\n".join(textwrap.wrap(data.method, 120)), fontsize=8)
    shown = sorted({r.verdict for r in rows}, key=lambda v: list(VERDICT_STYLE).index(v) if v in VERDICT_STYLE else 99)
    handles = []
    for verdict in shown:
        colour, filled = VERDICT_STYLE.get(verdict, ("black", False))
        handles.append(
            Line2D(
                [], [], marker="o", ls="-", color=colour, mec=colour, mfc=colour if filled else "white", label=verdict
            )
        )
    if data.margin:
        handles.append(Patch(color="#27ae60", alpha=0.12, label=f"equivalence margin +-{data.margin:g}"))
    if any(r.paper is not None for r in rows):
        handles.append(Line2D([], [], marker="D", ls="", color="black", mfc="none", label="paper (15A2B MoE)"))
    fig.legend(handles=handles, fontsize=7.5, loc="lower center", ncol=len(handles), frameon=False)
    return save_figure(fig, path, rect=(0, 0.06, 1, 1))


def gap_curves(curves: list[GapCurve], baseline: str, path: Path) -> Path | None:
    """One panel per family: each variant's val_loss gap to the baseline along training."""
    families = [name for name in FAMILIES if any(c.family == name for c in curves)]
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(4.6 * len(families), 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], families):
        members = [c for c in curves if c.family == name]
        cmap = plt.get_cmap("tab10" if len(members) <= 10 else "tab20")
        for index, curve in enumerate(members):
            colour = cmap(index % cmap.N)
            ax.plot(
                curve.steps, curve.mean, "o-", ms=3, lw=1.3, color=colour, label=f"{curve.label} (n={max(curve.n)})"
            )
            band = [(s, m, e) for s, m, e in zip(curve.steps, curve.mean, curve.se) if e is not None]
            if band:
                steps, means, errors = zip(*band)
                ax.errorbar(steps, means, yerr=errors, fmt="none", ecolor=colour, capsize=3, lw=1)
                low, high = [m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)]
                ax.fill_between(steps, low, high, color=colour, alpha=0.18, lw=0)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(FAMILY_TITLES[name], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5)
    axes[0][0].set_ylabel(f"val_loss - {baseline} (nats)", fontsize=8)
    fig.suptitle(
        "Validation-loss gap to the baseline along training: seed mean, band = ± 1 standard error", fontsize=10
    )
    return save_figure(fig, path)


def f_attn_heatmap(per_layer: dict[str, list[float]], path: Path) -> Path | None:
    """`per_layer`: row name -> mean over seeds of the first-token attention share per layer."""
    shown = {name: values for name, values in per_layer.items() if values}
    if not shown:
        return None
    layers = max(len(v) for v in shown.values())
    grid = [list(v) + [math.nan] * (layers - len(v)) for v in shown.values()]
    fig, ax = plt.subplots(figsize=(max(7.0, 2.8 + 0.55 * layers), 1.6 + 0.3 * len(shown)))
    image = ax.imshow(grid, aspect="auto", cmap="magma_r", vmin=0, vmax=max(0.05, max(max(v) for v in shown.values())))
    if layers * len(shown) <= 400:  # values readable in the cells
        for i, values in enumerate(grid):
            for j, value in enumerate(values):
                if math.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.3f}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if value > 0.6 * image.get_clim()[1] else "black",
                    )
    ax.set_xticks(range(layers), [str(i) for i in range(layers)], fontsize=7)
    ax.set_yticks(range(len(shown)), list(shown), fontsize=7)
    ax.set_xlabel("layer", fontsize=8)
    ax.set_title(
        "F-Attn: attention on the first token per layer, mean over seeds\n(paper Fig. 2 / Table 4: baseline "
        "0.467 vs G1 0.048 at 15A2B)",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, fraction=0.04)
    return save_figure(fig, path)
