"""Which edits change a trial's key and which don't (docs/design.md, Conventions: trial identity)."""

from dataclasses import replace

import pytest

from gatelab.grid.spec.identity import trial_key
from gatelab.trainer.config.shipped_data import CATALOG_PATH
from gatelab.trainer.config.trial import CheckpointConfig, ModelChoice, TrialConfig

BASE = TrialConfig()
FP = "0123456789abcdef"


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: replace(c, variant="g1_headwise_sigmoid"),
        lambda c: replace(c, seed=1),
        lambda c: replace(c, optim=replace(c.optim, lr=1e-3)),
        lambda c: replace(c, optim=replace(c.optim, warmup_steps=5)),
        lambda c: replace(c, schedule=replace(c.schedule, max_steps=61)),
        lambda c: replace(c, schedule=replace(c.schedule, batch_size=4)),
        lambda c: replace(c, schedule=replace(c.schedule, seq_len=32)),
        lambda c: replace(c, model=ModelChoice(preset="tiny-moe")),
        lambda c: replace(c, model=ModelChoice(preset="tiny", overrides={"n_layers": 3})),
        lambda c: replace(c, data=replace(c.data, val_percent=2.0)),
        lambda c: replace(c, eval=replace(c.eval, batches=8)),
        lambda c: replace(c, stability=replace(c.stability, divergence_loss=7.0)),
    ],
    ids=[
        "variant",
        "seed",
        "lr",
        "warmup",
        "steps",
        "batch",
        "seq_len",
        "preset",
        "override",
        "split",
        "eval",
        "divergence",
    ],
)
def test_edits_that_change_the_result_change_the_key(edit):
    assert trial_key(edit(BASE), FP) != trial_key(BASE, FP)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: replace(c, name="renamed"),
        lambda c: replace(c, checkpoint=CheckpointConfig(every=7, keep_last=5)),
        lambda c: replace(c, schedule=replace(c.schedule, log_every=1)),
        lambda c: replace(c, data=replace(c.data, source="/elsewhere/same-data")),
        lambda c: replace(c, schedule=replace(c.schedule, seq_len=64)),  # the preset's own length, spelled out
        lambda c: replace(c, model=ModelChoice(preset="tiny", overrides={"n_layers": 2})),  # the preset's value
        lambda c: replace(c, compile=True),  # numerics only: the same experiment compiled or eager
        lambda c: replace(c, compile=False),
        lambda c: replace(c, catalog=str(CATALOG_PATH)),  # the shipped catalog named explicitly: same definitions
        lambda c: replace(c, precision="bf16-mixed"),  # rounding too: a CUDA run and its CPU resume are one trial
        lambda c: replace(c, precision="32-true"),
    ],
    ids=[
        "name",
        "checkpoint",
        "log_every",
        "data-path",
        "explicit-default-seq-len",
        "explicit-default",
        "compile-on",
        "compile-off",
        "catalog-path",
        "bf16-mixed",
        "fp32",
    ],
)
def test_edits_that_do_not_change_the_result_keep_the_key(edit):
    assert trial_key(edit(BASE), FP) == trial_key(BASE, FP)


def test_data_fingerprint_is_part_of_the_key():
    assert trial_key(BASE, FP) != trial_key(BASE, "fedcba9876543210")


def test_key_is_stable_across_processes():
    # Pinned: if this changes, every stored trial would silently be run again. Bump KEY_VERSION on purpose.
    assert trial_key(BASE, FP) == "7c14f8a8bd57"
