"""Grouped-query attention with QK-norm, RoPE/YaRN and gates at G1-G5 (paper §2.2, Table 1).

Order of operations follows the authors' reference code (docs/paper.md §1): projections -> G2/G3/G4 gates (right
after their projection; the paper does not say whether before or after QK-norm/RoPE, we gate the raw
projection) -> QK-norm -> RoPE -> causal SDPA -> G1 gate / SDPA control -> o_proj -> G5 gate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.trainer.config.catalog import Variant
from gatelab.trainer.config.gate_spec import Position
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.model.gates import Gate, SdpaOutputTransform
from gatelab.trainer.model.rope import apply_rotary


def eager_causal_attention(
    q_BHTd: torch.Tensor, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention in fp32 that also returns the probabilities (B, H, T, T) for the probes."""
    groups = q_BHTd.shape[1] // k_BHTd.shape[1]
    k_BHTd = k_BHTd.repeat_interleave(groups, dim=1)  # query head h reads kv head h // groups, as SDPA
    v_BHTd = v_BHTd.repeat_interleave(groups, dim=1)
    T = q_BHTd.shape[2]
    logits = (q_BHTd.float() @ k_BHTd.float().transpose(-1, -2)) / math.sqrt(q_BHTd.shape[-1])
    future = torch.ones(T, T, dtype=torch.bool, device=q_BHTd.device).triu(1)
    probs_BHTT = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
    return (probs_BHTT @ v_BHTd.float()).to(q_BHTd.dtype), probs_BHTT


class Attention(nn.Module):
    """One attention layer; `recorder` switches to the eager kernel and captures probe statistics."""

    def __init__(self, cfg: ModelConfig, variant: Variant) -> None:
        super().__init__()
        D, Hq, Hkv, d = cfg.d_model, cfg.n_q_heads, cfg.n_kv_heads, cfg.head_dim
        self.n_q_heads, self.n_kv_heads, self.head_dim = Hq, Hkv, d
        self.q_proj = nn.Linear(D, Hq * d, bias=False)
        self.k_proj = nn.Linear(D, Hkv * d, bias=False)
        self.v_proj = nn.Linear(D, Hkv * d, bias=False)
        self.o_proj = nn.Linear(Hq * d, D, bias=False)
        self.q_norm = nn.RMSNorm(d, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(d, eps=cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        gated_shape = {
            Position.G1: (Hq, d),
            Position.G2: (Hkv, d),
            Position.G3: (Hkv, d),
            Position.G4: (Hq, d),
            Position.G5: (1, D),
        }
        self.gates = nn.ModuleDict()
        for spec in variant.gates:  # at most one per position: Variant checks its rules when it is loaded
            self.gates[spec.position.value] = Gate(spec, D, *gated_shape[spec.position])
        self.sdpa_transform = SdpaOutputTransform(variant.sdpa_transform, Hq, d, cfg.norm_eps)

    def _gate(self, position: Position, y_BTHd, x_BTD, recorder, layer: int):
        gate = self.gates[position.value] if position.value in self.gates else None
        if gate is None:
            return y_BTHd
        record = (lambda score: recorder.gate(layer, position.value, score)) if recorder else None
        return gate(y_BTHd, x_BTD, record)

    def forward(
        self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, recorder=None, layer: int = 0
    ) -> torch.Tensor:
        B, T, D = x_BTD.shape
        q_BTHd = self._gate(
            Position.G4, self.q_proj(x_BTD).view(B, T, self.n_q_heads, self.head_dim), x_BTD, recorder, layer
        )
        k_BTHd = self._gate(
            Position.G3, self.k_proj(x_BTD).view(B, T, self.n_kv_heads, self.head_dim), x_BTD, recorder, layer
        )
        v_BTHd = self._gate(
            Position.G2, self.v_proj(x_BTD).view(B, T, self.n_kv_heads, self.head_dim), x_BTD, recorder, layer
        )
        q_BTHd = apply_rotary(self.q_norm(q_BTHd), cos, sin)
        k_BTHd = apply_rotary(self.k_norm(k_BTHd), cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q_BTHd, k_BTHd, v_BTHd))  # (B, H, T, d)
        if recorder is None:
            y_BHTd = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            y_BHTd, probs_BHTT = eager_causal_attention(q, k, v)
            recorder.attention(layer, probs_BHTT)
        y_BTHd = y_BHTd.transpose(1, 2)
        y_BTHd = self.sdpa_transform(self._gate(Position.G1, y_BTHd, x_BTD, recorder, layer))
        if recorder is not None:
            recorder.sdpa_output(layer, y_BTHd)
        out_BTD = self.o_proj(y_BTHd.reshape(B, T, self.n_q_heads * self.head_dim))
        return self._gate(Position.G5, out_BTD.view(B, T, 1, D), x_BTD, recorder, layer).view(B, T, D)
