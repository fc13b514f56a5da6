""" "Did you mean ...?": the one way an error names the nearest valid choice (grid files, trial configs, the
catalog, search blocks). Torch-free, standard library only."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, options: Iterable[str], *, otherwise: str | None = None, cutoff: float = 0.6) -> str:
    """ "did you mean 'x'?" for the option nearest to `word`; without one close enough, `otherwise` (default:
    "expected one of a, b, c"; "" for no hint at all)."""
    options = list(options)
    near = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    if near:
        return f"did you mean {near[0]!r}?"
    return f"expected one of {', '.join(options)}" if otherwise is None else otherwise
