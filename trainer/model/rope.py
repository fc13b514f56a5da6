"""Rotary position embeddings, with YaRN scaling for long-context evaluation (Table 5, §4.4; docs/paper.md §7).

YaRN follows Peng et al. 2023 as implemented in HF `_compute_yarn_parameters`: NTK-by-parts blend of
interpolated (theta/s) and extrapolated (theta) frequencies with a linear ramp between the correction
dims of beta_fast=32 and beta_slow=1 rotations, and attention temperature 0.1*ln(s)+1 multiplied into
cos/sin (so the logits scale by its square). With s = 1 it is exactly plain RoPE.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _correction_dim(num_rotations: float, dim: int, base: float, original_len: int) -> float:
    # The rotary dim index whose wavelength makes `num_rotations` turns over the original context.
    return (dim * math.log(original_len / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_inv_freq(
    dim: int, base: float, factor: float, original_len: int, beta_fast: float = 32.0, beta_slow: float = 1.0
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (dim/2,) and the attention temperature for YaRN factor `factor`."""
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    extrapolation = 1.0 / pos_freqs
    if factor == 1.0:
        return extrapolation.float(), 1.0
    interpolation = 1.0 / (factor * pos_freqs)
    low = max(math.floor(_correction_dim(beta_fast, dim, base, original_len)), 0)
    high = min(math.ceil(_correction_dim(beta_slow, dim, base, original_len)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp, as HF does
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1.0 - ramp
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq.float(), 0.1 * math.log(factor) + 1.0


class Rotary(nn.Module):
    """Caches cos/sin tables per (length, YaRN factor, device, dtype)."""

    def __init__(self, head_dim: int, base: float, original_len: int) -> None:
        super().__init__()
        self.head_dim, self.base, self.original_len = head_dim, base, original_len
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def cos_sin(
        self, seq_len: int, factor: float, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (T, 1, head_dim): broadcast over (B, T, H, head_dim)."""
        key = (seq_len, factor, device, dtype)
        if key not in self._cache:
            inv_freq, temperature = yarn_inv_freq(self.head_dim, self.base, factor, self.original_len)
            angles_TF = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
            angles_TD = torch.cat([angles_TF, angles_TF], dim=-1)
            self._cache[key] = (
                (angles_TD.cos() * temperature)[:, None, :].to(device, dtype),
                (angles_TD.sin() * temperature)[:, None, :].to(device, dtype),
            )
        return self._cache[key]


def apply_rotary(x_BTHd: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + d/2) — the HF/Qwen 'rotate_half' layout."""
    first, second = x_BTHd.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return x_BTHd * cos + rotated * sin
