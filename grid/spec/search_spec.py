"""A grid's `search:` block -> a validated, frozen SearchSpec, and the studies it names. No torch, no optuna.

    search:
      params:                                    # dotted trial-config keys, flat like axis keys
        optim.lr: {log_uniform: [1.0e-4, 3.0e-2]}
        optim.warmup_steps: {int: [0, 20]}       # also {uniform: [lo, hi]}, {choice: [a, b, ...]}
      sampler: {type: tpe, seed: 0, n_startup_trials: 4, multivariate: false}   # or {type: random, seed: 0}
      n_trials: 8                                # per study; COMPLETE + PRUNED + FAIL count
      objective: {metric: final_val_loss, direction: minimize}
      per: variant                               # optional: one study per value (or a list of axes)
      pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 0}   # or percentile, threshold, null
      diverged: worst                            # or fail: how a diverged trial is told to Optuna

Studies: one per combination of the `per` axes' values (one study when `per` is absent). The axes not in
`per` are replicates: each Optuna trial runs once at each of their points (e.g. every seed) and its objective
is the mean over those runs. Sampler settings are passed to Optuna in full, never left to its defaults:
Optuna 5 made TPE multivariate by default (docs/libraries.md, Optuna), so `multivariate` must be written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from gatelab.grid.spec.config_loader import ConfigError, build, check_block, convert
from gatelab.grid.spec.expand import Resolved, field_hint, format_value, resolved, value_at, with_values
from gatelab.trainer.config.invalid import NO_VALUE, InvalidValue
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS, VAL_LOSS
from gatelab.trainer.config.suggest import did_you_mean

if TYPE_CHECKING:
    from gatelab.grid.spec.grid_spec import GridSpec

# The choices of a search block, typed once; the tuples the checks and messages use are read from them.
Kind = Literal["log_uniform", "uniform", "int", "choice"]
SamplerType = Literal["tpe", "random"]
PrunerType = Literal["median", "percentile", "threshold", "none"]
Direction = Literal["minimize", "maximize"]
DivergedPolicy = Literal["worst", "fail"]
KINDS, SAMPLERS, PRUNERS, DIRECTIONS, DIVERGED = map(
    get_args, (Kind, SamplerType, PrunerType, Direction, DivergedPolicy)
)
DEFAULT_DIVERGED: DivergedPolicy = "worst"
SEARCH_KEYS = ("params", "sampler", "n_trials", "objective", "per", "pruner", "diverged")
INTERMEDIATE_METRIC = VAL_LOSS  # what the pruner sees: validation loss at each evaluation (EvalConfig.every)


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One searched trial-config field and its distribution."""

    key: str
    """Dotted trial-config key, e.g. optim.lr."""
    kind: Kind
    """log_uniform | uniform | int | choice."""
    low: float | int | None = None
    """Lower bound (inclusive); None for choice."""
    high: float | int | None = None
    """Upper bound (inclusive); None for choice."""
    choices: tuple = ()
    """The values of a choice."""

    def values_to_check(self) -> tuple:
        """Values that must build a valid trial: both bounds, or every choice."""
        return self.choices if self.kind == "choice" else (self.low, self.high)


@dataclass(frozen=True, kw_only=True)
class SamplerSpec:
    """Optuna sampler, every setting explicit (gatelab's defaults, not Optuna's)."""

    type: SamplerType
    """tpe | random."""
    seed: int = 0
    """Sampler seed; a resumed driver reseeds with seed + trials already asked (see grid/dispatch/search.py)."""
    multivariate: bool | None = None
    """TPE: model the parameters jointly. Required for tpe: Optuna 5 changed its default to true."""
    n_startup_trials: int = 10
    """TPE: random trials before the model is used."""
    n_ei_candidates: int = 24
    """TPE: candidates scored per suggestion."""
    constant_liar: bool = True
    """TPE: treat running trials as bad so parallel asks spread out (matters with max_concurrent > 1)."""

    def __post_init__(self) -> None:
        if self.type not in SAMPLERS:
            raise InvalidValue("type", f"expected one of {', '.join(SAMPLERS)}", value=self.type)
        if self.type == "tpe" and self.multivariate is None:
            raise InvalidValue(
                "multivariate",
                "required for tpe (Optuna 5 changed its default to true); write multivariate: true or false",
            )
        if self.n_startup_trials < 0:
            raise InvalidValue("n_startup_trials", "expected an integer >= 0", value=self.n_startup_trials)
        if self.n_ei_candidates < 1:
            raise InvalidValue("n_ei_candidates", "expected an integer >= 1", value=self.n_ei_candidates)


