"""A grid file (`ablations/*.yaml`) -> a validated, frozen GridSpec. No torch.

Top-level keys: name, base, axes, combine, include, exclude, resources, tracking, storage, ray, search, seeds.
`base` is a trial config (the schema `gatelab train` takes), inline or as a path to a trial YAML relative to
the grid file. Axis keys are dotted trial-config paths (`optim.lr`, `seed`, `model.overrides.n_layers`)
written flat: `axes: {optim.lr: [1.0e-3, 3.0e-3]}`. `load_grid` validates everything before anything runs,
including every expanded trial and the dataset, and raises one-line ConfigErrors `FILE:LINE: KEY: ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gatelab.grid.spec.ladder_spec import LadderSpec
from gatelab.grid.spec.search_spec import SearchSpec
from gatelab.grid.spec.seed_policy import SeedPolicy
from gatelab.trainer.config.invalid import InvalidValue
from gatelab.trainer.config.trial import TrialConfig

COMBINE_MODES = ("cross", "zip")
FILE_HASH_LENGTH = 16


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What Ray reserves for each trial."""

    gpus: float = 0
    """GPUs per trial: 0 (CPU only), whole GPUs (more than 1 trains with DDP), or a fraction below 1 (0.5,
    0.25: two or four trials share one GPU, Ray's fractional GPUs) for presets too small to fill one."""
    cpus: int = 1
    """CPU cores per trial."""
    workers: int = 0
    """DDP processes per trial (Ray Train + Lightning); 0: one per GPU, i.e. DDP whenever gpus > 1."""

    def __post_init__(self) -> None:
        number = not isinstance(self.gpus, bool) and isinstance(self.gpus, (int, float))
        if not number or not self.gpus >= 0:
            raise InvalidValue(
                "gpus",
                "expected a number >= 0 (whole GPUs, or a fraction below 1 to share one)",
                value=_as_written(self.gpus) if number else self.gpus,
            )
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise InvalidValue(
                "gpus",
                "expected whole GPUs, or a fraction below 1 to share one GPU between trials",
                value=self.gpus,
            )
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, int) or self.cpus < 1:
            raise InvalidValue("cpus", "expected an integer >= 1", value=self.cpus)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise InvalidValue("workers", "expected an integer >= 0", value=self.workers)
        if self.ddp_workers > 1 and self.shares_a_gpu:
            raise InvalidValue(
                "workers",
                f"DDP needs whole GPUs (one or more per worker), not resources.gpus={self.gpus:g}",
                value=self.ddp_workers,
            )
        if self.ddp_workers > 1 and (self.gpus % self.ddp_workers or self.cpus % self.ddp_workers):
            raise InvalidValue(
                "workers",
                f"must divide resources.gpus={self.gpus:g} and resources.cpus={self.cpus} "
                "(each DDP worker gets an equal share)",
                value=self.ddp_workers,
            )

    @property
    def shares_a_gpu(self) -> bool:
        """A fraction of one GPU: several trials train on it at once."""
        return 0 < self.gpus < 1

    @property
    def ddp_workers(self) -> int:
        """How many processes train one trial: 1 means a plain Ray task."""
        return self.workers or max(1, int(self.gpus))

    def describe(self) -> str:
        """'1 CPU / 0.5 GPU per trial (2 trials share each GPU)', as the dry run and status print it."""
        shared = f" ({1 / self.gpus:.3g} trials share each GPU)" if self.shares_a_gpu else ""
        ddp = f", DDP over {self.ddp_workers} workers" if self.ddp_workers > 1 else ""
        return f"{self.cpus} CPU / {self.gpus:g} GPU per trial{shared}{ddp}"


def _as_written(number: float) -> float | int:
    """`gpus: -1` as the user wrote it: the loader makes every float field a float, -1 becomes -1.0."""
    return int(number) if float(number).is_integer() else number


