"""Online loss-spike detection (the paper's Fig. 1: the baseline's spikes that gating removes).

A step is *high* when its train loss exceeds the rolling median of the previous `window` losses by more
than both `factor - 1` of that median and `z` robust standard deviations (1.4826 * MAD) of the window.
The noise term matters: with small batches of heterogeneous text, single batches routinely land 30-60%
above the median (seen on the laptop preset: 54 one-step "spikes" in 5000 steps with a ratio-only rule).
Those are batch noise, not instability. So a spike is a high step followed by another high step (the loss
stays up, as in an instability), or a single step at least `single_step_factor` times the median.
Consecutive high steps form one event with its first step, peak ratio, and the steps until the loss is
back under `recover_factor` times the pre-spike median. Losses inside a spike stay out of the window, so
a long spike cannot raise its own bar.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from gatelab.trainer.config.metric_names import MAX_SPIKE_RATIO, MAX_STEPS_TO_RECOVER, SPIKE_COUNT, UNRECOVERED_SPIKES


@dataclass
class Spike:
    step: int
    """First step above the threshold."""
    ratio: float
    """Peak loss / rolling median before the spike."""
    reference: float
    """The rolling median before the spike."""
    recovered_after: int | None = None
    """Steps from the spike's first step until the loss was back under recover_factor * reference."""


class SpikeDetector:
    """Feed it (step, loss) in order; `spikes` accumulates events. Its state is plain data for checkpoints."""

    def __init__(
        self,
        window: int = 50,
        factor: float = 1.3,
        recover_factor: float = 1.05,
        z: float = 6.0,
        single_step_factor: float = 2.0,
    ) -> None:
        self.window, self.factor, self.recover_factor = window, factor, recover_factor
        self.z, self.single_step_factor = z, single_step_factor
        self.history: deque[float] = deque(maxlen=window)
        self.spikes: list[Spike] = []
        self._open: Spike | None = None  # a confirmed spike that has not recovered yet
        self._pending: Spike | None = None  # one high step, waiting for the next to confirm it

    def _threshold(self) -> float:
        median = statistics.median(self.history)
        mad = statistics.median(abs(x - median) for x in self.history)
        return median + max((self.factor - 1) * median, self.z * 1.4826 * mad)

    def update(self, step: int, loss: float) -> Spike | None:
        """Returns the Spike confirmed at this step (its `step` may be the previous one)."""
        if self._open is not None:
            self._track_open(step, loss)
            return None
        if len(self.history) < self.window:
            self.history.append(loss)
            return None
        median = statistics.median(self.history)
        high = loss > self._threshold()
        pending, self._pending = self._pending, None
        if pending is not None and high:
            pending.ratio = max(pending.ratio, loss / pending.reference)
            return self._confirm(pending, step, loss)
        if pending is not None:
            self.history.append(pending.ratio * pending.reference)  # it was noise: back into the window
        if not high:
            self.history.append(loss)
            return None
        candidate = Spike(step=step, ratio=loss / median, reference=median)
        if candidate.ratio >= self.single_step_factor:
            return self._confirm(candidate, step, loss)
        self._pending = candidate
        return None

    def _confirm(self, spike: Spike, step: int, loss: float) -> Spike:
        self.spikes.append(spike)
        self._open = spike
        self._track_open(step, loss)
        return spike

    def _track_open(self, step: int, loss: float) -> None:
        spike = self._open
        spike.ratio = max(spike.ratio, loss / spike.reference)
        if step > spike.step and loss <= self.recover_factor * spike.reference:
            spike.recovered_after = step - spike.step
            self._open = None
            self.history.append(loss)

    def summary(self) -> dict[str, float]:
        recovered = [s.recovered_after for s in self.spikes if s.recovered_after is not None]
        return {
            SPIKE_COUNT: float(len(self.spikes)),
            MAX_SPIKE_RATIO: max((s.ratio for s in self.spikes), default=0.0),
            MAX_STEPS_TO_RECOVER: float(max(recovered, default=0)),
            UNRECOVERED_SPIKES: float(sum(s.recovered_after is None for s in self.spikes)),
        }

    def state_dict(self) -> dict:
        return {
            "history": list(self.history),
            "spikes": [vars(s).copy() for s in self.spikes],
            "open_index": self.spikes.index(self._open) if self._open is not None else -1,
            "pending": vars(self._pending).copy() if self._pending is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = deque(state["history"], maxlen=self.window)
        self.spikes = [Spike(**s) for s in state["spikes"]]
        self._open = self.spikes[state["open_index"]] if state["open_index"] >= 0 else None
        self._pending = Spike(**state["pending"]) if state.get("pending") else None
