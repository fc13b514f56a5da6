"""The CUDA path, tested where it can be: bf16-mixed (what trials train in on a GPU) on the CPU, and the same
checks on CUDA, marked `gpu`, which skip — saying so — where there is no CUDA device.

For every gate family: a few bf16-mixed training steps stay finite, the probes' eager attention path equals
the fused SDPA path within bf16's rounding, and a resumed bf16 run equals an uninterrupted one. The checks
live in gatelab.trainer.device_checks, which scripts/gpu_check.py runs too.
"""

import pytest
import torch

from gatelab.trainer import device_checks
from gatelab.trainer.device_checks import FAMILIES

pytestmark = [pytest.mark.slow]

NO_CUDA = "no CUDA device here: the gpu-marked tests run on a GPU machine (scripts/gpu_check.py)"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]


def _on(device: str) -> None:
    """run_trial trains on CUDA whenever there is one: on a GPU machine the 'cpu' training cases are CUDA ones."""
    assert device == "cpu" or torch.cuda.is_available()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", FAMILIES)
def test_a_few_bf16_mixed_steps_train_and_probe(variant, device, tmp_path):
    _on(device)
    measured = device_checks.trains_and_probes(variant, tmp_path)
    assert measured["last_loss"] < measured["first_loss"] * 1.5  # finite and not blowing up


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", FAMILIES)
def test_eager_probe_path_equals_fused_within_bf16_rounding(variant, device):
    measured = device_checks.eager_matches_fused(variant, device)
    assert 0 < measured["bf16_vs_fp32"] < 0.1  # bf16 really was in use, at a scale of rounding


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["g1_elementwise_sigmoid", "more_experts"])
def test_a_resumed_bf16_run_equals_the_uninterrupted_one(variant, device, tmp_path):
    _on(device)
    result = device_checks.resume_matches(device_checks.short_trial(variant), tmp_path, device)
    assert result["resumed_from"] == 4 and result["precision"] == "bf16-mixed"


def test_a_check_that_fails_says_so(tmp_path, monkeypatch):
    # The checks must be able to fail: an eager path 25% off the fused one (here, its output scaled) is caught.
    from gatelab.trainer.model import attention

    real = attention.eager_causal_attention
    monkeypatch.setattr(
        attention, "eager_causal_attention", lambda q, k, v: (lambda y, p: (y * 1.25, p))(*real(q, k, v))
    )
    with pytest.raises(AssertionError):
        device_checks.eager_matches_fused("g1_elementwise_sigmoid", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_trains_compiled_in_bf16_by_default_and_resumes(tmp_path):
    result = device_checks.cuda_defaults_resume(tmp_path)
    assert result["resumed_from"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_the_final_evaluation_runs_on_the_device_that_trained(tmp_path, monkeypatch):
    # Lightning's teardown moves the module to the CPU after fit; the final loss, probes and long-context
    # passes must not follow it there (on an H200 they then took most of a small trial's time).
    from gatelab.trainer import run

    devices = []
    real = run.mean_loss
    monkeypatch.setattr(
        run,
        "mean_loss",
        lambda model, *a, **k: devices.append(model.lm_head.weight.device.type) or real(model, *a, **k),
    )
    device_checks.trains_and_probes("g1_elementwise_sigmoid", tmp_path)
    assert devices == ["cuda"]
