"""`gatelab submit GRID --dry-run` of a ladder grid: what each rung trains and costs, and the whole ladder's cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatelab.grid.cli.dry_run import format_flops
from gatelab.grid.cli.terminal import table
from gatelab.grid.spec.expand import Trial
from gatelab.grid.spec.ladder_spec import rung_of
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.model_cost import format_params, total_params

if TYPE_CHECKING:
    from gatelab.grid.spec.grid_spec import GridSpec

HEADER = (
    "rung",
    "model",
    "non-emb. params",
    "total params",
    "tokens",
    "steps",
    "LR",
    "FLOPs (all trials)",
    "est. wall",
)


def _wall_seconds(trials: list[Trial], cpus: int) -> float:
    """The rung's trials one after another on this machine: a few measured steps of its baseline trial (torch,
    imported only here), scaled by each trial's steps and FLOPs."""
    from gatelab.trainer.bench.step_time import seconds_per_step

    reference = next(t for t in trials if t.config.variant == "baseline")
    step = seconds_per_step(reference.config, threads=cpus)  # on the trial's own CPUs, as Ray runs it
    per_flop = step * reference.config.schedule.max_steps / training_flops(reference)
    return per_flop * sum(training_flops(t) for t in trials)


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.1f} min"
        if seconds >= 90
        else f"{seconds:.0f} s"
    )


def ladder_table(spec: GridSpec, trials: list[Trial], *, measure: bool | None = None) -> str:
    """One line per rung (its trials' FLOPs summed over variants and seeds, and their wall time on this machine
    from a few measured steps unless `measure` is off), then the ladder's total and its target."""
    ladder = spec.ladder
    if measure is None:  # steps measured here say nothing of a GPU grid's workers
        measure = spec.resources.gpus == 0
    baseline = get_variant("baseline", spec.base.catalog)
    rows, total, wall = [], 0.0, 0.0
    for rung in ladder.rungs:
        at = [t for t in trials if rung_of(ladder, t.overrides) is rung]
        flops = sum(training_flops(t) for t in at)
        seconds = _wall_seconds(at, max(1, int(spec.resources.cpus))) if measure and at else None
        total += flops
        wall += seconds or 0.0
        model = next((t.config.model.resolve() for t in at), None)
        rows.append(
            (
                str(rung.index),
                " ".join(f"{k}={v}" for k, v in rung.model_overrides.items()),
                format_params(rung.non_embedding_params),
                format_params(total_params(model, baseline)) if model else "-",
                f"{rung.tokens:.3g}",
                str(rung.steps),
                f"{rung.lr:.3g}" if rung.lr is not None else "axis/base",
                format_flops(flops),
                _duration(seconds) if seconds is not None else "-",
            )
        )
    largest = max(ladder.rungs, key=lambda r: r.non_embedding_params)
    largest_flops = max((training_flops(t) for t in trials if rung_of(ladder, t.overrides) is largest),
                        default=float("nan"))  # fmt: skip
    lines = table(HEADER, rows, right=(2, 3, 4, 5, 6, 7, 8))
    lines += [
        f"ladder {spec.name}: {len(ladder.rungs)} rungs, {ladder.tokens_per_param:g} tokens per non-embedding "
        f"parameter, LR rule {ladder.lr_rule}, warmup rule {ladder.warmup_rule}; est. {format_flops(total)} "
        f"training FLOPs in all"
        + (
            f"; est. {_duration(wall / spec.ray.max_concurrent)} wall time on this machine at "
            f"{spec.ray.max_concurrent} at once (measured steps; Ray's start and evaluations not counted)"
            if measure
            else ""
        ),
        f"target {ladder.target} = {format_flops(ladder.target_flops)} FLOPs: "
        f"{ladder.target_flops / largest_flops:.3g}x the largest rung's trial (the extrapolation the fit makes)",
    ]
    return "\n".join(lines)
