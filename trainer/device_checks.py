"""Checks of the path trials take on a GPU — bf16-mixed training, the probes' eager attention path against
the fused one, exact resume, compiled training — runnable on any device.

The tests call them (tests/test_bf16_and_cuda.py: on the CPU in bf16-mixed, and marked `gpu` on CUDA), and so
does scripts/gpu_check.py on a GPU machine that may have no pytest. Each raises AssertionError on a failure
and returns what it measured.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.metric_names import F_ATTN, FINAL_VAL_LOSS, GATE_MEAN, M_ACT, SINK_EPS, TRAIN_LOSS
from gatelab.trainer.config.outcome import Status
from gatelab.trainer.config.presets import preset
from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ModelChoice, ScheduleConfig, TrialConfig
from gatelab.trainer.config.trial_folder import TrialFolder
from gatelab.trainer.model.lm import GatedLM
from gatelab.trainer.probes import ProbeRecorder
from gatelab.trainer.run import run_trial
from gatelab.trainer.tracker import InMemoryTracker

# One variant per gate family: position (G1-G5), granularity, sharing, combine, activation, input, the
# controls (Table 3) and the parameter-matched shapes (Table 1 rows 2-4, an MoE one included).
FAMILIES = (
    "baseline",
    "g1_elementwise_sigmoid",
    "g1_headwise_sigmoid",
    "g1_shared_sigmoid",
    "g2_elementwise_sigmoid",
    "g3_elementwise_sigmoid",
    "g4_elementwise_sigmoid",
    "g5_elementwise_sigmoid",
    "g1_additive_silu",
    "g1_elementwise_silu",
    "g1_elementwise_ns_sigmoid",
    "g1_input_independent",
    "g1_rmsnorm",
    "g1_sdpa_silu",
    "g1_g2_headwise_sigmoid",
    "more_kv_heads",
    "more_experts",
)
# bf16 keeps 8 bits of mantissa; the fused and eager kernels round differently. How differently is measured, not
# guessed: the eager path may differ from the fused one by at most this many times what bf16 itself moves the
# fused path's logits away from fp32 (about one bf16 step at the logits' scale).
BF16_ROUNDING_MULTIPLE = 4
# A resumed run repeats the uninterrupted one's arithmetic: bitwise on the CPU; on CUDA some backward kernels
# (SDPA, index_add in MoE routing) accumulate in a nondeterministic order, so the curves agree to rounding.
RESUME_TOLERANCE = {"cpu": 1e-5, "cuda": 2e-2}


def tiny_preset_for(variant: str) -> str:
    """The tiny dense preset, or its MoE twin for variants that add experts."""
    return "tiny-moe" if get_variant(variant).shape_change.add_experts else "tiny"


def short_trial(variant: str, **changes) -> TrialConfig:
    """Eight bf16-mixed steps of a tiny model, evaluated and checkpointed every four; eager (a compile per
    family would cost more than the check; cuda_defaults_resume checks the compiled path)."""
    base = dict(
        variant=variant,
        precision="bf16-mixed",
        compile=False,
        model=ModelChoice(preset=tiny_preset_for(variant)),
        schedule=ScheduleConfig(max_steps=8, batch_size=4, log_every=1),
        eval=EvalConfig(every=4, batches=1, long_context_factors=(1,)),
        checkpoint=CheckpointConfig(every=4, keep_last=2),
    )
    return TrialConfig(**{**base, **changes})


def trains_and_probes(variant: str, work: Path) -> dict:
    """A few bf16-mixed steps: every loss finite, the run finished, its probes finite."""
    tracker = InMemoryTracker()
    result = run_trial(short_trial(variant), tracker, work / "trial", work / "cache")
    assert result.status == Status.FINISHED, result.status
    assert tracker.tags["precision"] == "bf16-mixed"
    losses = [value for _, value in tracker.metrics[TRAIN_LOSS]]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses), losses
    for key in (FINAL_VAL_LOSS, F_ATTN, M_ACT, SINK_EPS):
        assert math.isfinite(result.summary[key]), (key, result.summary[key])
    return {"first_loss": losses[0], "last_loss": losses[-1], F_ATTN: result.summary[F_ATTN]}


def eager_matches_fused(variant: str, device: str) -> dict:
    """Under bf16 autocast, the probes' eager attention path gives the fused SDPA path's logits within bf16's
    rounding (BF16_ROUNDING_MULTIPLE times the fused path's own bf16-vs-fp32 difference), and is itself
    deterministic. Returns both differences."""
    torch.manual_seed(0)
    model = GatedLM(preset(tiny_preset_for(variant)), get_variant(variant)).to(device).eval()
    with torch.no_grad():
        for gate in model.gates():  # away from the init, so that a wrong path cannot hide behind symmetry
            for param in gate.parameters():
                param.normal_(0, 0.5)
    tokens_BT = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1)).to(device)
    tokens_BT[:, 0] = 256  # BOS, as every training window starts
    with torch.no_grad():
        fused_fp32 = model(tokens_BT).logits_BTV.float()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            fused = model(tokens_BT).logits_BTV.float()
            recorder = ProbeRecorder()
            eager = model(tokens_BT, recorder=recorder).logits_BTV.float()
            again = model(tokens_BT, recorder=ProbeRecorder()).logits_BTV.float()
    rounding = (fused - fused_fp32).abs().max().item()
    difference = (eager - fused).abs().max().item()
    assert difference <= BF16_ROUNDING_MULTIPLE * rounding, (
        f"eager and fused logits differ by {difference:.3g}, more than {BF16_ROUNDING_MULTIPLE}x bf16's own "
        f"rounding ({rounding:.3g})"
    )
    torch.testing.assert_close(eager, again, rtol=0, atol=0)
    report = recorder.report()
    assert len(report.f_attn_per_layer) == model.cfg.n_layers and 0 <= report.f_attn <= 1
    return {"eager_vs_fused": difference, "bf16_vs_fp32": rounding}


def resume_matches(config: TrialConfig, work: Path, device: str) -> dict:
    """Train to the end; then, from a copy whose newest checkpoint is gone (the process died between the last
    two), resume: the resumed steps and the final validation loss equal the uninterrupted run's."""
    reference = InMemoryTracker()
    expected = run_trial(config, reference, work / "full", work / "cache")
    shutil.copytree(work / "full", work / "resumed")
    checkpoints = sorted(TrialFolder(work / "resumed").checkpoints.glob("*.ckpt"))
    checkpoints[-1].unlink()
    resumed_from = int(checkpoints[-2].stem.split("-")[1])
    tracker = InMemoryTracker()
    resumed = run_trial(config, tracker, work / "resumed", work / "cache")
    steps = [step for step, _ in tracker.metrics[TRAIN_LOSS]]
    assert steps == [step for step, _ in reference.metrics[TRAIN_LOSS] if step > resumed_from], steps
    tolerance = RESUME_TOLERANCE[torch.device(device).type]
    by_step = dict(reference.metrics[TRAIN_LOSS])
    worst = max(abs(value - by_step[step]) / abs(by_step[step]) for step, value in tracker.metrics[TRAIN_LOSS])
    assert worst <= tolerance, f"resumed train loss differs by {worst:.2e} (relative), more than {tolerance:g}"
    final, final_expected = resumed.summary[FINAL_VAL_LOSS], expected.summary[FINAL_VAL_LOSS]
    assert abs(final - final_expected) <= tolerance * abs(final_expected), (final, final_expected)
    losses = [value for _, value in reference.metrics[TRAIN_LOSS]]
    probes = {key: expected.summary[key] for key in (F_ATTN, M_ACT, SINK_EPS, GATE_MEAN) if key in expected.summary}
    assert all(math.isfinite(value) for value in probes.values()), probes
    return {
        "resumed_from": resumed_from,
        "worst_relative_difference": worst,
        FINAL_VAL_LOSS: final,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "probes": probes,
        "checkpoints": sorted(p.name for p in TrialFolder(work / "full").checkpoints.glob("*.ckpt")),
        "compiled": tracker.tags["compiled"] == "true",
        "precision": tracker.tags["precision"],
    }


def cuda_defaults_resume(work: Path) -> dict:
    """On CUDA a trial with no precision or compile set trains compiled in bf16-mixed and resumes."""
    assert torch.cuda.is_available(), "needs a CUDA device"
    result = resume_matches(replace(short_trial("g1_elementwise_sigmoid"), precision=None, compile=None), work, "cuda")
    assert result["precision"] == "bf16-mixed" and result["compiled"] is True, result
    return result
