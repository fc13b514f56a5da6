"""A grid's `ladder:` block: the same ablation at several model sizes with compute-matched budgets, so that
tracking/stats/ladder.py can fit loss against compute and extrapolate to a target scale. A ladder is a grid:
its rungs multiply the grid's points, and each rung only sets trial-config values (the model's size, the steps
its budget buys, the learning rate and warmup its rule gives); keys, resume, seeds and the dispatch loop are the
grid's own.

    ladder:
      widths: [32, 48, 64, 96]     # d_model per rung at the base's depth and head_dim; heads follow the width
      # rungs: [{d_model: 32, n_q_heads: 2, ...}, ...]   # or the model overrides of each rung, as written
      tokens_per_param: 20         # each rung trains on this many tokens per non-embedding parameter
      lr_rule: inverse_cube_root   # the base's optim.lr at the first rung, times (N / N_first)^(-1/3);
                                   # none: keep optim.lr (or tune it with an optim.lr axis, per rung)
      warmup_rule: params_tokens   # warmup over about N tokens; none: keep optim.warmup_steps
      target: {params: 1.7e9, tokens: 4.0e11}   # or {flops: ...}; the default is the paper's dense model
      floor: null                  # hold the fit's floor E here (else fitted from 4 rungs up, 0 below)

Which parameter count: N is the baseline's non-embedding parameters at the rung (trainer/config/model_cost.py
`non_embedding_params`), the scaling laws' N; every variant of a rung trains on the same tokens, so a gate's
own parameters and FLOPs are what it costs beyond the baseline, counted in the fit's compute (grid/spec/
trial_cost.py), not budgeted away. The rules are OLMo-core's ladder's (LR falling as N^(-1/3), a warmup of about
N tokens) for runs without muP; depth stays fixed across widths, the advice of those who ran ladders so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gatelab.grid.spec.config_loader import ConfigError, check_block
from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.model_cost import non_embedding_params
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.config.suggest import did_you_mean
from gatelab.trainer.config.trial import ModelChoice, TrialConfig

LrRule = Literal["inverse_cube_root", "none"]
WarmupRule = Literal["params_tokens", "none"]
LADDER_KEYS = ("widths", "rungs", "tokens_per_param", "lr_rule", "warmup_rule", "target", "floor")
MIN_RUNGS = 3
DEFAULT_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022 (Chinchilla)
# The paper's dense 1.7B model (28 layers) trained on 400B tokens (Table 2 rows 1-2): the default target.
PAPER_TARGET_PARAMS = 1.7e9
PAPER_TARGET_TOKENS = 4.0e11
PAPER_TARGET_FLOPS = 6.0 * PAPER_TARGET_PARAMS * PAPER_TARGET_TOKENS  # 6 N D (Kaplan et al. 2020)
PAPER_TARGET_DELTA_NATS = math.log(7.404 / 7.499)  # its measured G1 difference: PPL 7.499 -> 7.404, -0.013 nats


@dataclass(frozen=True)
class Rung:
    """One rung: the model overrides that size it and what its budget and rules make of the trial."""

    index: int
    model_overrides: dict
    non_embedding_params: int
    tokens: float
    steps: int
    lr: float | None
    """None: the rule is off (the trial keeps the grid's optim.lr)."""
    warmup_steps: int | None

    def values(self) -> dict[str, Any]:
        """The dotted trial-config values this rung sets."""
        out: dict[str, Any] = {f"model.overrides.{k}": v for k, v in self.model_overrides.items()}
        out["schedule.max_steps"] = self.steps
        if self.lr is not None:
            out["optim.lr"] = self.lr
        if self.warmup_steps is not None:
            out["optim.warmup_steps"] = self.warmup_steps
        return out


def rung_of(ladder: LadderSpec | None, overrides: dict) -> Rung | None:
    """The rung whose values a trial's overrides carry; None outside a ladder."""
    if ladder is None:
        return None
    return next((r for r in ladder.rungs if all(overrides.get(k) == v for k, v in r.values().items())), None)


@dataclass(frozen=True)
class LadderSpec:
    rungs: tuple[Rung, ...]
    tokens_per_param: float
    lr_rule: LrRule
    warmup_rule: WarmupRule
    target_flops: float
    floor: float | None = None
    target: dict = field(default_factory=dict)
    """The target as written (params and tokens, or flops)."""


def _widths(widths: list, base: ModelConfig) -> list[dict]:
    """Model overrides of each width at the base's depth and head_dim: heads and FFN follow the width, the
    query-to-key/value head ratio kept."""
    out = []
    for i, width in enumerate(widths):
        where = f"ladder.widths.{i}"
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0 or width % base.head_dim:
            raise ConfigError(where, f"expected a positive multiple of the head_dim {base.head_dim}, got {width!r}")
        q_heads = width // base.head_dim
        kv_heads = max(1, q_heads * base.n_kv_heads // base.n_q_heads)
        if q_heads % kv_heads:
            raise ConfigError(where, f"{q_heads} query heads do not split into groups of {kv_heads} key/value heads")
        ffn = max(8, round(base.ffn_dim * width / base.d_model / 8) * 8)
        out.append({"d_model": width, "n_q_heads": q_heads, "n_kv_heads": kv_heads, "ffn_dim": ffn})
    return out


def _number(raw: dict, key: str, default: float | None, *, positive: bool = True) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise ConfigError(f"ladder.{key}", f"expected a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _choice(raw: dict, key: str, options: tuple[str, ...]) -> str:
    value = raw.get(key, options[0])
    if value not in options:
        raise ConfigError(f"ladder.{key}", f"{value!r}: {did_you_mean(str(value), options)}")
    return value


def _target_flops(raw: Any) -> tuple[float, dict]:
    """Training FLOPs of the target (6 N D, Kaplan et al. 2020), from params and tokens or given."""
    raw = {"params": PAPER_TARGET_PARAMS, "tokens": PAPER_TARGET_TOKENS} if raw is None else raw
    if not isinstance(raw, dict) or not (set(raw) == {"flops"} or set(raw) == {"params", "tokens"}):
        raise ConfigError("ladder.target", f"expected {{params: N, tokens: D}} or {{flops: C}}, got {raw!r}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"ladder.target.{key}", f"expected a positive number, got {value!r}")
    return (float(raw["flops"]) if "flops" in raw else 6.0 * raw["params"] * raw["tokens"]), dict(raw)  # 6 N D


def parse_ladder(raw: Any, base: TrialConfig, axes: dict) -> LadderSpec | None:
    """The validated `ladder:` block, its rungs computed for `base`; None without one."""
    if raw is None:
        return None
    check_block(raw, "ladder", LADDER_KEYS)
    if ("widths" in raw) == ("rungs" in raw):
        raise ConfigError(
            "ladder", "give the rungs as `widths:` (a rule) or as `rungs:` (model overrides), one of them"
        )
    model = base.model.resolve()
    key = "widths" if "widths" in raw else "rungs"
    listed = raw[key]
    if not isinstance(listed, list) or len(listed) < MIN_RUNGS:
        raise ConfigError(f"ladder.{key}", f"expected a list of at least {MIN_RUNGS} rungs, got {listed!r}")
    if key == "rungs" and not all(isinstance(r, dict) and r for r in listed):
        raise ConfigError("ladder.rungs", "expected each rung as a mapping of model overrides, e.g. {d_model: 64}")
    sizes = _widths(listed, model) if key == "widths" else [dict(r) for r in listed]
    for axis in axes:
        if axis.startswith("model.") or axis == "schedule.max_steps":
            raise ConfigError(f"axes.{axis}", "a ladder sets the model's size and the steps per rung: not an axis too")
    tokens_per_param = _number(raw, "tokens_per_param", DEFAULT_TOKENS_PER_PARAM)
    lr_rule = _choice(raw, "lr_rule", get_args(LrRule))
    if lr_rule != "none" and "optim.lr" in axes:
        lr_rule = "none"  # tuned per rung by the axis: the fit takes each rung's best LR
    warmup_rule = _choice(raw, "warmup_rule", get_args(WarmupRule))
    target_flops, target = _target_flops(raw.get("target"))
    floor = _number(raw, "floor", None, positive=False)
    baseline = get_variant("baseline", base.catalog)
    rungs, first_params = [], None
    for index, overrides in enumerate(sizes):
        where = f"ladder.{key}.{index}"
        try:
            choice = ModelChoice(preset=base.model.preset, overrides={**base.model.overrides, **overrides})
            params = non_embedding_params(choice.resolve(), baseline)
        except (ValueError, TypeError) as err:
            raise ConfigError(where, f"this rung's model does not build: {err}") from None
        first_params = first_params or params
        tokens = tokens_per_param * params
        steps = max(1, math.ceil(tokens / base.tokens_per_step))
        lr = base.optim.lr * (params / first_params) ** (-1 / 3) if lr_rule == "inverse_cube_root" else None
        warmup = min(steps - 1, math.ceil(params / base.tokens_per_step)) if warmup_rule == "params_tokens" else None
        rungs.append(Rung(index, overrides, params, tokens, steps, lr, warmup))
    ordered = [r.non_embedding_params for r in rungs]
    if ordered != sorted(ordered) or len(set(ordered)) < len(ordered):
        raise ConfigError(f"ladder.{key}", f"expected rungs growing in size, got {ordered} non-embedding parameters")
    return LadderSpec(
        rungs=tuple(rungs),
        tokens_per_param=tokens_per_param,
        lr_rule=lr_rule,
        warmup_rule=warmup_rule,
        target_flops=target_flops,
        floor=floor,
        target=target,
    )