@dataclass(frozen=True, kw_only=True)
class PrunerSpec:
    """Optuna pruner fed with the validation loss at each evaluation step."""

    type: PrunerType
    """median | percentile | threshold | none."""
    n_startup_trials: int = 5
    """median/percentile: trials that finish before any is pruned."""
    n_warmup_steps: int = 0
    """Training steps before a trial may be pruned."""
    interval_steps: int = 1
    """Check every this many steps (counted from n_warmup_steps)."""
    n_min_trials: int = 1
    """median/percentile: trials reporting a step before it is compared."""
    percentile: float = 25.0
    """percentile: keep trials in the best this-many percent."""
    lower: float | None = None
    """threshold: prune below this validation loss."""
    upper: float | None = None
    """threshold: prune above this validation loss (a loss-spike guard)."""

    def __post_init__(self) -> None:
        if self.type not in PRUNERS:
            raise InvalidValue("type", f"expected one of {', '.join(PRUNERS)} (or pruner: null)", value=self.type)
        for name in ("n_startup_trials", "n_warmup_steps"):
            if getattr(self, name) < 0:
                raise InvalidValue(name, "expected an integer >= 0", value=getattr(self, name))
        for name in ("interval_steps", "n_min_trials"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, "expected an integer >= 1", value=getattr(self, name))
        if not 0 < self.percentile < 100:
            raise InvalidValue("percentile", "expected a number in (0, 100)", value=self.percentile)
        if self.type == "threshold" and self.lower is None and self.upper is None:
            raise InvalidValue("upper", "a threshold pruner needs lower, upper or both")


@dataclass(frozen=True, kw_only=True)
class ObjectiveSpec:
    """What a study optimises."""

    metric: str = FINAL_VAL_LOSS
    """A metric of the finished run (the trial summary, or any metric's latest value)."""
    direction: Direction = "minimize"
    """minimize | maximize."""

    def __post_init__(self) -> None:
        if not self.metric.strip():
            raise InvalidValue("metric", "expected a metric name, e.g. final_val_loss", value=self.metric)
        if self.direction not in DIRECTIONS:
            raise InvalidValue("direction", "expected minimize or maximize", value=self.direction)


@dataclass(frozen=True, kw_only=True)
class SearchSpec:
    """A validated `search:` block."""

    params: tuple[ParamSpec, ...]
    """Searched fields, in file order."""
    sampler: SamplerSpec
    """The sampler, explicit."""
    n_trials: int
    """Optuna trials per study (COMPLETE + PRUNED + FAIL)."""
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    """Metric and direction."""
    per: tuple[str, ...] = ()
    """Axes with one study per combination of their values; () for one study."""
    pruner: PrunerSpec | None = None
    """Pruner, or None for no pruning."""
    diverged: DivergedPolicy = DEFAULT_DIVERGED
    """worst: tell the worst possible value (inf for minimize), so the sampler learns to avoid the region;
    fail: tell FAIL (the sampler then ignores the trial)."""

    def to_dict(self) -> dict:
        """Plain data (stored with each study, to see later what it was created with)."""
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class StudyPlan:
    """One Optuna study of a search: its name and the grid points each of its trials runs at."""

    name: str
    """`<grid>` or `<grid>/<per values, comma-separated>`."""
    per_values: dict
    """Per axis -> this study's value."""
    points: tuple[Resolved, ...]
    """Replicates: each trial runs once at each point, with the searched values on top."""


