"""PNG figures of a grid report (matplotlib, headless), one file per question the paper asks:

- the answer figures of tracking/report/comparison_figures.py first: forest.png (each variant's paired difference to
  the baseline, its interval and verdict), val_loss_gap.png (the gap along training) and f_attn_heatmap.png
  (first-token attention per variant and layer, Fig. 2);
- loss_curves.png: train and validation loss per variant, spikes marked (Fig. 1 right: gating "nearly
  eliminat[es]" loss spikes) — the raw curves, the only figure that shows where each spike and divergence was;
- gate_histograms.png: gate-score distribution per gated variant (Fig. 3);
- lr_sweep.png: final loss and spike count against the learning rate (Table 2's "max LR" question);
- long_context.png: validation PPL against evaluation length, RoPE and YaRN (Table 5 at small scale).

No torch (reports run where training did not): everything comes from MLflow metrics and probes.json.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.collections import LineCollection

from gatelab.tracking.report.comparison_figures import f_attn_heatmap, forest_plot, gap_curves
from gatelab.tracking.stats.forest import Forest, val_loss_gaps
from gatelab.tracking.stats.rows import (
    ReportInput,
    TrialOutcome,
    VariantRow,
    final_loss,
    row_name,
)
from gatelab.trainer.config.metric_names import (
    DIVERGED_AT_STEP,
    F_ATTN,
    GATE_HIST_BINS,
    SPIKE_COUNT,
    SPIKE_RATIO,
    TRAIN_LOSS,
    VAL_LOSS,
    parse_long_ppl,
    per_layer,
)
from gatelab.trainer.config.outcome import DONE_STATUSES, Status
from gatelab.trainer.figure_file import headless_pyplot, save_figure

plt = headless_pyplot()  # Agg, unless a notebook chose its own backend (trainer/figure_file.py)

HIST_BINS = GATE_HIST_BINS  # trainer/probes.py: bins on [0, 1], then [underflow, overflow]
LEGEND_MAX_RUNS = 10  # beyond this a panel's legend hides the curves (and takes seconds to lay out)


def _panels(count: int, width: float = 3.6, height: float = 2.6):
    cols = min(count, 5)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _colors(count: int) -> list:
    cmap = plt.get_cmap("tab20" if count > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(count)]


def loss_curves(curves: dict[str, list[dict]], path: Path) -> Path | None:
    """`curves`: variant -> one dict per trial {label, train, val, spikes, diverged_at} (lists of (step, v))."""
    curves = {name: runs for name, runs in curves.items() if runs}
    if not curves:
        return None
    fig, axes = _panels(len(curves))
    for ax, (name, runs) in zip(axes, curves.items()):
        spikes, marks = 0, []
        colors = _colors(len(runs))
        # every train curve of the panel as one artist: a grid of many seeds draws in a fraction of the time
        trains = [(run["train"], color) for run, color in zip(runs, colors) if run["train"]]
        ax.add_collection(LineCollection([t for t, _ in trains], colors=[c for _, c in trains], lw=0.6, alpha=0.45))
        ax.autoscale_view()
        labelled = len(runs) <= LEGEND_MAX_RUNS
        for color, run in zip(colors, runs):
            if run["val"]:
                label = run["label"] if labelled else None
                ax.plot(*zip(*run["val"]), "o-", ms=2.5, lw=1.2, color=color, label=label)
            train_at = dict(run["train"])
            marks += [(step, train_at.get(step, math.nan)) for step, _ in run["spikes"]]
            spikes += len(run["spikes"])
            if run["diverged_at"] is not None:
                ax.axvline(run["diverged_at"], color="red", ls=":", lw=1)
        if marks:  # one artist for all of the panel's spikes
            ax.plot(*zip(*marks), "v", color="red", ms=6, ls="none")
        ax.set_title(f"{name} ({len(runs)} runs, {spikes} spikes)", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if labelled:
            ax.legend(fontsize=6)
    fig.suptitle(
        "Validation loss (markers) and train loss (thin) per variant; red v = loss spike, dotted = diverged",
        fontsize=10,
    )
    return save_figure(fig, path)


def gate_histograms(
    hists: dict[str, list[int]], means: dict[str, tuple[float | None, float | None]], path: Path
) -> Path | None:
    """`hists`: variant -> summed gate-score counts (20 bins + under/overflow); `means`: (ours, paper)."""
    hists = {name: counts for name, counts in hists.items() if counts and sum(counts) > 0}
    if not hists:
        return None
    fig, axes = _panels(len(hists), height=2.4)
    centres = [(i + 0.5) / HIST_BINS for i in range(HIST_BINS)]
    for ax, (name, counts) in zip(axes, hists.items()):
        total = sum(counts)
        ax.bar(centres, [c / total for c in counts[:HIST_BINS]], width=1 / HIST_BINS)
        ours, paper = means.get(name, (None, None))
        text = f"ours {ours:.3f}" if ours is not None else "ours n/a"
        text += f", paper {paper:.3f}" if paper is not None else ""
        outside = sum(counts[HIST_BINS:]) / total
        if outside:
            text += f", outside [0,1]: {outside:.2f}"
        ax.set_title(f"{name}\nmean: {text}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
    fig.suptitle("Gate-score histograms (paper Fig. 3), all seeds pooled", fontsize=10)
    return save_figure(fig, path)


def lr_sweep(
    points: dict[str, list[tuple[float, str, float, float]]],
    stable: dict[str, float | None],
    path: Path,
    *,
    xlabel: str = "peak learning rate",
    short: str = "LR",
    log: bool = True,
) -> Path | None:
    """`points`: series (a variant, or a search's study) -> (x, status, final_loss, spike_count) per run;
    `stable`: max stable x per series. x is the LR of a sweep, or any searched parameter (`xlabel`, `short`;
    `log`: a log axis, as for a log-uniform search)."""
    points = {name: rows for name, rows in points.items() if rows}
    if not points:
        return None
    fig, (loss_ax, spike_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    finite = [
        loss
        for rows in points.values()
        for _, status, loss, _ in rows
        if status == Status.FINISHED and math.isfinite(loss)
    ]
    top = max(finite) * 1.05 if finite else 1.0
    for index, (color, (name, rows)) in enumerate(zip(_colors(len(points)), points.items())):
        by_lr: dict[float, list] = {}
        for lr, status, loss, spikes in rows:
            by_lr.setdefault(lr, []).append((status, loss, spikes))
        lrs = sorted(by_lr)
        ok = [
            (lr, statistics.fmean(loss for s, loss, _ in by_lr[lr] if s == Status.FINISHED and math.isfinite(loss)))
            for lr in lrs
            if any(s == Status.FINISHED and math.isfinite(loss) for s, loss, _ in by_lr[lr])
        ]
        if ok:
            loss_ax.plot(*zip(*ok), "o-", color=color, label=name)
        bad = [lr for lr in lrs if any(s == Status.DIVERGED for s, _, _ in by_lr[lr])]
        if bad:  # nudged apart so variants that diverged at the same x stay visible
            nudge = 0.015 * (index - len(points) / 2)
            spread = [lr * (1 + nudge) if log else lr + nudge * (max(lrs) - min(lrs) or 1) for lr in bad]
            loss_ax.plot(spread, [top] * len(bad), "x", color=color, ms=9, mew=2)
        spike_ax.plot(
            lrs, [statistics.fmean(sp for _, _, sp in by_lr[lr]) for lr in lrs], "o-", color=color, label=name
        )
        if stable.get(name) is not None:
            loss_ax.axvline(stable[name], color=color, ls=":", lw=1)
    scale = "log" if log else "linear"
    loss_ax.set(
        xscale=scale,
        xlabel=xlabel,
        ylabel="final val loss",
        title=f"Final loss vs {short} (x = diverged, dotted = max stable {short})",
    )
    spike_ax.set(xscale=scale, xlabel=xlabel, ylabel="loss spikes (mean over seeds)", title=f"Spike count vs {short}")
    spike_ax.legend(fontsize=7)
    return save_figure(fig, path)


def long_context(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> Path | None:
    """`curves`: variant -> {'rope'|'yarn': [(eval length in tokens, mean PPL)]} (Table 5 at small scale);
    None unless some variant was measured at more than one length."""
    curves = {name: by_rope for name, by_rope in curves.items() if any(len(p) > 1 for p in by_rope.values())}
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, rope in zip(axes, ("rope", "yarn")):
        for color, (name, by_rope) in zip(_colors(len(curves)), curves.items()):
            if by_rope.get(rope):
                ax.plot(*zip(*by_rope[rope]), "o-", color=color, label=name)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="evaluation length (tokens)",
            ylabel="val PPL (mean over seeds)",
            title=f"Long-context PPL, {'plain RoPE' if rope == 'rope' else 'YaRN'}",
        )
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def mean_curve(series: Sequence[Sequence[float]]) -> list[float]:
    """Element-wise mean of equally long series (shorter ones are truncated to the shortest)."""
    width = min((len(s) for s in series), default=0)
    return [statistics.fmean(s[i] for s in series) for i in range(width)]


# --- from MLflow results to the figures ---------------------------------------------------------------


def make_figures(
    inp: ReportInput, rows: list[VariantRow], outcomes: list[TrialOutcome], out_dir: Path, forest: Forest
) -> list[tuple[Path, str]]:
    """The report's PNGs (those with data), each with a caption; the answer first."""
    base = next((row_name(r) for r in rows if r.variant.name == inp.baseline), inp.baseline)
    made: list[tuple[Path | None, str]] = [
        (
            forest_plot(forest, base, out_dir / "forest.png"),
            f"Each variant against the baseline: {forest.metric} difference paired by seed with its interval "
            f"and verdict, grouped by what the variant changes; diamonds: the paper's difference (15A2B MoE, "
            f"Table 1 / Table 3 PPL). {forest.method[0].upper()}{forest.method[1:]}. Numbers: forest.json",
        ),
        (
            gap_curves(val_loss_gaps(inp, rows), base, out_dir / "val_loss_gap.png"),
            "Validation-loss gap to the baseline along training, per family (seed mean ± 1 standard error)",
        ),
    ]
    curves: dict[str, list[dict]] = {}
    for outcome in outcomes:
        if outcome.status not in DONE_STATUSES:
            continue
        t = outcome.trial
        label = (
            f"s{t.seed}"
            + (f" lr={t.lr:g}" if len({x.lr for x in inp.trials}) > 1 else "")
            + (f" {t.condition}" if t.condition else "")
        )
        diverged = outcome.metrics.get(DIVERGED_AT_STEP) if outcome.status == Status.DIVERGED else None
        curves.setdefault(t.variant, []).append(
            {
                "label": label,
                "train": outcome.history.get(TRAIN_LOSS, []),
                "val": outcome.history.get(VAL_LOSS, []),
                "spikes": outcome.history.get(SPIKE_RATIO, []),
                "diverged_at": diverged,
            }
        )
    loss_curve_figure = (
        loss_curves(curves, out_dir / "loss_curves.png"),
        "Loss curves per variant with loss spikes marked (paper Fig. 1, right)",
    )
    f_attn_by_layer, hists, means, long = {}, {}, {}, {}
    for row in rows:
        finished = [o for o in row.trials if o.status == Status.FINISHED]
        name = row_name(row)
        layers = [[o.metrics[per_layer(F_ATTN, i)] for i in range(_n_layers(o))] for o in finished]
        f_attn_by_layer[name] = mean_curve([x for x in layers if x])
        pooled = [o.gate_hist for o in finished if o.gate_hist]
        if pooled:
            hists[name] = [sum(c) for c in zip(*pooled)]
            means[name] = (row.gate_mean.mean if row.gate_mean else None, row.variant.paper_gate_mean)
        long[name] = {rope: _long_points(finished, rope) for rope in ("rope", "yarn")}
    made.append(
        (
            f_attn_heatmap(f_attn_by_layer, out_dir / "f_attn_heatmap.png"),
            "First-token attention share per variant and layer, mean over seeds (paper Fig. 2, Table 4 F-Attn)",
        )
    )
    made.append(
        (
            gate_histograms(hists, means, out_dir / "gate_histograms.png"),
            "Gate-score histograms of the gated variants (paper Fig. 3)",
        )
    )
    made.append(loss_curve_figure)
    if len({t.lr for t in inp.trials}) > 1:
        points: dict[str, list] = {row_name(r): [] for r in rows}
        for o in outcomes:
            name = f"{o.trial.variant} [{o.trial.condition}]" if o.trial.condition else o.trial.variant
            if o.status in DONE_STATUSES and name in points:
                points[name].append((o.trial.lr, o.status, final_loss(o), float(o.metrics.get(SPIKE_COUNT, 0.0))))
        stable = {row_name(r): r.max_stable_lr for r in rows}
        made.append(
            (lr_sweep(points, stable, out_dir / "lr_sweep.png"), "Final loss and spike count against the learning rate")
        )
    made.append(
        (
            long_context(long, out_dir / "long_context.png"),
            "Long-context validation PPL against evaluation length, plain RoPE and YaRN (Table 5)",
        )
    )
    return [(path, caption) for path, caption in made if path is not None]


def _n_layers(outcome: TrialOutcome) -> int:
    count = 0
    while per_layer(F_ATTN, count) in outcome.metrics:
        count += 1
    return count


def _long_points(finished: list[TrialOutcome], rope: str) -> list[tuple[int, float]]:
    by_factor: dict[int, list[float]] = {}
    for outcome in finished:
        for key, value in outcome.metrics.items():
            parsed = parse_long_ppl(key)
            if parsed and parsed[1] == rope and math.isfinite(value):
                by_factor.setdefault(parsed[0], []).append(value)
    seq_len = finished[0].trial.seq_len if finished else 1
    return [(f * seq_len, sum(v) / len(v)) for f, v in sorted(by_factor.items())]
