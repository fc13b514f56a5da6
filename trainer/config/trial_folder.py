"""What a trial's folder holds, named once. A trial's folder is `<checkpoint root>/<trial key>/`: the home's
checkpoints/ folder, or the grid's `storage:` root. Torch-free: the trainer writes into it, the grid worker
locks it, the tracker journals into it, `gatelab status|resume` and the chaos soak read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS = "checkpoints"  # Lightning checkpoints, step-<n>.ckpt (trainer/checkpoints.py)
LOCK = ".lock"  # flock held by whoever runs the trial: one process at a time
JOURNAL = "mlflow-unsent.jsonl"  # what the tracker could not send while the server was away (tracking/runs/outbox.py)
IN_FLIGHT = "mlflow-in-flight.json"  # the request its process last sent, and its slowest (tracking/runs/in_flight.py)
PROBES = "probes.json"  # the probes' report, also logged as the run's artifact of that name


@dataclass(frozen=True)
class TrialFolder:
    """The paths inside one trial's folder."""

    path: Path

    @classmethod
    def of(cls, checkpoint_root: Path | str, key: str) -> TrialFolder:
        return cls(Path(checkpoint_root) / key)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def in_flight(self) -> Path:
        return self.path / IN_FLIGHT

    @property
    def probes(self) -> Path:
        return self.path / PROBES


def journals(checkpoint_root: Path | str) -> list[Path]:
    """The journals of the trials under `checkpoint_root` (one folder per trial key): what is still to be sent."""
    return sorted(Path(checkpoint_root).glob(f"*/{JOURNAL}"))
