"""`gatelab report`: a paper-style table, figures and statistics of one grid, built from MLflow.

Read per trial run (trainer/run.py logs them): the summary metrics final_val_loss, final_val_ppl, spike_count,
f_attn, m_act, gate_mean, f_attn_layer_<i>, long_ppl_x<f>_<rope|yarn>; the histories train_loss, val_loss and
spike_ratio; the probes.json artifact (gate-score histogram). Written: report.<md|html|csv>, PNG figures (with
the paper's headline orderings checked, tracking/stats/claims.py) and forest.json (the forest plot's numbers,
tracking/stats/forest.py) in the output folder, the same files under `report/` on the grid's parent run, and, when
the grid sweeps more than one LR, the metrics `max_stable_lr.<variant>` on the parent run.

Choices a reader should know (also printed in the report):
- Measured figures ("ours") come from this grid's small models; the paper's ("paper") from the 15A2B MoE
  trained on 400B tokens (Tables 1, 3, 4). Compare directions and ratios, not absolute values.
- With several LRs, a row's figures are at the variant's best LR (lowest mean final val loss, preferring LRs
  where nothing diverged); the LR-stability section shows the whole sweep.
- Diverged trials are results (docs/design.md): they count against LR stability and are listed per row, but their
  PPL (NaN or capped) is left out of means and pairs.
- A variant is "better" only with a paired t-test over >= 2 seeds and p < 0.05 (docs/design.md, Evidence).
- The forest plot's verdicts also correct for the number of variants (Holm), and for a `seeds:` grid are the
  driver's own (tracking/stats/forest.py), so a table row's p < 0.05 need not be 'different' there.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gatelab.tracking.report.document import Block, Figure, Heading, Paragraph, Table, write_document
from gatelab.tracking.report.figures import make_figures
from gatelab.tracking.report.output import FORMATS, publish_on_parent, report_folder, write_csv
from gatelab.tracking.runs.bulk_history import histories
from gatelab.tracking.runs.ledger import trial_records
from gatelab.tracking.stats.claims import OrderingCheck, check_orderings
from gatelab.tracking.stats.forest import Forest, forest
from gatelab.tracking.stats.rows import (
    ALPHA,
    MeanStd,
    ReportInput,
    TrialOutcome,
    TrialSpec,
    VariantRow,
    VariantSpec,
    build_rows,
    final_loss,
    long_factor,
    mean_of,
    row_name,
    sweeps_lr,
)
from gatelab.trainer.config.metric_names import (
    F_ATTN,
    FINAL_VAL_LOSS,
    GATE_MEAN,
    M_ACT,
    SPIKE_COUNT,
    SPIKE_RATIO,
    TRAIN_LOSS,
    VAL_LOSS,
)
from gatelab.trainer.config.model_cost import format_params
from gatelab.trainer.config.outcome import DONE_STATUSES, Status
from gatelab.trainer.config.trial_folder import PROBES

__all__ = ["FORMATS", "Report", "ReportInput", "TrialSpec", "VariantSpec", "write_report"]

HISTORIES = (TRAIN_LOSS, VAL_LOSS, SPIKE_RATIO, FINAL_VAL_LOSS)  # the final one: its step ends the gap curves
PAPER_MODEL = "15A2B MoE"  # Tables 1, 3 and 4 all come from the 15A2B MoE trained on 400B tokens
ARTIFACT_DOWNLOADS = 8  # probes.json files fetched at once: each is a small request, mostly waiting
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]+")


@dataclass(frozen=True, kw_only=True)
class Report:
    """What `write_report` produced."""

    rows: tuple[VariantRow, ...]
    """Table rows."""
    outcomes: tuple[TrialOutcome, ...]
    """Every trial of the grid with its status."""
    files: tuple[Path, ...]
    """Written files: the report document first, then figures, then forest.json."""
    parent_run_id: str | None
    """The grid's parent run the files were logged to (None: not found, nothing logged)."""
    max_stable: dict
    """Parent-run metric name (max_stable_lr.<variant>) -> max stable LR, when the grid sweeps LRs."""
    artifacts_logged: bool = False
    """Whether the files went to the parent run (proxied artifacts need the server's URI)."""
    orderings: tuple[OrderingCheck, ...] = ()
    """The paper's headline orderings as measured here (tracking/stats/claims.py)."""
    other_runs: int = 0
    """Trial runs of the experiment that are no trial of this grid (another `--set`, an edited grid file)."""
    forest: Forest | None = None
    """The forest plot's numbers: each variant's paired difference to the baseline, interval and verdict
    (tracking/stats/forest.py); also written as forest.json."""


