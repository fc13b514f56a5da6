"""The one gate implementation, driven by a GateSpec (paper §2.2, Eq. 5), and the SDPA-output controls.

The gate sees only the tensor it gates, viewed as (B, T, H, w), and the block's pre-norm hidden state X
(footnote 1), so it is independent of the attention kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatelab.trainer.config.catalog import SdpaTransform
from gatelab.trainer.config.gate_spec import Activation, Combine, GateInput, GateSpec, Granularity, Sharing


def gate_activation(kind: Activation, logits: torch.Tensor) -> torch.Tensor:
    if kind is Activation.SIGMOID:
        return torch.sigmoid(logits)
    if kind is Activation.NS_SIGMOID:
        return 0.5 + 0.5 * torch.sigmoid(logits)  # Eq. 9: range [0.5, 1], non-linear but not sparse
    if kind is Activation.SILU:
        return F.silu(logits)
    return logits


class Gate(nn.Module):
    """Y' = Y * act(score) or Y + act(score), score from X W_theta or from a learned parameter."""

    def __init__(self, spec: GateSpec, d_model: int, n_heads: int, head_dim: int) -> None:
        """n_heads, head_dim describe the gated tensor: (Hq, d) at G1/G4, (Hkv, d) at G2/G3, (1, D) at G5."""
        super().__init__()
        self.spec = spec
        self.n_heads = n_heads
        self.score_width = 1 if spec.granularity is Granularity.HEADWISE else head_dim
        self.enabled = True
        if spec.input is GateInput.HIDDEN:
            # Head-shared still projects to every head and averages (§3.2.1), so it costs the same
            # parameters as elementwise (Table 1: 201M for both).
            self.proj = nn.Linear(d_model, n_heads * self.score_width, bias=False)
        else:
            # §4.2: learnable, zero-initialised, so it starts at act(0) for every token.
            self.score_param_Hw = nn.Parameter(torch.zeros(n_heads, self.score_width))

    def scores(self, x_BTD: torch.Tensor) -> torch.Tensor:
        """act(scores), broadcastable to (B, T, H, head_dim)."""
        if self.spec.input is GateInput.HIDDEN:
            B, T, _ = x_BTD.shape
            logits = self.proj(x_BTD).view(B, T, self.n_heads, self.score_width)  # (B, T, H, w)
        else:
            logits = self.score_param_Hw[None, None]  # (1, 1, H, w)
        if self.spec.sharing is Sharing.HEAD_SHARED:
            logits = logits.mean(dim=2, keepdim=True)  # average before the activation; the paper is silent
        return gate_activation(self.spec.activation, logits)

    def forward(self, y_BTHd: torch.Tensor, x_BTD: torch.Tensor, record=None) -> torch.Tensor:
        if not self.enabled:
            return y_BTHd
        score = self.scores(x_BTD)
        if record is not None:
            record(score)
        if self.spec.combine is Combine.MULTIPLICATIVE:
            return y_BTHd * score
        return y_BTHd + score


class SdpaOutputTransform(nn.Module):
    """Controls of Table 3 that are not gates: per-head RMSNorm (row 5) or parameter-free SiLU (row 6)."""

    def __init__(self, kind: SdpaTransform, n_heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.kind, self.head_dim, self.eps = kind, head_dim, eps
        if kind is SdpaTransform.RMSNORM:
            # GroupNorm-like: each head normalised on its own, with a per-channel scale.
            self.weight_Hd = nn.Parameter(torch.ones(n_heads, head_dim))

    def forward(self, y_BTHd: torch.Tensor) -> torch.Tensor:
        if self.kind is SdpaTransform.RMSNORM:
            return F.rms_norm(y_BTHd, (self.head_dim,), eps=self.eps) * self.weight_Hd
        if self.kind is SdpaTransform.SILU:
            return F.silu(y_BTHd)
        return y_BTHd
