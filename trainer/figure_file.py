"""Writing a matplotlib figure to a PNG file, the one way (a trial's figures, the reports' figures): tight
layout, one resolution, and the figure closed so a long report does not hold every figure in memory. Imports
matplotlib only (reports run where torch is not installed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DPI = 110  # a 7 x 4 in figure is 770 x 440 px: legible in the MLflow UI's artifact viewer and in a report


def save_figure(fig, path: Path, *, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay out `fig` (within `rect` of the figure, leaving room for a figure legend), save it, close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout(**({"rect": rect} if rect else {}))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def headless_pyplot():
    """matplotlib.pyplot on the headless Agg backend (workers and servers have no display), unless the program chose
    a backend already: a notebook's inline one (Jupyter's kernel sets MPLBACKEND) or pyplot imported first. A report
    made from a notebook (`gatelab.report`, `gatelab.compare`) must not stop the notebook's own figures showing."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
