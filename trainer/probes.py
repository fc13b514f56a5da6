"""Analysis probes of the paper's §4 on evaluation batches, through the eager attention path.

Choices the paper leaves open (docs/paper.md §6), stated here:
- F-Attn: attention probability on key 0, averaged over batch, heads and query positions 1..T-1
  (query 0 is excluded: it can only attend to itself, so it would add a constant 1).
- Sink_eps (Gu et al. 2024, eps=0.3): importance of key 0 = mean over queries 0..T'-1 (T' = min(T, 64),
  their prompt length) of its attention; a (sample, layer, head) counts as a sink when that exceeds eps.
  Reported as a fraction in [0, 1] (the paper prints a percentage).
- M-Act: max |h| of each block's output hidden state (absolute value), mean over layers (Table 4).
- Gate scores: every act(XW) value of every gate in every layer; mean, fraction below 0.1, histogram
  on [0, 1] in 20 bins with under/overflow counts (SiLU and identity scores are unbounded).
- Output sparsity: fraction of the (gated) SDPA output with |y| < 1e-2 and < 1e-3 (Fig. 5).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch

from gatelab.trainer.config.metric_names import (
    F_ATTN,
    GATE_FRAC_BELOW_0_1,
    GATE_MEAN,
    M_ACT,
    SDPA_ABS_MEAN,
    SDPA_SPARSITY_1E2,
    SDPA_SPARSITY_1E3,
    SINK_EPS,
    at_position,
    per_layer,
)
from gatelab.trainer.config.metric_names import GATE_HIST_BINS as HIST_BINS

SINK_IMPORTANCE_EPS = 0.3
SINK_PROMPT_LEN = 64
GATE_LOW = 0.1


@dataclass
class ProbeReport:
    """What one probe pass measured; `to_metrics` flattens it for a tracker."""

    f_attn_per_layer: list[float]
    """First-token attention share per layer."""
    sink_eps_per_layer: list[float]
    """Share of (sample, head) pairs whose first-token importance exceeds eps, per layer."""
    m_act_per_layer: list[float]
    """Max |hidden| of each layer's output."""
    sdpa_sparsity_1e2: float
    """Fraction of SDPA-output (after any G1 gate) entries with |y| < 1e-2."""
    sdpa_sparsity_1e3: float
    """Same below 1e-3."""
    sdpa_abs_mean: float
    """Mean |y| of the SDPA output after any G1 gate (App. A.3: 0.71 before vs 0.05 after the gate)."""
    gate_mean: float | None = None
    """Mean gate score over all gates, layers, positions and elements (None for ungated variants)."""
    gate_frac_below_0_1: float | None = None
    """Fraction of gate scores below 0.1."""
    gate_mean_by_position: dict[str, float] = field(default_factory=dict)
    """Mean gate score per gate position (g1..g5)."""
    gate_hist_counts: list[int] = field(default_factory=list)
    """Histogram counts of gate scores on [0, 1], plus [underflow, overflow] at the end."""

    @property
    def f_attn(self) -> float:
        return sum(self.f_attn_per_layer) / len(self.f_attn_per_layer)

    @property
    def sink_eps(self) -> float:
        return sum(self.sink_eps_per_layer) / len(self.sink_eps_per_layer)

    @property
    def m_act(self) -> float:
        return sum(self.m_act_per_layer) / len(self.m_act_per_layer)

    def to_metrics(self) -> dict[str, float]:
        out = {
            F_ATTN: self.f_attn,
            SINK_EPS: self.sink_eps,
            M_ACT: self.m_act,
            SDPA_SPARSITY_1E2: self.sdpa_sparsity_1e2,
            SDPA_SPARSITY_1E3: self.sdpa_sparsity_1e3,
            SDPA_ABS_MEAN: self.sdpa_abs_mean,
        }
        for layer, (f, s, m) in enumerate(zip(self.f_attn_per_layer, self.sink_eps_per_layer, self.m_act_per_layer)):
            out.update({per_layer(F_ATTN, layer): f, per_layer(SINK_EPS, layer): s, per_layer(M_ACT, layer): m})
        if self.gate_mean is not None:
            out[GATE_MEAN] = self.gate_mean
            out[GATE_FRAC_BELOW_0_1] = self.gate_frac_below_0_1
            out.update({at_position(GATE_MEAN, pos): v for pos, v in self.gate_mean_by_position.items()})
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), F_ATTN: self.f_attn, SINK_EPS: self.sink_eps, M_ACT: self.m_act}


