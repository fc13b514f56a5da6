"""The resolved configuration of one trial: the schema `gatelab train` takes and a grid's `base` uses.

Pure Python (no torch), so `grid/` can load, validate, expand and hash it. Defaults follow the paper's
recipe at small scale (docs/paper.md §8): AdamW with its default betas/eps, linear warmup then cosine decay to a
minimum LR, gradient clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import lru_cache

from gatelab.trainer.config.catalog import Variant, get_variant, load_catalog
from gatelab.trainer.config.gate_spec import GateSpec
from gatelab.trainer.config.invalid import InvalidValue
from gatelab.trainer.config.presets import ModelConfig, preset
from gatelab.trainer.corpus import DataConfig


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """A preset plus field overrides."""

    preset: str = "tiny"
    """Named preset (tiny, tiny-moe, laptop, small, paper-1.7b, paper-1.7b-48l, paper-moe-15a2b)."""
    overrides: dict = field(default_factory=dict)
    """ModelConfig fields to change, e.g. {n_layers: 6}."""

    def resolve(self) -> ModelConfig:
        try:
            key = tuple(sorted(self.overrides.items()))
            hash(key)
        except TypeError:  # an unhashable override value: resolve without the cache
            return _overridden(self.preset, self.overrides)
        return _resolve(self.preset, key)


@lru_cache(maxsize=1024)
def _resolve(preset_name: str, overrides: tuple) -> ModelConfig:
    # Grids build thousands of configs from a handful of model choices (the 10,000-trial expansion benchmark).
    return _overridden(preset_name, dict(overrides))


def _overridden(preset_name: str, overrides: dict) -> ModelConfig:
    """The preset with the overrides applied; errors keyed by the ModelChoice field at fault."""
    try:
        base = preset(preset_name)
    except InvalidValue as err:
        raise err.under("preset") from None
    try:
        return base.with_overrides(**overrides)
    except InvalidValue as err:
        raise err.under("overrides") from None


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW and the LR schedule."""

    lr: float = 3e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.015
    """Cosine floor as a fraction of lr (the MoE recipe decays 2e-3 -> 3e-5, a ratio of 0.015)."""
    warmup_steps: int = 20
    """Linear warmup steps (the MoE recipe: 1k of 100k)."""
    weight_decay: float = 0.01
    """Decoupled weight decay on matrices, not on norms or input-independent gate parameters (AdamW default)."""
    beta1: float = 0.9
    """AdamW beta1 (the paper keeps AdamW defaults)."""
    beta2: float = 0.999
    """AdamW beta2 (default)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """How long and how big."""

    max_steps: int = 60
    """Optimizer steps."""
    batch_size: int = 8
    """Sequences per micro-batch over all data-parallel workers (each of R DDP workers reads 1/R of it)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; global batch = batch_size * grad_accum * seq_len tokens."""
    seq_len: int | None = None
    """Training sequence length; None takes the preset's max_seq_len."""
    log_every: int = 5
    """Log train metrics every this many steps."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Validation, probes and long-context evaluation."""

    every: int = 20
    """Validation loss/PPL every this many steps (and at the end)."""
    batches: int = 4
    """Validation batches per evaluation (the same fixed batches every time)."""
    probe_every: int = 0
    """Run the probes every this many evaluations (0: only at the end)."""
    probe_batches: int = 2
    """Batches for the probes."""
    long_context_factors: tuple = (1, 2, 4, 8)
    """Eval lengths as multiples of the training length, plain RoPE and YaRN (Table 5 at small scale)."""
    long_context_batches: int = 2
    """Batches per long-context length."""
    long_context_max_tokens: int = 65_536
    """Skip lengths whose batch exceeds this many tokens (8x 'if it fits')."""