def collect(uri: str, inp: ReportInput, records: dict, *, histograms: bool = True) -> list[TrialOutcome]:
    """Every trial's run, metrics and histories (`records`: the experiment's trial runs by key, as
    tracking.ledger.trial_records reads them); with `histograms`, the gated trials' probes.json, read only
    through an http(s) server URI (the store serves artifacts only through its server, tracking/__init__.py).
    In bulk: the runs in one search, the histories ~100 runs per request (tracking/runs/bulk_history.py), the
    artifacts several at a time."""
    client = MlflowClient(tracking_uri=uri)
    artifacts = histograms and uri.startswith(("http://", "https://"))
    done = {t.key: records[t.key] for t in inp.trials if t.key in records and records[t.key].status in DONE_STATUSES}
    history = histories(uri, [r.run_id for r in done.values()], HISTORIES)
    with tempfile.TemporaryDirectory(prefix="gatelab-report-") as tmp:
        wanted = [  # runs from before the histogram rode on a tag: their probes.json
            t
            for t in inp.trials
            if artifacts
            and t.key in done
            and done[t.key].gate_hist is None
            and done[t.key].status == Status.FINISHED
            and t.variant in inp.variants
            and inp.variants[t.variant].gated
        ]
        with ThreadPoolExecutor(max_workers=ARTIFACT_DOWNLOADS) as pool:
            hists = dict(
                zip(
                    (t.key for t in wanted),
                    pool.map(lambda t: _gate_hist(client, done[t.key].run_id, Path(tmp) / t.key), wanted),
                )
            )
    outcomes = []
    for trial in inp.trials:
        record = records.get(trial.key)
        if record is None:
            outcomes.append(TrialOutcome(trial=trial, status=Status.NEW, run_id=None, metrics={}, history={}))
            continue
        outcomes.append(
            TrialOutcome(
                trial=trial,
                status=record.status,
                run_id=record.run_id,
                metrics=record.metrics,
                history=history.get(record.run_id, {}) if trial.key in done else {},
                gate_hist=record.gate_hist or hists.get(trial.key),
            )
        )
    return outcomes


def _gate_hist(client: MlflowClient, run_id: str, dst: Path) -> tuple | None:
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run_id, PROBES, str(dst))
        counts = json.loads(Path(local).read_text()).get("gate_hist_counts") or None
    except (MlflowException, OSError, ValueError):
        return None  # an older or diverged run without probes.json: no histogram, the rest still reports
    return tuple(int(c) for c in counts) if counts else None


def stable_metrics(rows: list[VariantRow]) -> dict[str, float]:
    """Parent-run metric name -> max stable LR: `max_stable_lr.<variant>` (plus `.<condition>` if any)."""
    out = {}
    for row in rows:
        if row.max_stable_lr is not None:
            suffix = "." + _METRIC_UNSAFE.sub("_", row.condition) if row.condition else ""
            out[f"max_stable_lr.{row.variant.name}{suffix}"] = row.max_stable_lr
    return out


# --- the table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One table column: its header, its cell text, and its raw values for CSV."""

    header: str
    """Shown header; says '(ours)' for measured figures and '(paper, ...)' for published ones."""
    text: Callable
    """VariantRow -> cell text."""
    raw: tuple
    """(csv header, VariantRow -> value) pairs."""