class ProbeRecorder:
    """Receives tensors from the model's eager path and keeps running sums, never whole maps."""

    def __init__(self) -> None:
        self.first_token_sum = defaultdict(float)
        self.first_token_count = defaultdict(int)
        self.sink_hits = defaultdict(float)
        self.sink_count = defaultdict(int)
        self.hidden_max = defaultdict(float)
        self.gate_sum = defaultdict(float)
        self.gate_count = defaultdict(int)
        self.gate_low = 0
        self.gate_hist = torch.zeros(HIST_BINS + 2, dtype=torch.long)
        self.sdpa_small = {1e-2: 0, 1e-3: 0}
        self.sdpa_abs_sum = 0.0
        self.sdpa_count = 0

    def attention(self, layer: int, probs_BHTT: torch.Tensor) -> None:
        to_first_BHT = probs_BHTT[..., 0].float()  # attention each query gives key 0
        self.first_token_sum[layer] += to_first_BHT[..., 1:].sum().item()
        self.first_token_count[layer] += to_first_BHT[..., 1:].numel()
        importance_BH = to_first_BHT[..., :SINK_PROMPT_LEN].mean(dim=-1)
        self.sink_hits[layer] += (importance_BH > SINK_IMPORTANCE_EPS).sum().item()
        self.sink_count[layer] += importance_BH.numel()

    def gate(self, layer: int, position: str, score: torch.Tensor) -> None:
        values = score.detach().float().flatten()
        self.gate_sum[position] += values.sum().item()
        self.gate_count[position] += values.numel()
        self.gate_low += (values < GATE_LOW).sum().item()
        # counted where the scores are, kept on the CPU with the other running sums
        self.gate_hist[:HIST_BINS] += torch.histc(values, bins=HIST_BINS, min=0.0, max=1.0).long().cpu()
        self.gate_hist[HIST_BINS] += (values < 0).sum().item()
        self.gate_hist[HIST_BINS + 1] += (values > 1).sum().item()

    def sdpa_output(self, layer: int, y_BTHd: torch.Tensor) -> None:
        magnitude = y_BTHd.detach().float().abs()
        for threshold in self.sdpa_small:
            self.sdpa_small[threshold] += (magnitude < threshold).sum().item()
        self.sdpa_abs_sum += magnitude.sum().item()
        self.sdpa_count += magnitude.numel()

    def hidden(self, layer: int, h_BTD: torch.Tensor) -> None:
        self.hidden_max[layer] = max(self.hidden_max[layer], h_BTD.detach().abs().max().item())

    def report(self) -> ProbeReport:
        layers = sorted(self.first_token_count)
        total_gate = sum(self.gate_count.values())
        return ProbeReport(
            f_attn_per_layer=[self.first_token_sum[layer] / self.first_token_count[layer] for layer in layers],
            sink_eps_per_layer=[self.sink_hits[layer] / self.sink_count[layer] for layer in layers],
            m_act_per_layer=[self.hidden_max[layer] for layer in layers],
            sdpa_sparsity_1e2=self.sdpa_small[1e-2] / self.sdpa_count,
            sdpa_sparsity_1e3=self.sdpa_small[1e-3] / self.sdpa_count,
            sdpa_abs_mean=self.sdpa_abs_sum / self.sdpa_count,
            gate_mean=sum(self.gate_sum.values()) / total_gate if total_gate else None,
            gate_frac_below_0_1=self.gate_low / total_gate if total_gate else None,
            gate_mean_by_position={p: self.gate_sum[p] / self.gate_count[p] for p in sorted(self.gate_count)},
            gate_hist_counts=self.gate_hist.tolist() if total_gate else [],
        )


@torch.no_grad()
def run_probes(model: torch.nn.Module, token_batches: Iterable[torch.Tensor]) -> ProbeReport:
    """One probe pass over evaluation batches of token ids (B, T), each starting with BOS."""
    was_training = model.training
    model.eval()
    recorder = ProbeRecorder()
    for tokens_BT in token_batches:
        model(tokens_BT, recorder=recorder)
    model.train(was_training)
    return recorder.report()
