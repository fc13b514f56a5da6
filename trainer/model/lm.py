"""The decoder-only LM, written once: embedding -> pre-norm blocks -> final norm -> LM head.

Each block: x + attn(norm(x)); then x + ffn(norm(x)). The attention's gates read the same pre-norm
hidden state that feeds q/k/v (paper footnote 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.trainer.config.catalog import Variant
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.model.attention import Attention
from gatelab.trainer.model.ffn import MoE, SwiGLU
from gatelab.trainer.model.gates import Gate
from gatelab.trainer.model.rope import Rotary


@dataclass
class LMOutput:
    logits_BTV: torch.Tensor
    """Next-token logits."""
    aux_losses: dict[str, torch.Tensor]
    """MoE auxiliary losses averaged over layers (empty for dense models)."""


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, variant: Variant) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, variant)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = MoE(cfg) if cfg.is_moe else SwiGLU(cfg.d_model, cfg.ffn_dim)

    def forward(self, h_BTD, cos, sin, recorder=None, layer: int = 0):
        h_BTD = h_BTD + self.attn(self.attn_norm(h_BTD), cos, sin, recorder, layer)
        ffn_out = self.ffn(self.ffn_norm(h_BTD))
        ffn_out, aux = ffn_out if isinstance(ffn_out, tuple) else (ffn_out, {})
        return h_BTD + ffn_out, aux


class GatedLM(nn.Module):
    """The LM for one (preset, variant) pair; `cfg` is the preset after the variant's shape change."""

    def __init__(self, base: ModelConfig, variant: Variant) -> None:
        super().__init__()
        cfg = variant.model_config(base)
        self.cfg, self.variant = cfg, variant
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, variant) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.max_seq_len)
        self.apply(self._init_weights)
        # GPT-2 style: shrink the residual-branch outputs with depth so the stream starts at unit scale.
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def gates(self) -> list[Gate]:
        return [m for m in self.modules() if isinstance(m, Gate)]

    def set_gates_enabled(self, enabled: bool) -> None:
        """Turn every gate into the identity (for ablating a trained gate, and the equivalence test)."""
        for gate in self.gates():
            gate.enabled = enabled

    def forward(self, tokens_BT: torch.Tensor, *, yarn_factor: float = 1.0, recorder=None) -> LMOutput:
        """yarn_factor > 1 evaluates beyond the training length with YaRN; recorder selects the eager
        attention path and collects probe statistics."""
        T = tokens_BT.shape[1]
        h_BTD = self.embed_tokens(tokens_BT)
        cos, sin = self.rotary.cos_sin(T, yarn_factor, h_BTD.device, h_BTD.dtype)
        aux_sums: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            h_BTD, aux = layer(h_BTD, cos, sin, recorder, index)
            if recorder is not None:
                recorder.hidden(index, h_BTD)
            for key, value in aux.items():
                aux_sums[key] = aux_sums.get(key, 0.0) + value
        logits_BTV = self.lm_head(self.norm(h_BTD))
        return LMOutput(logits_BTV, {k: v / len(self.layers) for k, v in aux_sums.items()})

    def loss(self, tokens_BT: torch.Tensor, targets_BT: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Training objective: cross-entropy plus weighted MoE auxiliary losses; returns (total, parts)."""
        out = self(tokens_BT)
        ce = F.cross_entropy(out.logits_BTV.float().flatten(0, 1), targets_BT.flatten())
        total = ce
        if out.aux_losses:
            total = (
                total
                + self.cfg.lb_loss_coef * out.aux_losses["lb_loss"]
                + self.cfg.z_loss_coef * out.aux_losses["z_loss"]
            )
        return total, {"ce_loss": ce.detach(), **{k: v.detach() for k, v in out.aux_losses.items()}}