@dataclass(frozen=True, kw_only=True)
class StabilityConfig:
    """Loss-spike detection and divergence."""

    spike_window: int = 50
    """Rolling window of train losses whose median and spread a spike is measured against."""
    spike_factor: float = 1.3
    """A step is high above factor * rolling median (and z robust sigmas); two high steps make a spike."""
    spike_z: float = 6.0
    """Robust standard deviations (1.4826 * MAD of the window) a high step must also exceed."""
    spike_single_step_factor: float = 2.0
    """One step this many times the median is a spike on its own."""
    recover_factor: float = 1.05
    """A spike has recovered when the loss is back under factor * the median before it."""
    divergence_loss: float | None = None
    """Loss ceiling that ends the trial as diverged; None means 1.5 * ln(vocab_size)."""


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Checkpoint cadence."""

    every: int = 20
    """Save every this many steps (and at the end)."""
    keep_last: int = 2
    """Keep the newest K checkpoints."""


PRECISIONS = (None, "bf16-mixed", "32-true")

# How or where a trial runs, not what it computes: left out of the trial key (grid/spec/identity.py) and recorded as
# run tags `setting.<key>` (the latest attempt's), not as params: MLflow never lets a param change, and each of
# these may differ when a trial resumes (another checkpoint cadence or name, a moved catalog, another device).
RUN_SETTINGS = ("name", "catalog", "compile", "precision", "checkpoint", "schedule.log_every", "data.source")


def is_run_setting(dotted_key: str) -> bool:
    """Whether a dotted config key (`checkpoint.every`) is, or lies under, one of RUN_SETTINGS."""
    return any(dotted_key == s or dotted_key.startswith(f"{s}.") for s in RUN_SETTINGS)


def drop_run_settings(data: dict) -> dict:
    """to_dict(config) without RUN_SETTINGS (in place; returned for chaining)."""
    for dotted in RUN_SETTINGS:
        *parents, last = dotted.split(".")
        inner = data
        for part in parents:
            inner = inner[part]
        inner.pop(last)
    return data


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Everything that defines one training run."""

    name: str = "trial"
    """Human label (not part of the trial key)."""
    variant: str = "baseline"
    """Catalog variant name."""
    catalog: str | None = None
    """A variant catalog YAML of your own (the schema of ablations/variants.yaml; a relative path is taken from
    the file that names it; on a cluster, a path every node sees); None: the catalog shipped with gatelab.
    Not part of the trial key: the variant's definition is."""
    seed: int = 0
    """Seeds init, data order and everything random."""
    model: ModelChoice = field(default_factory=ModelChoice)
    """Preset and overrides."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and LR schedule."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Steps and batch."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    """Spikes and divergence."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoints."""
    precision: str | None = None
    """Lightning's precision: 'bf16-mixed' or '32-true'. None: bf16-mixed on CUDA (as the paper trains), 32-true
    on CPU. Not part of the trial key: like compile, it changes rounding, not the experiment."""
    compile: bool | None = None
    """torch.compile the training step's forward and loss (TorchInductor). None: on with CUDA; off on CPU, where
    compiling a new variant's graph costs more than a short trial gains (`gatelab bench trainer --compile`; the
    figures: docs/benchmarks.md); set true for long CPU trials. Validation, the probes and long-context PPL always
    run eager. Not part of the trial key: it changes rounding, not the experiment."""

    def __post_init__(self) -> None:
        try:
            load_catalog(self.catalog)
        except InvalidValue as err:
            # The catalog is another file: its keys (variants.3.gates) are not paths in this config, so the
            # error is this config's `catalog` field, and the place inside that file goes into the message.
            inside = f"{err.key}: " if err.key else ""
            raise InvalidValue("catalog", f"{inside}{err}") from None
        try:
            variant = self.variant_definition()  # unknown names fail here, with the nearest valid one
        except InvalidValue as err:
            raise err.under("variant") from None
        try:
            model = self.model.resolve()
        except InvalidValue as err:
            raise err.under("model") from None
        checks = {
            "schedule.max_steps": self.schedule.max_steps,
            "schedule.batch_size": self.schedule.batch_size,
            "schedule.grad_accum": self.schedule.grad_accum,
            "schedule.log_every": self.schedule.log_every,
            "eval.every": self.eval.every,
            "eval.batches": self.eval.batches,
            "checkpoint.every": self.checkpoint.every,
            "checkpoint.keep_last": self.checkpoint.keep_last,
        }
        for key, value in checks.items():
            if not isinstance(value, int) or value <= 0:
                raise InvalidValue(key, "expected a positive integer", value=value)
        if not self.optim.lr > 0:
            raise InvalidValue("optim.lr", "expected a positive number", value=self.optim.lr)
        if self.precision not in PRECISIONS:
            raise InvalidValue(
                "precision",
                f"expected one of {[p for p in PRECISIONS if p]} or null (bf16-mixed on CUDA, 32-true on CPU)",
                value=self.precision,
            )
        if self.optim.warmup_steps < 0:
            raise InvalidValue("optim.warmup_steps", "expected >= 0", value=self.optim.warmup_steps)
        try:
            variant.model_config(model)  # the variant's shape change must fit the model
        except InvalidValue as err:
            raise err.under("variant") from None

    def model_config(self) -> ModelConfig:
        """The model as this trial trains it (preset + overrides + the variant's shape change)."""
        base = self.model.resolve()
        return self.variant_definition().model_config(base)

    def precision_on(self, cuda: bool) -> str:
        """The Lightning precision this trial trains in on a machine with (or without) CUDA."""
        return self.precision or ("bf16-mixed" if cuda else "32-true")

    def compiled_on(self, cuda: bool) -> bool:
        """Whether this trial's training step is compiled on a machine with (or without) CUDA."""
        return cuda if self.compile is None else self.compile

    def variant_definition(self) -> Variant:
        """The trial's variant, from its catalog."""
        return get_variant(self.variant, self.catalog)

    @property
    def seq_len(self) -> int:
        return self.schedule.seq_len or self.model.resolve().max_seq_len

    @property
    def divergence_loss(self) -> float:
        return self.stability.divergence_loss or 1.5 * math.log(self.model.resolve().vocab_size)

    @property
    def tokens_per_step(self) -> int:
        return self.schedule.batch_size * self.schedule.grad_accum * self.seq_len


