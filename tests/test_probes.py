"""Probe statistics on hand-built tensors with known answers, and on the tiny models."""

import pytest
import torch

from gatelab.trainer.config.catalog import load_catalog
from gatelab.trainer.config.presets import preset
from gatelab.trainer.model.lm import GatedLM
from gatelab.trainer.probes import ProbeRecorder, run_probes

CATALOG = load_catalog()


def causal_uniform(T: int) -> torch.Tensor:
    mask = torch.ones(T, T).tril()
    return (mask / mask.sum(-1, keepdim=True))[None, None].expand(2, 3, T, T)


def all_on_first(T: int) -> torch.Tensor:
    probs = torch.zeros(2, 3, T, T)
    probs[..., 0] = 1.0
    return probs


def test_first_token_attention_and_sink_on_known_maps():
    T = 10
    recorder = ProbeRecorder()
    recorder.attention(0, all_on_first(T))
    recorder.attention(1, causal_uniform(T))
    for layer in (0, 1):
        recorder.hidden(layer, torch.tensor([[[1.0, -7.0 * (layer + 1)]]]))
    recorder.sdpa_output(0, torch.tensor([0.0, 0.005, 0.0005, 1.0]))
    report = recorder.report()
    uniform_share = sum(1 / (i + 1) for i in range(1, T)) / (T - 1)  # queries 1..T-1
    assert report.f_attn_per_layer == pytest.approx([1.0, uniform_share])
    # Uniform: key 0's importance = mean_i 1/(i+1) over i=0..9 = 0.293 < 0.3, so no sink.
    assert report.sink_eps_per_layer == [1.0, 0.0]
    assert report.m_act_per_layer == [7.0, 14.0] and report.m_act == 10.5
    assert report.sdpa_sparsity_1e2 == 0.75 and report.sdpa_sparsity_1e3 == 0.5
    assert report.gate_mean is None and "gate_mean" not in report.to_metrics()


def test_gate_statistics_and_histogram():
    recorder = ProbeRecorder()
    recorder.attention(0, causal_uniform(4))
    recorder.hidden(0, torch.ones(1, 1, 1))
    recorder.sdpa_output(0, torch.ones(3))
    recorder.gate(0, "g1", torch.tensor([0.02, 0.02, 0.52, 0.97]))
    recorder.gate(0, "g2", torch.tensor([-0.2, 1.5]))
    report = recorder.report()
    assert report.gate_mean == pytest.approx((0.02 + 0.02 + 0.52 + 0.97 - 0.2 + 1.5) / 6)
    assert report.gate_frac_below_0_1 == pytest.approx(3 / 6)
    assert report.gate_mean_by_position == pytest.approx({"g1": 0.3825, "g2": 0.65})
    counts = report.gate_hist_counts
    assert counts[0] == 2 and counts[10] == 1 and counts[19] == 1 and counts[20:] == [1, 1]


def test_run_probes_on_tiny_models():
    tokens_BT = torch.randint(0, 256, (2, 32))
    tokens_BT[:, 0] = 256
    torch.manual_seed(0)
    baseline = run_probes(GatedLM(preset("tiny"), CATALOG["baseline"]), [tokens_BT])
    torch.manual_seed(0)
    gated_model = GatedLM(preset("tiny"), CATALOG["g1_elementwise_sigmoid"])
    gated = run_probes(gated_model, [tokens_BT, tokens_BT])
    assert len(baseline.f_attn_per_layer) == 2 and baseline.gate_mean is None
    assert 0 < baseline.f_attn < 1 and baseline.m_act > 0
    # At init the gate's projection is small, so scores sit near sigmoid(0) = 0.5 (docs/paper.md §1).
    assert gated.gate_mean == pytest.approx(0.5, abs=0.05)
    assert sum(gated.gate_hist_counts) == 2 * 2 * 2 * 32 * 4 * 8  # batches*B*layers*T*H*d
    assert gated_model.training  # run_probes restores the mode
