"""Online loss-spike detection (the paper's Fig. 1: the baseline's spikes that gating removes).

A step is spiking when its train loss exceeds `factor` times the median of the previous `window` losses.
Consecutive spiking steps form one spike event; it records its first step, its peak ratio, and how many
steps the loss took to come back under `recover_factor` times the median before the spike. A smoothly
falling or flat-but-noisy curve never crosses 1.3x its own recent median, so the defaults report zero spikes
on such curves while a jump of the kind in Fig. 1 is found.
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass


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

    def __init__(self, window: int = 20, factor: float = 1.3, recover_factor: float = 1.05) -> None:
        self.window, self.factor, self.recover_factor = window, factor, recover_factor
        self.history: deque[float] = deque(maxlen=window)
        self.spikes: list[Spike] = []
        self._open: Spike | None = None

    def update(self, step: int, loss: float) -> Spike | None:
        """Returns the new Spike when this step starts one. Losses inside a spike stay out of the
        reference window, so a long spike cannot raise its own bar."""
        if self._open is not None:
            self._open.ratio = max(self._open.ratio, loss / self._open.reference)
            if loss > self.recover_factor * self._open.reference:
                return None
            self._open.recovered_after = step - self._open.step
            self._open = None
        elif len(self.history) == self.window:
            median = statistics.median(self.history)
            if loss > self.factor * median:
                self._open = Spike(step=step, ratio=loss / median, reference=median)
                self.spikes.append(self._open)
                return self._open
        self.history.append(loss)
        return None

    def summary(self) -> dict[str, float]:
        recovered = [s.recovered_after for s in self.spikes if s.recovered_after is not None]
        return {"spike_count": float(len(self.spikes)),
                "max_spike_ratio": max((s.ratio for s in self.spikes), default=0.0),
                "max_steps_to_recover": float(max(recovered, default=0)),
                "unrecovered_spikes": float(sum(s.recovered_after is None for s in self.spikes))}

    def state_dict(self) -> dict:
        return {"history": list(self.history),
                "spikes": [vars(s).copy() for s in self.spikes],
                "open_index": self.spikes.index(self._open) if self._open is not None else -1}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque(state["history"], maxlen=self.window)
        self.spikes = [Spike(**s) for s in state["spikes"]]
        self._open = self.spikes[state["open_index"]] if state["open_index"] >= 0 else None
