"""A ladder that tunes LRs with an `optim.lr` axis: the fit takes, per rung and variant, the LR with the best mean
over seeds (tracking/stats/ladder_points.py), and the report shows the max stable LR per rung against size (its
table, figure, ladder.json and the parent-run metric names). Outcomes are written by hand: the rule, not a run."""

import json
import math

from gatelab.tracking.report.ladder_report import ladder_blocks, ladder_figures, write_ladder_json
from gatelab.tracking.stats.ladder import LadderTarget
from gatelab.tracking.stats.ladder_points import analyse, ladder_points, rung_rows, rung_stable_lrs
from gatelab.tracking.stats.rows import TrialOutcome, TrialSpec

LRS = (1e-3, 4e-3, 1.6e-2)
RUNG_FLOPS = (1e12, 3e12, 9e12, 2.7e13)


def _loss(variant: str, rung: int, lr: float, seed: int) -> float:
    """A baseline that diverges at 1.6e-2 from rung 1 and at 4e-3 from rung 3 (its stable LR falls with size), and a
    gate that trains at every LR, a little better; 4e-3 is the best stable LR wherever it is stable."""
    if variant == "baseline" and (lr == LRS[2] and rung >= 1 or lr == LRS[1] and rung >= 3):
        return math.nan
    law = 3.0 * (RUNG_FLOPS[rung] / 1e12) ** -0.1 - (0.02 if variant == "gate" else 0.0)
    return law + 0.05 * abs(math.log(lr / LRS[1])) + 0.003 * seed


def _outcomes() -> list[TrialOutcome]:
    out = []
    for rung, flops in enumerate(RUNG_FLOPS):
        for variant in ("baseline", "gate"):
            for lr in LRS:
                for seed in (0, 1, 2):
                    loss = _loss(variant, rung, lr, seed)
                    spec = TrialSpec(
                        key=f"{variant}-{rung}-{lr}-{seed}", variant=variant, seed=seed, lr=lr, flops=flops, rung=rung
                    )
                    status = "finished" if math.isfinite(loss) else "diverged"
                    metrics = {"final_val_loss": loss} if math.isfinite(loss) else {}
                    out.append(TrialOutcome(trial=spec, status=status, run_id="r", history={}, metrics=metrics))
    return out


def test_the_fit_takes_each_rungs_best_lr_and_the_report_shows_the_stable_lr_against_size(tmp_path):
    outcomes = _outcomes()
    points = ladder_points(outcomes)
    assert len(points) == len(RUNG_FLOPS) * 2 * 3  # one LR per rung and variant, every seed
    rows = rung_rows(outcomes, "baseline")
    best = {(r.rung, r.variant): r.lr for r in rows}
    assert best[3, "baseline"] == LRS[0] and best[3, "gate"] == LRS[1] and best[0, "baseline"] == LRS[1]

    stable = rung_stable_lrs(outcomes)
    found = {(s.rung, s.variant): s.max_stable_lr for s in stable}
    # the sweep rule's margin (5% over the best loss) keeps every finite LR here: the LR that diverged is the limit
    assert [found[r, "baseline"] for r in range(4)] == [LRS[2], LRS[1], LRS[1], LRS[0]]
    assert [found[r, "gate"] for r in range(4)] == [LRS[2]] * 4
    assert {s.metric_name for s in stable if s.variant == "gate"} == {f"max_stable_lr.gate.rung{r}" for r in range(4)}

    target = LadderTarget(target_flops=1e16, resamples=50)
    result = analyse(points, "baseline", target)
    pictures = ladder_figures(result, rows, "baseline", tmp_path, points, None, stable)
    assert (tmp_path / "ladder_lr.png").stat().st_size > 10_000 and len(pictures) == 3
    blocks = ladder_blocks(result, rows, target, "baseline", pictures, stable)
    table = next(b for b in blocks if getattr(b, "header", None) and "Max stable LR" in b.header)
    assert ["3", "baseline", "2.7e+13", "0.001, 0.004, 0.016", "0.001"] in table.rows
    data = json.loads(write_ladder_json(result, rows, target, tmp_path, stable).read_text())
    assert len(data["max_stable_lr"]) == 8 and data["max_stable_lr"][-1]["max_stable_lr"] == LRS[2]


def test_a_ladder_with_one_lr_per_rung_has_no_stable_lr_table():
    one_lr = [o for o in _outcomes() if o.trial.lr == LRS[0]]
    assert rung_stable_lrs(one_lr) == []
