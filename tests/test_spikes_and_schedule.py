"""Spike detector on synthetic curves, and the LR schedule's shape (docs/paper.md §8)."""

import math
import random

import pytest

from gatelab.trainer.lightning_module import lr_factor
from gatelab.trainer.spikes import SpikeDetector


def smooth_curve(steps: int, noise: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [2.0 + 3.0 * math.exp(-step / 60) + rng.gauss(0, noise) for step in range(steps)]


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.05])
def test_smooth_noisy_curves_have_no_spikes(noise):
    detector = SpikeDetector()
    for step, loss in enumerate(smooth_curve(400, noise)):
        detector.update(step, loss)
    assert detector.summary()["spike_count"] == 0


def test_heavy_tailed_batch_noise_and_lone_outliers_are_not_spikes():
    # Batches of heterogeneous text: log-normal per-step noise, occasionally 1.4-1.6x the median.
    rng = random.Random(1)
    detector = SpikeDetector()
    curve = [(1.0 + 2.0 * math.exp(-step / 500)) * math.exp(rng.gauss(0, 0.12)) for step in range(5000)]
    curve[3000] = 1.7 * curve[2999]  # one bad batch
    for step, loss in enumerate(curve):
        detector.update(step, loss)
    assert detector.summary()["spike_count"] == 0


def test_injected_spikes_are_found_with_step_size_and_recovery():
    detector = SpikeDetector()
    curve = smooth_curve(300, 0.02)
    for step in range(150, 154):  # an instability: the loss stays up for 4 steps
        curve[step] *= 1.8  # a 4-step spike
    curve[250] *= 3.0  # a one-step jump big enough to count alone
    found = [s for step, loss in enumerate(curve) if (s := detector.update(step, loss))]
    # A two-step spike is confirmed at its second step but dated to its first.
    assert [s.step for s in found] == [150, 250]
    assert found[0].ratio == pytest.approx(1.8, rel=0.08) and found[1].ratio == pytest.approx(3.0, rel=0.08)
    assert found[0].recovered_after == 4 and found[1].recovered_after == 1
    summary = detector.summary()
    assert summary["spike_count"] == 2 and summary["max_steps_to_recover"] == 4
    assert summary["max_spike_ratio"] == pytest.approx(3.0, rel=0.08)


def test_state_round_trip_continues_identically():
    curve = smooth_curve(200, 0.02)
    curve[120] *= 2
    curve[121] *= 2
    whole = SpikeDetector()
    for step, loss in enumerate(curve):
        whole.update(step, loss)
    first = SpikeDetector()
    for step, loss in enumerate(curve[:121]):
        first.update(step, loss)
    second = SpikeDetector()
    second.load_state_dict(first.state_dict())
    for step, loss in enumerate(curve[121:], start=121):
        second.update(step, loss)
    assert second.summary() == whole.summary()
    assert second.spikes[0].recovered_after == 2


def test_lr_schedule_warmup_then_cosine_to_floor():
    factors = [lr_factor(step, 10, 110, 0.015) for step in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.015 + 0.985 * 0.5)
    assert factors[110] == pytest.approx(0.015)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_a_resumed_sampler_has_the_length_it_yields_so_ddp_shards_it_whole():
    """Lightning's DistributedSamplerWrapper (DDP) sizes each rank's shard by len() and indexes what the sampler
    yielded: after a resume at step k the two must agree, and two ranks' shards must be the stream, interleaved."""
    from torch.utils.data.distributed import DistributedSampler

    from gatelab.trainer.lightning_module import ResumableSampler

    step = {"now": 0}
    sampler = ResumableSampler(n_windows=10, seed=3, total_samples=48, start_fn=lambda: step["now"] * 4)
    whole = list(sampler)
    assert len(sampler) == len(whole) == 48
    step["now"] = 5  # restored at step 5 of a 4-sample step
    rest = list(sampler)
    assert len(sampler) == len(rest) == 28 and rest == whole[20:]
    ranks = [DistributedSampler(rest, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    shards = [[rest[i] for i in s] for s in ranks]
    assert [x for pair in zip(*shards) for x in pair] == rest
