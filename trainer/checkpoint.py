"""Checkpoint files of one trial: atomic writes, weights-only loads, the newest K kept.

A process may die at any instant (docs/design.md, "State lives in MLflow and on storage"), so a checkpoint is
written to a temporary file in the same directory and renamed: a reader sees the old file or the new one, never
half. The file and then its directory are fsynced, so the rename itself survives a power loss.

Storage can still damage a file (a truncated copy, a disk error): a resume checks the newest checkpoints'
integrity (the zip archive's CRCs, without unpickling), sets an unreadable one aside under a `.damaged` name
(kept, not deleted) and continues from the newest readable one.
"""

from __future__ import annotations

import errno
import os
import re
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from gatelab.trainer.config.outcome import DiskFull

_NAME = re.compile(r"^step-(\d{8})\.ckpt$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _out_of_space(err: BaseException | None) -> bool:
    """Whether an error, or one it was raised while handling, is a full device or quota."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            return True
        err = err.__cause__ or err.__context__
    return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with temp-file-then-rename saves and weights_only=True loads."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            # Through a Python file: a full disk then surfaces as OSError(ENOSPC) behind torch's own error
            # ("unexpected pos ..."), where a path given to torch.save would say nothing about the cause.
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException as err:
            tmp.unlink(missing_ok=True)  # no half-written file left behind; the older checkpoints stay
            if _out_of_space(err):
                raise DiskFull(f"no space left on the device of {path.parent} writing {path.name}") from err
            raise
        os.replace(tmp, path)
        _fsync_directory(path.parent)

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


def damage_of(path: Path) -> str | None:
    """Why a checkpoint file cannot be read (truncated, empty, a CRC mismatch), or None when it is whole."""
    try:
        with zipfile.ZipFile(path) as archive:  # torch.save writes a zip archive
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"{type(err).__name__}: {err}"
    return f"CRC mismatch in {bad}" if bad else None


def newest_readable_checkpoint(directory: Path, warn) -> Path | None:
    """The newest whole checkpoint. Each damaged newer one is renamed `<name>.damaged` (set aside, not deleted)
    and reported through warn(message); when none is whole, warn says the trial starts over."""
    found = list_checkpoints(directory)
    for _, path in reversed(found):
        damage = damage_of(path)
        if damage is None:
            return path
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        _fsync_directory(path.parent)
        warn(f"checkpoint {path.name} is damaged ({damage}); set aside as {aside.name}")
    if found:
        warn("no readable checkpoint is left: the trial starts over from step 0")
    return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(directory)[:-keep_last]:
        path.unlink(missing_ok=True)
