"""Which trials of a grid are comparable: the condition of a trial, defined once for the seed comparisons
(grid/spec/seed_policy.py: the adaptive driver, `gatelab plan`) and the report's rows (grid/spec/report_input.py).
No torch.

A condition is the trial's value of every key that some axis or include entry sets, other than the ones the
consumer aggregates over (variant and seed for a comparison; also the LR for a report row, which summarises
the sweep). The value is read from the trial's resolved config, not from what its entry wrote: an include
entry that leaves a key at the base's value belongs to that value's condition, not to one of its own with no
baseline. In a zip grid that zips one of the aggregated keys, the other zipped axes go with it (each variant,
seed or LR has its own value) and are not conditions: a baseline zipped with an extra layer, the parameter-
matched comparison, is still paired with the gated variants.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gatelab.grid.spec.expand import Trial, format_value, short_keys, value_at

if TYPE_CHECKING:
    from gatelab.grid.spec.grid_spec import GridSpec

COMPARED_OVER = ("variant", "seed")
"""Keys a comparison with the baseline pairs over: never part of its condition."""


def tied_axes(spec: GridSpec | None, aggregated: Iterable[str]) -> tuple[str, ...]:
    """The axes a zip grid ties to one of the `aggregated` keys (none in a crossed grid)."""
    aggregated = tuple(aggregated)
    if spec is None or spec.combine != "zip" or not any(key in spec.axes for key in aggregated):
        return ()
    return tuple(key for key in spec.axes if key not in aggregated)


def condition_keys(trials: list[Trial], aggregated: Iterable[str], spec: GridSpec | None = None) -> tuple[str, ...]:
    """Every key an axis or include entry of the trials sets, in first-seen order, but the `aggregated` ones and
    (given the spec) the axes a zip ties to them."""
    aggregated = tuple(aggregated)
    skip = set(aggregated) | set(tied_axes(spec, aggregated))
    return tuple(dict.fromkeys(key for t in trials for key in t.overrides if key not in skip))


def condition_of(trial: Trial, keys: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """(key, value) of each condition key, read from the trial's resolved config."""
    return tuple((key, value_at(trial.config, key)) for key in keys)


def condition_text(trial: Trial, keys: tuple[str, ...]) -> str:
    """'n_layers=6 warmup_steps=5' ('' when there are no keys), keys shortened to their last part."""
    short = short_keys(keys)
    return " ".join(f"{short[key]}={format_value(value)}" for key, value in condition_of(trial, keys))
