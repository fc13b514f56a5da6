"""The names of the metrics a trial logs, and the one format (and parser) of the names built from parameters.

Torch-free: the trainer logs under these names, the grid driver prints and searches on them, the ledger and the
reports read them back.
"""

from __future__ import annotations

import re

# histories, logged along training
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_PPL = "val_ppl"
STEP = "step"  # the latest step a trial reached: the progress lines read it
LR = "lr"  # the scheduled learning rate at the step
GRAD_NORM = "grad_norm"  # the gradient's norm before clipping
TOKENS_SEEN = "tokens_seen"
TOKENS_PER_S = "tokens_per_s"  # throughput since the previous logged step

# the summary, logged once at the end (a diverged trial has DIVERGED_AT_STEP and no probes)
FINAL_VAL_LOSS = "final_val_loss"
FINAL_VAL_PPL = "final_val_ppl"
SPIKE_COUNT = "spike_count"
DIVERGED_AT_STEP = "diverged_at_step"

# the probes' summary, averaged over layers (trainer/probes.py; the paper's Table 4 and §5)
F_ATTN = "f_attn"  # attention mass on the first token: the attention sink
SINK_EPS = "sink_eps"  # the sink by the attention-score criterion
M_ACT = "m_act"  # the largest hidden-state activation: massive activations
GATE_MEAN = "gate_mean"  # a gated variant's mean gate score (sparsity)
GATE_FRAC_BELOW_0_1 = "gate_frac_below_0_1"  # the share of gate scores under 0.1 (the paper's Fig. 3)
SDPA_SPARSITY_1E2 = "sdpa_sparsity_1e2"  # the share of SDPA outputs under 1e-2 in magnitude
SDPA_SPARSITY_1E3 = "sdpa_sparsity_1e3"
SDPA_ABS_MEAN = "sdpa_abs_mean"

# loss spikes (trainer/spikes.py)
SPIKE_RATIO = "spike_ratio"  # a history: a spike's loss over its reference, at the step it happened
MAX_SPIKE_RATIO = "max_spike_ratio"  # the summary: the largest of them
MAX_STEPS_TO_RECOVER = "max_steps_to_recover"  # the summary: the slowest recovery from a spike
UNRECOVERED_SPIKES = "unrecovered_spikes"  # the summary: spikes the loss never came back from


def per_layer(metric: str, layer: int) -> str:
    """The name of a probe's value at one layer, e.g. per_layer(F_ATTN, 3) = 'f_attn_layer_3'."""
    return f"{metric}_layer_{int(layer)}"


def at_position(metric: str, position: str) -> str:
    """The name of a gate figure at one gate position, e.g. at_position(GATE_MEAN, 'g1') = 'gate_mean_g1'."""
    return f"{metric}_{position}"


# Gate scores in [0, 1] are histogrammed in this many bins, plus an underflow and an overflow count (SiLU and
# identity scores are unbounded).
GATE_HIST_BINS = 20

# Long-context perplexity (the paper's Table 5): at `factor` x the training length, plain RoPE or YaRN.
ROPE_MODES = ("rope", "yarn")
_LONG_PPL = re.compile(r"^long_ppl_x(\d+)_(rope|yarn)$")


def long_ppl(factor: int, mode: str) -> str:
    """The metric name of the validation PPL at factor x the training length under `mode` (rope | yarn)."""
    if mode not in ROPE_MODES:
        raise ValueError(f"mode={mode!r}: expected one of {ROPE_MODES}")
    return f"long_ppl_x{int(factor)}_{mode}"


def parse_long_ppl(name: str) -> tuple[int, str] | None:
    """(factor, mode) of a long-context metric name; None for any other metric."""
    match = _LONG_PPL.match(name)
    return (int(match.group(1)), match.group(2)) if match else None