@dataclass(frozen=True, kw_only=True)
class TrackingSpec:
    """Where MLflow records the grid."""

    uri: str | None = None
    """MLflow tracking URI; None: gatelab's local MLflow server under the home."""
    experiment: str | None = None
    """MLflow experiment; None: the grid name."""

    def __post_init__(self) -> None:
        for name in ("uri", "experiment"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise InvalidValue(name, "expected a non-empty string or null", value="")


@dataclass(frozen=True, kw_only=True)
class StorageSpec:
    """Where trials keep their checkpoints."""

    checkpoint_root: str | None = None
    """A directory every node sees: a local path, or a shared filesystem mount on a cluster (ray_cluster.yaml
    mounts EFS at /shared); relative to the submitting process's directory; None: <home>/checkpoints."""

    def __post_init__(self) -> None:
        root = self.checkpoint_root
        if root is not None and not root.strip():
            raise InvalidValue("checkpoint_root", "expected a directory path or null", value="")
        if root is not None and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", root):
            # A trial's lock is an flock in its directory and a checkpoint appears by an atomic rename
            # (trainer/checkpoint.py); object stores offer neither, and Path() would quietly turn
            # "s3://b/x" into a local directory "s3:/b/x" on each node.
            raise InvalidValue(
                "checkpoint_root",
                "expected a filesystem path that every node sees (a local directory, or a shared mount "
                "such as /shared); object-store URIs are not supported",
                value=root,
            )

    def root(self, default: Path) -> str:
        """The absolute checkpoint root handed to workers (whose working directory is not the driver's)."""
        return str(Path(self.checkpoint_root).expanduser().absolute()) if self.checkpoint_root else str(default)


@dataclass(frozen=True, kw_only=True)
class RaySpec:
    """How the grid uses Ray."""

    address: str | None = None
    """Ray cluster to join ('auto', 'ray://head:10001'); None: start a local Ray."""
    max_concurrent: int = 2
    """Trials running at once."""
    max_retries: int = 2
    """Per-trial retries after system failures (a lost worker or node); 0: none."""

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise InvalidValue("max_concurrent", "expected an integer >= 1", value=self.max_concurrent)
        if self.max_retries < 0:
            raise InvalidValue("max_retries", "expected an integer >= 0", value=self.max_retries)


# eq=False: a spec is compared (and cached, grid/spec/expand.py) by identity; a `dataclasses.replace`d spec is
# another grid with its own trials.
@dataclass(frozen=True, kw_only=True, eq=False)
class GridSpec:
    """One validated grid file: the base trial, the axes, and where and how its trials run."""

    name: str
    """Grid name: the MLflow parent run, the default experiment, the prefix of trial names."""
    base: TrialConfig
    """The config every trial starts from."""
    axes: dict = field(default_factory=dict)
    """Dotted trial-config key -> tuple of values, in file order ('variant: all' stored expanded)."""
    combine: str = "cross"
    """'cross' (cartesian product) or 'zip' (the i-th values together; equal lengths)."""
    include: tuple[dict, ...] = ()
    """Extra trials, each the base plus one mapping of dotted keys to values."""
    exclude: tuple[dict, ...] = ()
    """Drop every trial whose values equal all of one mapping's (base values count for non-axis keys)."""
    resources: Resources = field(default_factory=Resources)
    """Resources per trial."""
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    """MLflow URI and experiment."""
    storage: StorageSpec = field(default_factory=StorageSpec)
    """Checkpoint root."""
    ray: RaySpec = field(default_factory=RaySpec)
    """Ray address, concurrency and retries."""
    search: SearchSpec | None = None
    """The Optuna search over the grid's points (grid/spec/search_spec.py), or None for a plain grid."""
    seeds: SeedPolicy | None = None
    """Adaptive seeds (grid/spec/seed_policy.py): axes.seed then holds 0..max-1, of which the verdicts choose."""
    ladder: LadderSpec | None = None
    """A model ladder (grid/spec/ladder_spec.py): every point at each rung's size, budget and learning rate."""
    source: str = "<grid>"
    """Path of the grid file."""
    file_hash: str = ""
    """First 16 hex digits of the sha256 of the grid file's bytes."""

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_MODES:
            raise InvalidValue("combine", "expected 'cross' or 'zip'", value=self.combine)