def to_dict(config) -> dict:
    """A (nested) config dataclass as plain data, for YAML, params and hashing."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = (
            to_dict(value)
            if hasattr(value, "__dataclass_fields__")
            else list(value)
            if isinstance(value, tuple)
            else value
        )
    return out


def run_params(config: TrialConfig) -> dict[str, object]:
    """Params a trial's run gets when it is created: every gate axis, the LR and the seed. The compare-runs page's
    parallel-coordinates plot offers only params and metrics, not tags, so the axes are params as well as tags.
    LR and seed use the keys and values of the flattened config the trainer logs (trainer/run.py), so logging
    them here first is the same param, not a second one. Every value is fixed by the trial key, so a resumed
    run logs them again unchanged."""
    # An ungated variant has no gate axes; as params they read "none" (not the UI's "unknown"), so the baseline
    # lines up with the gated variants on every parallel-coordinates axis.
    ungated = {f"gate_{f.name}": "none" for f in fields(GateSpec)}
    return {"optim.lr": config.optim.lr, "seed": config.seed, **ungated, **config.variant_definition().axes}


def run_tags(config: TrialConfig) -> dict[str, str]:
    """Tags of a trial's run: variant, paper reference, seed, LR, preset and every gate axis, so the MLflow UI
    can filter, group and compare runs by them."""
    variant = config.variant_definition()
    return {
        "variant": variant.name,
        "paper_ref": variant.paper_ref,
        "seed": str(config.seed),
        "lr": f"{config.optim.lr:g}",
        "preset": config.model.preset,
        **variant.axes,
    }