def _num(value, spec: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def _ms(stat: MeanStd | None, spec: str = ".3f") -> str:
    if stat is None:
        return "–"
    return f"{stat.mean:{spec}} ± {stat.std:{spec}}" if stat.std is not None else f"{stat.mean:{spec}} (n=1)"


def columns(inp: ReportInput, rows: list[VariantRow], sweep: bool, factor: int | None) -> list[Column]:
    """The table's columns; LR columns only for an LR sweep, long-context ratios only when measured."""
    paper = f"paper, {PAPER_MODEL}"
    cmp = lambda r: r.comparison  # noqa: E731
    cols = [Column("Variant", lambda r: r.variant.name, (("variant", lambda r: r.variant.name),))]
    if any(r.condition for r in rows):
        cols.append(Column("Condition", lambda r: r.condition, (("condition", lambda r: r.condition),)))
    cols += [
        Column("Paper ref", lambda r: r.variant.paper_ref, (("paper_ref", lambda r: r.variant.paper_ref),)),
        Column(
            f"+Params (ours, {inp.preset})",
            lambda r: format_params(r.extra_params),
            ((f"extra_params_ours_{inp.preset}", lambda r: r.extra_params),),
        ),
        Column(
            f"+Params (paper, {PAPER_MODEL})",
            lambda r: (
                _num(r.variant.paper_added_params_m, "g") + "M" if r.variant.paper_added_params_m is not None else "–"
            ),
            (("extra_params_paper_m", lambda r: r.variant.paper_added_params_m),),
        ),
    ]
    if sweep:
        cols.append(Column("LR (ours, best)", lambda r: _num(r.lr, "g"), (("lr_ours_best", lambda r: r.lr),)))
    cols += [
        Column(
            "Seeds (ours)",
            lambda r: f"{len(r.trials) - r.n_diverged}" + (f" (+{r.n_diverged} diverged)" if r.n_diverged else ""),
            (("seeds_finished", lambda r: len(r.trials) - r.n_diverged), ("seeds_diverged", lambda r: r.n_diverged)),
        ),
        Column(
            "PPL (ours)",
            lambda r: _ms(r.ppl),
            (("ppl_ours_mean", lambda r: mean_of(r.ppl)), ("ppl_ours_std", lambda r: r.ppl.std if r.ppl else None)),
        ),
        Column(f"PPL ({paper})", lambda r: _num(r.variant.paper_ppl), (("ppl_paper", lambda r: r.variant.paper_ppl),)),
        Column(
            "ΔPPL vs baseline (ours, paired by seed)",
            lambda r: "(baseline)" if cmp(r) is None else _num(cmp(r).mean_diff, "+.3f"),
            (("delta_ppl_ours", lambda r: cmp(r).mean_diff if cmp(r) else None),),
        ),
        Column(
            "Test (ours)",
            lambda r: "" if cmp(r) is None else cmp(r).describe(),
            (
                ("test", lambda r: cmp(r).test if cmp(r) else ""),
                ("n_pairs", lambda r: cmp(r).n_pairs if cmp(r) else None),
                ("t_statistic", lambda r: cmp(r).statistic if cmp(r) else None),
                ("p_value", lambda r: cmp(r).p_value if cmp(r) else None),
            ),
        ),
        Column(
            f"Verdict (ours, p<{ALPHA:g})",
            lambda r: "" if cmp(r) is None else cmp(r).verdict,
            (("verdict", lambda r: cmp(r).verdict if cmp(r) else ""),),
        ),
        Column(
            "Spikes (ours, mean)",
            lambda r: _num(mean_of(r.spikes), ".1f"),
            (("spikes_ours_mean", lambda r: mean_of(r.spikes)),),
        ),
    ]
    if sweep:
        cols.append(
            Column(
                "Max stable LR (ours)",
                lambda r: _num(r.max_stable_lr, "g") if r.max_stable_lr else "none",
                (("max_stable_lr_ours", lambda r: r.max_stable_lr),),
            )
        )
    for name, attr, paper_attr, spec, paper_spec in (
        ("F-Attn", F_ATTN, "paper_f_attn", ".3f", ".3f"),
        ("M-Act", M_ACT, "paper_m_act", ".1f", "g"),
        ("Gate mean", GATE_MEAN, "paper_gate_mean", ".3f", ".3f"),
    ):
        cols += [
            Column(
                f"{name} (ours)",
                lambda r, a=attr, s=spec: _num(mean_of(getattr(r, a)), s),
                ((f"{attr}_ours", lambda r, a=attr: mean_of(getattr(r, a))),),
            ),
            Column(
                f"{name} ({paper}, Table 4)",
                lambda r, a=paper_attr, s=paper_spec: _num(getattr(r.variant, a), s),
                ((f"{attr}_paper", lambda r, a=paper_attr: getattr(r.variant, a)),),
            ),
        ]
    if factor:
        for rope, title in (("rope", "RoPE"), ("yarn", "YaRN")):
            cols.append(
                Column(
                    f"PPL x{factor}/x1 {title} (ours)",
                    lambda r, k=rope: _num(mean_of(r.long_ratio.get(k))),
                    ((f"long_ppl_ratio_x{factor}_{rope}_ours", lambda r, k=rope: mean_of(r.long_ratio.get(k))),),
                )
            )
    return cols


def unfinished_trials(inp: ReportInput, outcomes) -> list[TrialOutcome]:
    """Trials without a result. A `seeds:` grid lists all its seeds up to max, of which the verdicts run only
    what they need: its seeds never started are not unfinished, just not needed (yet)."""
    adaptive = inp.seed_rule is not None
    return [o for o in outcomes if o.status not in DONE_STATUSES and not (adaptive and o.status == Status.NEW)]


# --- the document ----------------------------------------------------------------------------------------


def blocks(
    inp: ReportInput,
    rows: list[VariantRow],
    outcomes: list[TrialOutcome],
    pictures: list,
    cols: list[Column],
    sweep: bool,
    artifacts: bool,
    orderings: Sequence[OrderingCheck] = (),
) -> list[Block]:
    """The report's blocks, in order."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    out: list[Block] = [
        Heading(f"gatelab report: grid {inp.grid}", level=1),
        Paragraph(
            f"MLflow experiment {inp.experiment!r}; {len(outcomes)} trials: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f". Built {time.strftime('%Y-%m-%d %H:%M')} from the trials that have finished or diverged."
        ),
        Paragraph(
            f"Columns marked (ours) are measured in this grid at preset {inp.preset}; columns marked (paper) are "
            f"published for the {PAPER_MODEL} at 400B tokens (Tables 1, 3, 4). Compare directions, not absolute "
            f"values. ΔPPL pairs each seed with the baseline's; a variant is 'better' or 'worse' only with a "
            f"paired t-test over >= 2 seeds and p < {ALPHA:g}. Diverged seeds are left out of PPL means."
        ),
        Heading("Results"),
        Table([c.header for c in cols], [[c.text(r) for c in cols] for r in rows]),
        *(Paragraph(note) for note in inp.notes),
    ]
    if sweep:
        out += [
            Heading("Learning-rate stability"),
            Paragraph(
                f"Each cell: final val loss (ours) / spike count (ours), mean over seeds. The max stable LR is "
                f"the largest LR that neither diverged nor ended more than {inp.margin:.0%} above the "
                "variant's best final loss (logged on the grid's parent run as max_stable_lr.<variant>)."
            ),
            lr_stability_table(inp, rows, outcomes),
        ]
    if any(check.verdict != "not measured" for check in orderings):
        out += [
            Heading("The paper's orderings"),
            Paragraph(
                "Each headline ordering of the paper, checked on this grid (rows a-d at each variant's best "
                "LR; e at the two largest LRs of the sweep). 'held' in (a) needs a paired t-test with p < "
                f"{ALPHA:g}; otherwise the direction is reported as 'held (not significant)'."
            ),
            Table(ORDERING_HEADER, [ordering_cells(check) for check in orderings]),
        ]
    out.append(Heading("Figures"))
    out += [Figure(path, caption) for path, caption in pictures]
    if not artifacts:
        out.append(Paragraph(f"Gate-score histograms need {PROBES} artifacts, which only the tracking server serves."))
    unfinished = unfinished_trials(inp, outcomes)
    out.append(Heading(f"Unfinished trials ({len(unfinished)})"))
    out.append(
        Table(
            ["Key", "Variant", "Status", "Trial"],
            [[o.trial.key, o.trial.variant, o.status, o.trial.label] for o in unfinished],
        )
        if unfinished
        else Paragraph("None: every trial has finished or diverged.")
    )
    return out


def lr_stability_table(inp: ReportInput, rows: list[VariantRow], outcomes: list[TrialOutcome]) -> Table:
    """Per row and LR of the sweep: final val loss / spike count, means over the done seeds ('diverged' when
    one diverged), and the row's max stable LR."""
    lrs = sorted({t.lr for t in inp.trials})
    table = []
    for row in rows:
        cells = [row_name(row)]
        for lr in lrs:
            at = [
                o
                for o in outcomes
                if (o.trial.variant, o.trial.condition, o.trial.lr) == (row.variant.name, row.condition, lr)
                and o.status in DONE_STATUSES
            ]
            if any(o.status == Status.DIVERGED for o in at):
                cells.append(Status.DIVERGED.value)
            else:
                losses = [final_loss(o) for o in at]
                spikes = [o.metrics.get(SPIKE_COUNT, 0.0) for o in at]
                cells.append(f"{sum(losses) / len(losses):.3f} / {sum(spikes) / len(spikes):.1f}" if at else "–")
        cells.append(_num(row.max_stable_lr, "g") if row.max_stable_lr else "none")
        table.append(cells)
    return Table(["Variant", *(f"LR {lr:g}" for lr in lrs), "Max stable LR (ours)"], table)


ORDERING_HEADER = ["", "Ordering", "Paper", "Ours", "Verdict", "How strongly"]


def ordering_cells(check: OrderingCheck) -> list[str]:
    return [check.label, check.statement, check.paper, check.measured, check.verdict, check.strength]


def _ladder_files(inp: ReportInput, outcomes: list[TrialOutcome], out_dir: Path, draw: bool) -> tuple:
    """A ladder grid's fit (tracking/stats/ladder.py) made once: ladder.json, and unless only tables are asked
    for, its figures and blocks (tracking/report/ladder_report.py); plus, when it tunes LRs, the max stable LR
    per rung and variant as parent-run metrics (a ladder's LRs differ per rung: one per variant would mix them)."""
    from gatelab.tracking.report.ladder_report import ladder_blocks, ladder_figures, write_ladder_json
    from gatelab.tracking.stats.ladder_points import analyse, ladder_points, rung_rows, rung_stable_lrs

    points = ladder_points(outcomes)
    result, rows = analyse(points, inp.baseline, inp.ladder), rung_rows(outcomes, inp.baseline)
    stable = rung_stable_lrs(outcomes)
    metrics = {s.metric_name: s.max_stable_lr for s in stable if s.max_stable_lr is not None}
    numbers = write_ladder_json(result, rows, inp.ladder, out_dir, stable)
    if not draw:
        return numbers, [], [], metrics
    pictures = ladder_figures(result, rows, inp.baseline, out_dir, points, inp.ladder.paper_delta, stable)
    return numbers, pictures, ladder_blocks(result, rows, inp.ladder, inp.baseline, pictures, stable), metrics


def comparisons_of(inp: ReportInput, uri: str) -> Forest:
    """The forest plot's numbers alone (`gatelab.compare`): each variant's paired difference to the baseline, its
    interval, p and verdict, read and judged exactly as `write_report` does, with nothing written or logged."""
    records = trial_records(uri, inp.experiment)
    outcomes = collect(uri, inp, records, histograms=False)
    return forest(inp, build_rows(inp, outcomes), outcomes)


def write_report(inp: ReportInput, uri: str, out_dir: Path, fmt: str = "md", *, publish: bool = True) -> Report:
    """Collect, tabulate, draw and write the report; with `publish`, log the files and the max stable LRs to
    the grid's parent run. csv writes only the tables: report.csv, orderings.csv and the unfinished trials
    (unfinished.csv)."""
    with report_folder(out_dir, fmt) as out_dir:
        return _write_report(inp, uri, out_dir, fmt, publish=publish)


def _write_report(inp: ReportInput, uri: str, out_dir: Path, fmt: str, *, publish: bool) -> Report:
    records = trial_records(uri, inp.experiment)
    outcomes = collect(uri, inp, records, histograms=fmt != "csv")
    rows = build_rows(inp, outcomes)
    sweep = sweeps_lr(inp)
    cols = columns(inp, rows, sweep, long_factor(outcomes))
    orderings = check_orderings(rows, outcomes)
    answer = forest(inp, rows, outcomes)
    numbers = out_dir / "forest.json"
    numbers.write_text(json.dumps(answer.to_json(), indent=1) + "\n")
    ladder_numbers, ladder_pictures, ladder_items, ladder_stable = [], [], [], None
    if inp.ladder is not None:
        ladder_json, ladder_pictures, ladder_items, ladder_stable = _ladder_files(
            inp, outcomes, out_dir, draw=fmt != "csv"
        )
        ladder_numbers = [ladder_json]
    if fmt == "csv":  # the tables only
        raw = [(name, get) for c in cols for name, get in c.raw]
        unfinished = [[o.trial.key, o.trial.variant, o.status, o.trial.label] for o in unfinished_trials(inp, outcomes)]
        documents = [
            write_csv(out_dir / "report.csv", [n for n, _ in raw], [[g(r) for _, g in raw] for r in rows]),
            write_csv(out_dir / "unfinished.csv", ["key", "variant", "status", "trial"], unfinished),
            write_csv(out_dir / "orderings.csv", ORDERING_HEADER, [ordering_cells(c) for c in orderings]),
        ]
        pictures = []
    else:
        pictures = make_figures(inp, rows, outcomes, out_dir, answer)
        items = blocks(inp, rows, outcomes, pictures, cols, sweep, uri.startswith(("http://", "https://")), orderings)
        items[1:1] = ladder_items  # a ladder's answer at scale first, under the title
        pictures += ladder_pictures
        documents = [write_document(items, out_dir, fmt, f"gatelab report: {inp.grid}")]
    files = [*documents, *(path for path, _ in pictures), numbers, *ladder_numbers]
    stable = ladder_stable if ladder_stable is not None else stable_metrics(rows) if sweep else {}
    parent, logged = publish_on_parent(uri, inp.experiment, inp.grid, files, stable) if publish else (None, False)
    return Report(
        rows=tuple(rows),
        outcomes=tuple(outcomes),
        files=tuple(files),
        parent_run_id=parent,
        max_stable=stable,
        artifacts_logged=logged,
        orderings=tuple(orderings),
        other_runs=len(set(records) - {t.key for t in inp.trials}),
        forest=answer,
    )