# --- parsing ---------------------------------------------------------------------------------------------


def parse_search(raw: Any, axes: dict[str, tuple]) -> SearchSpec | None:
    """The `search` mapping checked and converted; ConfigErrors carry the dotted key under `search`."""
    if raw is None:
        return None
    check_block(raw, "search", SEARCH_KEYS)
    for key in ("params", "sampler", "n_trials"):
        if key not in raw:
            raise ConfigError("search", f"missing {key!r} (a search needs params, sampler and n_trials)")
    per = _per(raw.get("per"), axes)
    params = _params(raw["params"], axes, per)
    n_trials = convert(int, raw["n_trials"], "search.n_trials")
    if n_trials < 1:
        raise ConfigError("search.n_trials", f"expected an integer >= 1, got {n_trials}")
    sampler = raw["sampler"]
    if not isinstance(sampler, dict) or "type" not in sampler:
        raise ConfigError(
            "search.sampler",
            "expected a mapping with type (tpe|random) and its settings, e.g. "
            "{type: tpe, seed: 0, n_startup_trials: 4, multivariate: false}",
        )
    sampler_spec = build(SamplerSpec, sampler, "search.sampler")
    if sampler_spec.type == "random" and set(sampler) - {"type", "seed"}:
        odd = sorted(set(sampler) - {"type", "seed"})[0]
        raise ConfigError(f"search.sampler.{odd}", "the random sampler takes only seed")
    objective = build(ObjectiveSpec, raw.get("objective"), "search.objective")
    pruner = _pruner(raw.get("pruner"), objective)
    diverged = raw.get("diverged", DEFAULT_DIVERGED)
    if diverged not in DIVERGED:
        raise ConfigError("search.diverged", f"expected worst or fail, got {diverged!r}")
    return SearchSpec(
        params=params,
        sampler=sampler_spec,
        n_trials=n_trials,
        objective=objective,
        per=per,
        pruner=pruner,
        diverged=diverged,
    )


def _per(raw: Any, axes: dict[str, tuple]) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise ConfigError("search.per", f"expected an axis name or a list of axis names, got {raw!r}")
    for index, name in enumerate(names):
        where = "search.per" if isinstance(raw, str) else f"search.per.{index}"
        if name not in axes:
            options = tuple(axes) or ("(this grid has no axes)",)
            raise ConfigError(where, f"{name!r} is not an axis of this grid{_nearest(str(name), options)}")
    if len(set(names)) != len(names):
        raise ConfigError("search.per", f"an axis appears twice in {names!r}")
    return tuple(names)


def _params(raw: Any, axes: dict[str, tuple], per: tuple[str, ...]) -> tuple[ParamSpec, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            "search.params",
            "expected a mapping of dotted trial-config keys to distributions, "
            "e.g. {optim.lr: {log_uniform: [1.0e-4, 3.0e-2]}}",
        )
    params = []
    for key, dist in raw.items():
        key, where = str(key), f"search.params.{key}"
        if key == "name":
            raise ConfigError(where, "the trial name is not a searchable field")
        hint = field_hint(key, where)
        for axis in axes:
            if key == axis or key.startswith(axis + ".") or axis.startswith(key + "."):
                raise ConfigError(where, f"overlaps the axis {axis!r}: search it or list its values, not both")
        params.append(_param(key, dist, hint, where))
    return tuple(params)


