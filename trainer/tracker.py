"""The small interface through which the trainer reports; `tracking/` implements it for MLflow.

The trainer never imports mlflow: it receives a Tracker. `InMemoryTracker` serves tests and `gatelab bench`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from gatelab.trainer.config.run_tags import STATUS_TAG


class Tracker(Protocol):
    """Where one trial's params, tags, metrics, artifacts and status go."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Immutable facts (the flattened resolved config); logging a different value twice is an error."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Mutable labels (gate axes, variant, status)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalar metrics at a training step."""

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        """Copy a file into the run's artifacts."""

    def last_steps(self) -> dict[str, int]:
        """Largest logged step per metric key: a resumed trial skips (key, step) pairs already logged, so
        the history has no duplicated step (resume is exact, so the skipped values are the same)."""

    def set_status(self, status: str) -> None:
        """Trial status: running, finished, failed, diverged."""

    def flush(self) -> None:
        """Block until everything logged so far is stored."""


class InMemoryTracker:
    """Keeps everything in dicts; for tests and benchmarks."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.artifacts: list[tuple[Path, str | None]] = []
        self.status: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            if key in self.params and self.params[key] != value:
                raise ValueError(f"param {key!r} already logged as {self.params[key]!r}, not {value!r}")
            self.params[key] = value

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((step, float(value)))

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        self.artifacts.append((Path(local_path), artifact_dir))

    def last_steps(self) -> dict[str, int]:
        return {key: max(step for step, _ in history) for key, history in self.metrics.items() if history}

    def set_status(self, status: str) -> None:
        self.status = status
        self.tags[STATUS_TAG] = status

    def flush(self) -> None:
        pass
