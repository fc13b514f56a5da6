"""A trial's identity: a hash of the resolved fields that change its result (docs/design.md).

In: the resolved model shape, the variant's definition (not only its name, so editing a catalog entry
makes new trials), the data fingerprint and split, optimiser, schedule, evaluation and stability rules,
seed. Out: the trial's name, the data path (the fingerprint stands for the data), checkpoint cadence,
logging cadence, the tracking URI and every path. `tests/test_identity.py` pins both lists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache

from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.presets import ModelConfig
from gatelab.trainer.config.trial import TrialConfig, drop_run_settings, to_dict
from gatelab.trainer.corpus import data_fingerprint

KEY_VERSION = 1  # bump when the meaning of a field changes without its value changing
KEY_LENGTH = 12


def identity_fields(config: TrialConfig, fingerprint: str) -> dict:
    """The canonical mapping that is hashed."""
    # Out: how or where it runs (name, catalog path, compile, precision, checkpoints, logging cadence, data
    # path); the variant's definition and the data's fingerprint stand for the catalog and the data path.
    data = drop_run_settings(to_dict(config))
    data["schedule"]["seq_len"] = config.seq_len
    data["data"]["fingerprint"] = fingerprint
    data["model"], data["variant"] = _model_and_variant(config.model.resolve(), config.variant, config.catalog)
    data["key_version"] = KEY_VERSION
    return data


@lru_cache(maxsize=1024)
def _model_and_variant(base: ModelConfig, variant_name: str, catalog: str | None) -> tuple[dict, dict]:
    """The resolved model shape and the variant's definition (cached: a grid has few distinct ones).
    Callers get shared dicts: they are only serialised, never mutated."""
    variant = get_variant(variant_name, catalog)
    return (
        asdict(variant.model_config(base)),
        {
            "name": variant.name,
            "gates": [g.axes for g in variant.gates],
            "sdpa_transform": variant.sdpa_transform.value,
        },
    )


def trial_key(config: TrialConfig, fingerprint: str | None = None) -> str:
    """12 hex digits of sha256 over the canonical JSON of `identity_fields`."""
    fields = identity_fields(config, fingerprint or data_fingerprint(config.data))
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]
