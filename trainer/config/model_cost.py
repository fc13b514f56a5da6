"""Closed-form parameter and FLOP counts per (preset, variant). Pure Python: no torch, so `gatelab
variants --model paper-moe-15a2b` works without building a 15B-parameter model.

The counts must equal the built model's (a test compares them on the tiny presets) and reproduce the
paper's Table 1 "Added Param" column at the 15A2B preset (e.g. G1 elementwise = d_model*q*d_k*24 = 201M).
"""

from __future__ import annotations

from dataclasses import dataclass

from gatelab.trainer.config.catalog import SdpaTransform, Variant
from gatelab.trainer.config.gate_spec import GateInput, GateSpec, Granularity, Position, SpecError
from gatelab.trainer.config.presets import ModelConfig


def _gated_shape(cfg: ModelConfig, position: Position) -> tuple[int, int]:
    """(heads, width) of the tensor a gate at `position` multiplies (Table 1 'Score shape')."""
    return {
        Position.G1: (cfg.n_q_heads, cfg.head_dim),
        Position.G2: (cfg.n_kv_heads, cfg.head_dim),
        Position.G3: (cfg.n_kv_heads, cfg.head_dim),
        Position.G4: (cfg.n_q_heads, cfg.head_dim),
        Position.G5: (1, cfg.d_model),
    }[position]


def gate_params(cfg: ModelConfig, spec: GateSpec) -> int:
    """Parameters of one gate in one layer."""
    heads, width = _gated_shape(cfg, spec.position)
    scores = heads * (1 if spec.granularity is Granularity.HEADWISE else width)
    return scores if spec.input is GateInput.INDEPENDENT else cfg.d_model * scores


def _layer_params(cfg: ModelConfig, variant: Variant) -> int:
    D, d = cfg.d_model, cfg.head_dim
    attention = D * d * (2 * cfg.n_q_heads + 2 * cfg.n_kv_heads)  # q, o and k, v projections
    qk_norm = 2 * d if cfg.qk_norm else 0
    ffn = 3 * D * cfg.ffn_dim
    ffn = cfg.n_experts * ffn + D * cfg.n_experts if cfg.is_moe else ffn  # experts + router
    gates = sum(gate_params(cfg, spec) for spec in variant.gates)
    transform = cfg.n_q_heads * d if variant.sdpa_transform is SdpaTransform.RMSNORM else 0
    return 2 * D + attention + qk_norm + ffn + gates + transform


def total_params(base: ModelConfig, variant: Variant) -> int:
    """All parameters of GatedLM(base, variant), counted once when embeddings are tied."""
    cfg = variant.model_config(base)
    embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return embeddings + cfg.d_model + cfg.n_layers * _layer_params(cfg, variant)


def non_embedding_params(base: ModelConfig, variant: Variant) -> int:
    """Parameters without the token embedding (and its untied output copy): the N of scaling laws (Kaplan et al.
    2020), which at a ladder's small widths would otherwise be mostly a lookup table."""
    cfg = variant.model_config(base)
    return total_params(base, variant) - cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)


def extra_params(base: ModelConfig, variant: Variant, baseline: Variant) -> int:
    """Parameters the variant adds over the baseline at this preset (Table 1 'Added Param')."""
    return total_params(base, variant) - total_params(base, baseline)


def added_params(base: ModelConfig, variant: Variant, catalog: dict[str, Variant]) -> int | None:
    """extra_params over the catalog's baseline; None where it has no meaning: the variant's shape change does
    not fit the preset (more_experts on a dense one), or the catalog (a user's) has no baseline."""
    if "baseline" not in catalog:
        return None
    try:
        return extra_params(base, variant, catalog["baseline"])
    except SpecError:
        return None


@dataclass(frozen=True)
class StepFlops:
    """Forward FLOPs per token of the matmuls, split so a benchmark can state the gate's share."""

    total: float
    """All matmul FLOPs per token (projections, attention, FFN, LM head, gates)."""
    gates: float
    """The gates' own projections."""

    @property
    def gate_share(self) -> float:
        return self.gates / self.total


def forward_flops_per_token(base: ModelConfig, variant: Variant, seq_len: int) -> StepFlops:
    """2 FLOPs per multiply-add; attention scores and values average over the causal triangle (T/2)."""
    cfg = variant.model_config(base)
    D, d = cfg.d_model, cfg.head_dim
    projections = 2 * D * d * (2 * cfg.n_q_heads + 2 * cfg.n_kv_heads)
    attention = 2 * 2 * cfg.n_q_heads * d * (seq_len / 2)
    active_experts = cfg.top_k if cfg.is_moe else 1
    ffn = 2 * 3 * D * cfg.ffn_dim * active_experts + (2 * D * cfg.n_experts if cfg.is_moe else 0)
    gates = 2 * sum(gate_params(cfg, s) for s in variant.gates if s.input is GateInput.HIDDEN)
    per_layer = projections + attention + ffn + gates
    total = cfg.n_layers * per_layer + 2 * D * cfg.vocab_size
    return StepFlops(total=float(total), gates=float(cfg.n_layers * gates))


def format_params(count: int | None) -> str:
    """A parameter count as tables print it: '201M', '12,288', or 'n/a' when it is not known."""
    if count is None:
        return "n/a"
    return f"{count / 1e6:.3g}M" if abs(count) >= 1e5 else f"{count:,}"
