"""A grid's `seeds:` block: seeds spent where a comparison with the baseline is still open, instead of a fixed
seed axis.

    seeds: {min: 2, max: 8, metric: final_val_loss, margin: 0.005, alpha: 0.05}

Every variant starts with `min` seeds paired with the baseline's (seed i against seed i); an open comparison
gets one more seed per wave until `max`. The verdicts and why repeated looks stay valid: tracking/stats/sequential.py.
The block stands for a `seed` axis of 0..max-1 (what the dry run counts as the most trials); the driver
(grid/dispatch/adaptive.py) runs the part of it the verdicts need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gatelab.grid.spec.conditions import COMPARED_OVER, condition_keys, condition_of
from gatelab.grid.spec.config_loader import ConfigError, build
from gatelab.grid.spec.expand import Trial
from gatelab.trainer.config.invalid import InvalidValue
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS

if TYPE_CHECKING:
    from gatelab.grid.spec.grid_spec import GridSpec

BASELINE = "baseline"  # what every variant is compared with


@dataclass(frozen=True)
class SeedPolicy:
    min: int = 2
    """Paired seeds every variant (and the baseline) starts with; at least 2 (a t-interval needs two)."""
    max: int = 8
    """Seeds at most, per comparison."""
    metric: str = FINAL_VAL_LOSS
    """The summary metric compared (lower or higher: the verdict is two-sided)."""
    margin: float = 0.005
    """Equivalence margin, in the metric's units: a difference inside +-margin is 'equivalent'."""
    alpha: float = 0.05
    """Family-wise error rate over all comparisons and looks."""

    def __post_init__(self) -> None:
        if not isinstance(self.min, int) or self.min < 2:
            raise InvalidValue(
                "min", "expected an integer >= 2 (a confidence interval needs two seeds)", value=self.min
            )
        if not isinstance(self.max, int) or self.max < self.min:
            raise InvalidValue("max", f"expected an integer >= min ({self.min})", value=self.max)
        if not self.metric:
            raise InvalidValue("metric", "expected a summary metric name, e.g. final_val_loss", value=self.metric)
        if not self.margin >= 0:
            raise InvalidValue("margin", "expected a number >= 0", value=self.margin)
        if not 0 < self.alpha < 1:
            raise InvalidValue("alpha", "expected a number between 0 and 1", value=self.alpha)


def parse_seed_policy(raw: Any, axes: dict[str, tuple], base_variant: str, searched: bool) -> SeedPolicy | None:
    """The `seeds` block checked against the grid it is in; None when there is none."""
    if raw is None:
        return None
    policy = build(SeedPolicy, raw, "seeds")
    if "seed" in axes:
        raise ConfigError("axes.seed", "a grid with a `seeds:` policy chooses its seeds: remove the seed axis")
    if searched:
        raise ConfigError("seeds", "a `seeds:` policy and a `search:` block cannot be combined; choose one")
    variants = axes.get("variant", (base_variant,))
    if BASELINE not in variants:
        raise ConfigError(
            "seeds",
            f"compares every variant with {BASELINE!r} on paired seeds, but the grid's variants "
            f"({', '.join(map(str, variants))}) do not include it: add {BASELINE} to axes.variant",
        )
    if len(variants) < 2:
        raise ConfigError("seeds", "needs at least one variant besides the baseline in axes.variant")
    return policy


@dataclass
class Comparison:
    """One variant against the baseline under one condition, trials by seed."""

    name: str
    variant: dict[int, Trial]
    baseline: dict[int, Trial]


def comparisons(trials: list[Trial], spec: GridSpec | None = None) -> list[Comparison]:
    """The grid's comparisons: per condition (grid/spec/conditions.py; the spec, where given, says which zip
    axes go with the variant or seed), every variant but the baseline against the baseline."""
    keys = condition_keys(trials, COMPARED_OVER, spec)
    by_condition: dict[tuple, dict[str, dict[int, Trial]]] = {}
    for trial in trials:
        condition = tuple((k, repr(v)) for k, v in condition_of(trial, keys))
        by_condition.setdefault(condition, {}).setdefault(trial.config.variant, {})[trial.config.seed] = trial
    out = []
    for condition, variants in by_condition.items():
        baseline = variants.get(BASELINE, {})
        suffix = f" [{' '.join(f'{k}={v}' for k, v in condition)}]" if condition else ""
        out += [Comparison(f"{name}{suffix}", seeds, baseline) for name, seeds in variants.items() if name != BASELINE]
    return out


def seed_counts(policy: SeedPolicy, trials: list[Trial]) -> tuple[int, int]:
    """(fewest, most) trials a `seeds:` grid can run: every comparison at min seeds, or all at max."""
    comps = comparisons(trials)
    fewest = {c.baseline[s].key for c in comps for s in range(policy.min) if s in c.baseline}
    fewest |= {c.variant[s].key for c in comps for s in range(policy.min) if s in c.variant}
    return len(fewest), len(trials)
