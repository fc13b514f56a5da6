"""Checkpoint files of one trial: atomic writes, weights-only loads, the newest K kept.

A process may die at any instant (docs/design.md, "State lives in MLflow and on storage"), so a checkpoint is
written to a temporary file in the same directory and renamed: a reader sees the old file or the new one, never
half.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

_NAME = re.compile(r"^step-(\d{8})\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with temp-file-then-rename saves and weights_only=True loads."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(checkpoint, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        # Never unpickle arbitrary objects: our checkpoints hold tensors and plain data only.
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.ckpt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints, oldest first; temporary files are ignored."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def newest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(directory)[:-keep_last]:
        path.unlink(missing_ok=True)
