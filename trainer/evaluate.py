"""Validation loss/perplexity, the probes, and long-context perplexity (the paper's Table 5 at small scale).

Evaluation uses the first `batches` validation windows in file order: the same tokens at every evaluation
and for every variant, so curves and variants compare like for like.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gatelab.trainer.config.metric_names import long_ppl
from gatelab.trainer.data import CorpusSplits
from gatelab.trainer.model.lm import GatedLM
from gatelab.trainer.probes import ProbeReport, run_probes


def fixed_batches(dataset, batch_size: int, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first n_batches * batch_size windows (fewer if the split is small), as (inputs, targets)."""
    count = min(len(dataset), batch_size * n_batches)
    items = [dataset[i] for i in range(count)]
    return [
        (torch.stack([x for x, _ in items[i : i + batch_size]]), torch.stack([y for _, y in items[i : i + batch_size]]))
        for i in range(0, count, batch_size)
    ]


@torch.no_grad()
def mean_loss(model: GatedLM, batches, yarn_factor: float = 1.0) -> float:
    """Token-weighted mean cross-entropy (padding targets ignored)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for inputs_BT, targets_BT in batches:
        logits = model(inputs_BT.to(device), yarn_factor=yarn_factor).logits_BTV.float()
        targets = targets_BT.to(device).flatten()
        total += F.cross_entropy(logits.flatten(0, 1), targets, reduction="sum").item()
        count += (targets != -100).sum().item()
    model.train(was_training)
    return total / max(count, 1)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # cap: a diverged model's exp(loss) would overflow


def probe(model: GatedLM, batches) -> ProbeReport:
    device = next(model.parameters()).device
    return run_probes(model, [inputs.to(device) for inputs, _ in batches])


def long_context(
    model: GatedLM, splits: CorpusSplits, train_len: int, factors, batches: int, max_tokens: int
) -> dict[str, float]:
    """Validation PPL at factor x the training length, with plain RoPE and with YaRN at that factor.

    Uses only full windows (full_only) so longer lengths are not diluted by short documents; lengths whose
    batch would exceed max_tokens, or that the validation split cannot fill, are skipped."""
    out: dict[str, float] = {}
    for factor in factors:
        length = train_len * factor
        batch_size = max(1, min(4, max_tokens // length))
        if batch_size * length > max_tokens:
            continue
        try:
            windows = splits.val_at(length, full_only=True)
        except ValueError:
            continue  # the validation split has no document this long
        data = fixed_batches(windows, batch_size, batches)
        out[long_ppl(factor, "rope")] = perplexity(mean_loss(model, data, 1.0))
        out[long_ppl(factor, "yarn")] = perplexity(mean_loss(model, data, float(factor)))
    return out
