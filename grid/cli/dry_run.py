"""`gatelab submit GRID --dry-run`: the trial table, with what is known of each trial and its cost. No Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatelab.grid.cli.terminal import table, tally
from gatelab.grid.spec.expand import Trial, format_value, short_keys
from gatelab.grid.spec.seed_policy import seed_counts
from gatelab.grid.spec.trial_cost import training_flops
from gatelab.trainer.config.outcome import Status

if TYPE_CHECKING:
    from gatelab.grid.spec.grid_spec import GridSpec

COLUMNS = ("key", "variant", "overrides", "status", "est. FLOPs")


def format_flops(flops: float) -> str:
    """1.2e12 (no '+', no leading zero in the exponent)."""
    mantissa, _, exponent = f"{flops:.1e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def compact_overrides(trial: Trial) -> str:
    """'seed=0 lr=0.003': the trial's overrides except the variant (it has its own column)."""
    keys = tuple(key for key in trial.overrides if key != "variant")
    short = short_keys(keys)
    return " ".join(f"{short[key]}={format_value(trial.overrides[key])}" for key in keys) or "-"


def trial_rows(spec: GridSpec, trials: list[Trial], statuses: dict[str, str] | None = None) -> list[dict]:
    """One JSON-ready row per trial: key, name, variant, label, overrides, status, est_flops."""
    statuses = statuses or {}
    return [
        {
            "key": trial.key,
            "name": trial.config.name,
            "variant": trial.config.variant,
            "label": trial.label,
            "overrides": dict(trial.overrides),
            "status": statuses.get(trial.key, Status.NEW),
            "est_flops": training_flops(trial),
        }
        for trial in trials
    ]


def trial_table(spec: GridSpec, trials: list[Trial], statuses: dict[str, str] | None = None) -> str:
    """The printable table and a summary line (trial count per status, total estimated FLOPs)."""
    rows = trial_rows(spec, trials, statuses)
    cells = [
        (row["key"], row["variant"], compact_overrides(trial), row["status"], format_flops(row["est_flops"]))
        for row, trial in zip(rows, trials)
    ]
    by_status = tally(row["status"] for row in rows)
    total = sum(row["est_flops"] for row in rows)
    if spec.seeds is not None:
        low, high = seed_counts(spec.seeds, trials)
        per_variant = f"{spec.seeds.min}-{spec.seeds.max} seeds per variant"
        trials_text = f"{low} to {high} trials (adaptive seeds, {per_variant}; listed: all {high})"
        flops_text = f"est. at most {format_flops(total)}"
    else:
        trials_text, flops_text = f"{len(rows)} trials", f"est. {format_flops(total)}"
    summary = (
        f"grid {spec.name}: {trials_text} ({by_status}), {flops_text} training FLOPs; "
        f"{spec.resources.describe()}, "
        f"at most {spec.ray.max_concurrent} at once; dry run: nothing started"
    )
    # the FLOPs column is right-aligned so exponents line up
    return "\n".join([*table(COLUMNS, cells, right=(len(COLUMNS) - 1,)), summary])
