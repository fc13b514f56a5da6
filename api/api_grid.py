"""`gatelab.load_grid`: a grid file, or a shipped example by name, read, overridden and validated, with its trials.

The grid is read by grid/spec/grid_file.py and expanded by grid/spec/expand.py, exactly as `gatelab submit` reads
it; this module only holds the result, so every other function of the API can take a `Grid` or a name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gatelab.grid.spec.expand import Trial, expand
from gatelab.grid.spec.grid_file import load_grid as _read_grid
from gatelab.grid.spec.grid_spec import GridSpec
from gatelab.grid.spec.trial_cost import training_flops


@dataclass(frozen=True, kw_only=True)
class TrialInfo:
    """One trial of a grid, before anything runs (the rows of `gatelab submit GRID --dry-run`)."""

    key: str
    """The trial's identity: the hash of the fields that change its result (grid/spec/identity.py)."""
    variant: str
    """The gate variant (a name in the catalog, ablations/variants.yaml)."""
    label: str
    """Short human label, e.g. 'g1_elementwise_sigmoid seed=0'."""
    overrides: dict
    """Dotted key -> value: what the grid's axes (or an include entry) set in this trial."""
    est_flops: float
    """Estimated training FLOPs (grid/spec/trial_cost.py): what the dry run shows and the dispatch orders by."""


@dataclass(frozen=True)
class Grid:
    """A validated grid and its expanded trials. Build it with `load_grid`."""

    spec: GridSpec
    """The validated grid (grid/spec/grid_spec.py)."""
    expanded: tuple[Trial, ...] = field(repr=False)
    """Its trials, resolved (grid/spec/expand.py)."""
    overrides: tuple[str, ...] = ()
    """The `set=` overrides it was loaded with ('dotted.key=value'): a resubmit must pass the same ones, since they
    change the trials' keys."""

    @property
    def name(self) -> str:
        """The grid's name: its MLflow experiment is `gatelab/<name>`."""
        return self.spec.name

    @property
    def source(self) -> str:
        """The grid file it was read from."""
        return self.spec.source

    def trials(self) -> tuple[TrialInfo, ...]:
        """Every trial: key, variant, label, overrides and estimated cost. `pandas.DataFrame(grid.trials())` makes
        a table of them.

        >>> grid = gatelab.load_grid("smoke")
        >>> len(grid.trials()), grid.trials()[0].variant
        (26, 'baseline')
        """
        return tuple(
            TrialInfo(
                key=t.key,
                variant=t.config.variant,
                label=t.label,
                overrides=dict(t.overrides),
                est_flops=training_flops(t),
            )
            for t in self.expanded
        )

    def __repr__(self) -> str:
        return f"Grid({self.name!r}, {len(self.expanded)} trials, source={self.source!r})"


def load_grid(grid: str | Path, set: Sequence[str] = (), *, cache_dir: Path | None = None) -> Grid:
    """Read and validate a grid file, or a shipped example by name ('smoke'), with `set` overrides
    ('dotted.key=value', as `--set`). With `cache_dir` every dataset is also tokenized and checked (what `submit`
    does). Bad input raises `ConfigError` (a ValueError) naming the file, the line and the key.

    >>> grid = gatelab.load_grid("smoke", set=["base.schedule.max_steps=20", "axes.seed=[0, 1]"])
    >>> grid.name, len(grid.trials())
    ('smoke', 52)
    """
    if isinstance(set, str):  # one override given bare: a common slip, and iterating it would split its letters
        set = [set]
    spec = _read_grid(Path(grid), list(set), cache_dir=cache_dir)
    return Grid(spec, tuple(expand(spec)), tuple(set))


def as_grid(grid: Grid | str | Path, set: Sequence[str] = ()) -> Grid:
    """A `Grid` as given, or loaded from a path or a shipped example's name (with `set` overrides)."""
    if isinstance(grid, Grid):
        if set:
            raise ValueError("set= overrides a grid being loaded: pass them to gatelab.load_grid instead")
        return grid
    return load_grid(grid, set)
