"""Feed-forward blocks: SwiGLU, and a fine-grained top-k softmax Mixture-of-Experts (Table 7; docs/paper.md §8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.trainer.config.presets import ModelConfig


class SwiGLU(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), HF naming."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def load_balance_loss(probs_NE: torch.Tensor, chosen_NK: torch.Tensor) -> torch.Tensor:
    """Switch-style E * sum_e f_e * P_e over the whole batch (global-batch LBL, docs/paper.md §8).

    f_e: share of routing slots sent to expert e; P_e: mean router probability of e. A uniform router
    gives exactly 1; any router concentrating load scores above it (a dip of <1% below 1 is possible
    when the hard top-k shares and the soft probabilities disagree).
    """
    n_experts = probs_NE.shape[-1]
    slots_E = torch.bincount(chosen_NK.flatten(), minlength=n_experts).to(probs_NE.dtype)
    share_E = slots_E / chosen_NK.numel()
    return n_experts * (share_E * probs_NE.mean(dim=0)).sum()


def router_z_loss(logits_NE: torch.Tensor) -> torch.Tensor:
    """ST-MoE z-loss: mean squared log-partition of the router logits."""
    return torch.logsumexp(logits_NE, dim=-1).square().mean()


class MoE(nn.Module):
    """Softmax router, top-k experts, weights renormalised over the chosen k (Qwen-MoE style)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.top_k = cfg.top_k
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.ffn_dim) for _ in range(cfg.n_experts))

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        logits_NE = self.router(x_ND).float()
        probs_NE = logits_NE.softmax(dim=-1)
        weight_NK, chosen_NK = probs_NE.topk(self.top_k, dim=-1)
        weight_NK = weight_NK / weight_NK.sum(dim=-1, keepdim=True)
        out_ND = torch.zeros_like(x_ND)
        for e, expert in enumerate(self.experts):
            token_idx, slot_idx = torch.where(chosen_NK == e)
            if token_idx.numel():
                contribution = expert(x_ND[token_idx]) * weight_NK[token_idx, slot_idx, None].to(x_ND.dtype)
                out_ND.index_add_(0, token_idx, contribution)
        aux = {"lb_loss": load_balance_loss(probs_NE, chosen_NK), "z_loss": router_z_loss(logits_NE)}
        return out_ND.view(B, T, D), aux