def _param(key: str, dist: Any, hint: Any, where: str) -> ParamSpec:
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(
            where,
            f"expected one distribution, e.g. {{log_uniform: [1.0e-4, 3.0e-2]}}, "
            f"{{int: [0, 20]}} or {{choice: [a, b]}}; got {dist!r}",
        )
    kind, value = next(iter(dist.items()))
    at = f"{where}.{kind}"
    if kind not in KINDS:
        raise ConfigError(at, f"unknown distribution{_nearest(str(kind), KINDS)}")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(at, f"expected a non-empty list of values, got {value!r}")
        choices = tuple(convert(hint, item, f"{at}.{i}") for i, item in enumerate(value))
        for index, item in enumerate(choices):
            if not (item is None or isinstance(item, (bool, int, float, str))):
                raise ConfigError(f"{at}.{index}", f"a choice must be a number, string, bool or null, got {item!r}")
            if repr(item) in {repr(c) for c in choices[:index]}:
                raise ConfigError(f"{at}.{index}", f"value {item!r} appears twice")
        return ParamSpec(key=key, kind=kind, choices=choices)
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(at, f"expected [low, high], got {value!r}")
    number = int if kind == "int" else float
    int_field, float_field = _accepts(hint, 1) and not _accepts(hint, 1.5), _accepts(hint, 1.5)
    if kind == "int" and not int_field:
        raise ConfigError(
            at,
            f"{key} is not an integer field; use "
            + ("{uniform: [low, high]} or {log_uniform: [low, high]}" if float_field else "{choice: [...]}"),
        )
    if kind != "int" and not float_field:
        raise ConfigError(
            at, f"{key} is not a float field; use " + ("{int: [low, high]}" if int_field else "{choice: [...]}")
        )
    low, high = (convert(number, v, f"{at}.{i}") for i, v in enumerate(value))
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ConfigError(at, f"expected finite low < high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{at}.0", f"log_uniform needs low > 0, got {low}")
    return ParamSpec(key=key, kind=kind, low=low, high=high)


def _accepts(hint: Any, value: Any) -> bool:
    try:
        convert(hint, value, "")
        return True
    except ConfigError:
        return False


def _pruner(raw: Any, objective: ObjectiveSpec) -> PrunerSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or "type" not in raw:
        raise ConfigError(
            "search.pruner", f"expected a mapping with type (median|percentile|threshold|none) or null, got {raw!r}"
        )
    spec = build(PrunerSpec, raw, "search.pruner")
    if spec.type == "none":
        return None
    if objective.direction != "minimize":
        raise ConfigError(
            "search.pruner",
            f"the pruner compares {INTERMEDIATE_METRIC} (lower is better); "
            "use objective.direction: minimize or pruner: null",
        )
    return spec


def _nearest(word: str, options) -> str:
    return f"; {did_you_mean(word, options)}"


# --- studies ---------------------------------------------------------------------------------------------


def study_plans(spec: GridSpec) -> list[StudyPlan]:
    """The studies of a search grid, in the order their first grid point appears."""
    assert spec.search is not None
    groups: dict[tuple, list[Resolved]] = {}
    for item in resolved(spec):
        groups.setdefault(tuple(value_at(item.config, axis) for axis in spec.search.per), []).append(item)
    plans = []
    for values, items in groups.items():
        suffix = ",".join(format_value(v) for v in values)
        plans.append(
            StudyPlan(
                name=f"{spec.name}/{suffix}" if suffix else spec.name,
                per_values=dict(zip(spec.search.per, values)),
                points=tuple(items),
            )
        )
    return plans


def check_search(spec: GridSpec) -> None:
    """Every grid point builds with each bound (or choice) of each searched field."""
    assert spec.search is not None
    for param in spec.search.params:
        for value in param.values_to_check():
            for item in resolved(spec):
                try:
                    with_values(item.config, {param.key: value})
                except (ValueError, TypeError) as err:
                    # The line already says `KEY=VALUE does not build`: of an error about that key, only why.
                    same = isinstance(err, InvalidValue) and err.key == param.key and err.value is not NO_VALUE
                    message = err.message if same else str(err)
                    raise ConfigError(
                        f"search.params.{param.key}", f"{param.key}={value!r} does not build ({item.label}): {message}"
                    ) from None
