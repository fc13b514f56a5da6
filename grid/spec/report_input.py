"""A grid as the report needs it (tracking/report/grid_report.py `ReportInput`, tracking/report/search_report.py
`SearchReportInput`): its trials with their seeds, LRs, conditions and costs, and the catalog's paper references,
published figures and extra parameters at each trial's own model. Built once for `gatelab report` and the Python
API (`gatelab.report`, `gatelab.compare`). No torch (grid/ never imports it); MLflow only through tracking.
"""

from __future__ import annotations

from gatelab.grid.spec.conditions import condition_keys, condition_text, tied_axes
from gatelab.grid.spec.expand import Trial, format_value, value_at
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.ladder_spec import PAPER_TARGET_DELTA_NATS, PAPER_TARGET_FLOPS, rung_of
from gatelab.grid.spec.seed_policy import Comparison, comparisons
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.model_cost import added_params

# What a report row aggregates over (seed) or summarises (LR); other keys split rows into conditions.
ROW_AXES = ("variant", "seed", "optim.lr")
DEFAULT_MARGIN = 0.05
"""Max stable LR: how far (relative) above a variant's best final loss still counts as stable (`--margin`)."""


def zipped_note(spec: GridSpec, trials: list[Trial]) -> str | None:
    """What each variant (at each LR, seed) was trained with when its zip axes are not conditions."""
    tied = tied_axes(spec, ROW_AXES)
    if not tied:
        return None
    said = {}
    for t in trials:
        where = t.config.variant + "".join(
            f" {name}={format_value(value_at(t.config, key))}"
            for key, name in (("optim.lr", "lr"), ("seed", "seed"))
            if key in spec.axes
        )
        said[where] = condition_text(t, tied)
    return (
        f"combine: zip ties {', '.join(tied)} to the {'/'.join(k for k in ROW_AXES if k in spec.axes)} axis, so "
        "rows are not split by it and ΔPPL pairs across it; each trial was trained with: "
        + "; ".join(f"{where}: {values}" for where, values in said.items())
        + "."
    )


def report_input(spec: GridSpec, trials: list[Trial], margin: float):
    """The grid and the catalog as tracking.report needs them."""
    from gatelab.grid.dispatch.adaptive import rule_of
    from gatelab.grid.dispatch.ray_jobs import experiment_name
    from gatelab.tracking.report.grid_report import ReportInput, TrialSpec, VariantSpec

    catalog = load_catalog(spec.base.catalog)
    used = {t.config.variant for t in trials} | {"baseline"}
    variants = {}
    for name, variant in catalog.items():
        if name not in used:
            continue
        paper = variant.paper
        variants[name] = VariantSpec(
            name=name,
            paper_ref=variant.paper_ref,
            gated=variant.is_gated,
            paper_added_params_m=paper.added_params_m,
            paper_ppl=paper.ppl,
            paper_gate_mean=paper.gate_mean,
            paper_m_act=paper.m_act,
            paper_f_attn=paper.f_attn,
            axes=variant.axes,
        )
    keys = condition_keys(trials, ROW_AXES, spec)
    specs = tuple(
        TrialSpec(
            key=t.key,
            variant=t.config.variant,
            seed=t.config.seed,
            lr=t.config.optim.lr,
            condition=condition_text(t, keys),
            label=t.label,
            seq_len=t.config.seq_len,
            extra_params=added_params(t.config.model.resolve(), catalog[t.config.variant], catalog),
            flops=training_flops(t),
            rung=getattr(rung_of(spec.ladder, t.overrides), "index", None),
        )
        for t in trials
    )
    seeds = {}
    if spec.seeds is not None:  # the driver's own comparisons, over this report's trials (same keys)
        by_key = {s.key: s for s in specs}
        seeds = {
            "seed_rule": rule_of(spec.seeds),
            "seed_metric": spec.seeds.metric,
            "comparisons": tuple(
                Comparison(
                    c.name,
                    {seed: by_key[t.key] for seed, t in c.variant.items()},
                    {seed: by_key[t.key] for seed, t in c.baseline.items()},
                )
                for c in comparisons(trials, spec)
            ),
        }
    return ReportInput(
        grid=spec.name,
        experiment=experiment_name(spec),
        preset=spec.base.model.preset,
        trials=specs,
        variants=variants,
        margin=margin,
        notes=tuple(note for note in (zipped_note(spec, trials),) if note),
        ladder=ladder_target(spec),
        **seeds,
    )


def ladder_target(spec: GridSpec):
    """What tracking/stats/ladder.py needs of a ladder grid: its target, floor and the paper's own difference."""
    from gatelab.tracking.stats.ladder import LadderTarget

    if spec.ladder is None:
        return None
    paper = PAPER_TARGET_DELTA_NATS if spec.ladder.target_flops == PAPER_TARGET_FLOPS else None
    return LadderTarget(target_flops=spec.ladder.target_flops, floor=spec.ladder.floor, paper_delta=paper)


def search_report_input(spec: GridSpec, store, margin: float):
    """A search grid's studies as tracking.search_report needs them: the journal's trials (read by
    grid/dispatch/search_study.py, which imports optuna) as plain data."""
    from gatelab.grid.dispatch.ray_jobs import experiment_name
    from gatelab.grid.dispatch.search_study import search_studies
    from gatelab.tracking.report.search_report import SearchParam, SearchReportInput, SearchStudy, SearchTrial

    search = spec.search
    studies = []
    for plan, rows, best in search_studies(spec, store):
        label = ",".join(format_value(v) for v in plan.per_values.values()) or spec.name
        trials = tuple(
            SearchTrial(
                number=row["number"],
                state=row["told"],
                # Optuna stores a pruned trial's last reported loss as its value: not an objective value
                value=None if row["told"] == "pruned" else row["value"],
                params=row["params"],
                keys=tuple(row["keys"]),
                error=(
                    f"at step {row['last_step']}, val loss {row['value']:.4g}"
                    if row["told"] == "pruned" and row["value"] is not None
                    else row["error"]
                ),
            )
            for row in rows
        )
        studies.append(SearchStudy(name=plan.name, label=label, trials=trials, best=best))
    params = tuple(
        SearchParam(
            key=p.key,
            log=p.kind == "log_uniform",
            # bools are ints to Python but not a scale to draw or a "largest stable" to find
            numeric=p.kind != "choice"
            or all(isinstance(c, int | float) and not isinstance(c, bool) for c in p.choices),
            choices=p.choices,
        )
        for p in search.params
    )
    return SearchReportInput(
        grid=spec.name,
        experiment=experiment_name(spec),
        metric=search.objective.metric,
        direction=search.objective.direction,
        params=params,
        studies=tuple(studies),
        margin=margin,
    )
