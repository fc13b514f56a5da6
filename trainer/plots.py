"""PNG figures of one trial (matplotlib, headless): loss with spikes, F-Attn per layer (paper Fig. 2),
gate-score histogram (Fig. 3), long-context PPL (Table 5 at small scale)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import FuncFormatter, NullFormatter

from gatelab.trainer.config.metric_names import GATE_HIST_BINS as HIST_BINS
from gatelab.trainer.config.metric_names import ROPE_MODES, parse_long_ppl
from gatelab.trainer.figure_file import headless_pyplot, save_figure
from gatelab.trainer.probes import ProbeReport
from gatelab.trainer.spikes import Spike

plt = headless_pyplot()  # Agg, unless a notebook chose its own backend (trainer/figure_file.py)


def loss_curve(train: list, val: list, spikes: list[Spike], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), lw=0.8, label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="val loss")
    loss_at = dict(train)
    for spike in spikes:
        ax.axvline(spike.step, color="red", alpha=0.3)
        ax.plot(spike.step, loss_at.get(spike.step, spike.reference * spike.ratio), "rv")
    ax.set(xlabel="step", ylabel="loss", title=f"{title}  ({len(spikes)} spikes)")
    ax.legend()
    return save_figure(fig, path)


def f_attn_per_layer(report: ProbeReport, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    layers = range(len(report.f_attn_per_layer))
    ax.bar(layers, report.f_attn_per_layer)
    ax.set(
        xlabel="layer",
        ylabel="attention on first token",
        ylim=(0, 1),
        title=f"{title}: F-Attn mean {report.f_attn:.3f}",
    )
    return save_figure(fig, path)


def gate_histogram(report: ProbeReport, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    counts = report.gate_hist_counts[:HIST_BINS]
    total = max(sum(report.gate_hist_counts), 1)
    ax.bar([(i + 0.5) / HIST_BINS for i in range(HIST_BINS)], [c / total for c in counts], width=1 / HIST_BINS)
    ax.set(
        xlabel="gate score",
        ylabel="fraction",
        xlim=(0, 1),
        title=f"{title}: mean {report.gate_mean:.3f}, <0.1: {report.gate_frac_below_0_1:.2f}",
    )
    return save_figure(fig, path)


def long_context_curve(metrics: dict[str, float], train_len: int, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lengths = set()
    parsed = {name: parse_long_ppl(name) for name in metrics}
    for rope in ROPE_MODES:
        points = sorted((fm[0], metrics[name]) for name, fm in parsed.items() if fm and fm[1] == rope)
        if points:
            ax.plot([f * train_len for f, _ in points], [v for _, v in points], "o-", label=rope)
            lengths.update(f * train_len for f, _ in points)
    ax.set(xscale="log", yscale="log", xlabel="eval length (tokens)", ylabel="val PPL", title=title)
    ax.set_xticks(sorted(lengths))
    plain_log_labels(ax)
    ax.legend()
    return save_figure(fig, path)


def plain_log_labels(ax) -> None:
    """Plain numbers on log axes. Matplotlib's default log labels are mathtext ($10^{2}$), and typesetting
    them took ~0.4 s of every trial's plots, more than a smoke trial's training."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
