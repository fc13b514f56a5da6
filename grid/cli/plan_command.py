"""`gatelab plan GRID`: from a grid's finished seeds, how noisy each comparison with the baseline is, and how
many paired seeds would resolve a given effect at a given power. For any grid with a seed axis or a `seeds:`
policy; nothing is started."""

from __future__ import annotations

import argparse
import json

from gatelab.grid.cli.arguments import add_home
from gatelab.grid.cli.grid_commands import _load, _records, _store_no_create
from gatelab.grid.cli.terminal import table
from gatelab.grid.spec.config_loader import ConfigError
from gatelab.grid.spec.examples import WHERE_NAMES_RESOLVE
from gatelab.grid.spec.seed_policy import BASELINE, comparisons
from gatelab.trainer.config.metric_names import FINAL_VAL_LOSS


def cmd_plan(args: argparse.Namespace) -> int:
    from gatelab.tracking.stats.rows import mean_of, mean_std
    from gatelab.tracking.stats.seed_plan import comparison_differences
    from gatelab.tracking.stats.sequential import seeds_to_resolve

    spec, trials = _load(args)
    if not 0 < args.power < 1 or not 0 < args.alpha < 1 or not args.effect > 0:
        raise ValueError("--effect must be > 0, --power and --alpha between 0 and 1")
    comps = comparisons(trials, spec)
    if not comps or not any(c.baseline for c in comps):
        raise ConfigError("axes.variant", f"plan compares variants with {BASELINE!r}: the grid has no baseline trials")
    metric = args.metric or (spec.seeds.metric if spec.seeds else FINAL_VAL_LOSS)
    records = _records(spec, _store_no_create(args.home))
    rows = []
    for comp in comps:
        diffs = mean_std(comparison_differences(comp, records, metric).values())
        sd = diffs.std if diffs else None
        needed = seeds_to_resolve(sd, args.effect, args.power, args.alpha) if sd is not None else None
        rows.append(
            {
                "comparison": comp.name,
                "paired_seeds": diffs.n if diffs else 0,
                "mean": mean_of(diffs),
                "sd": sd,
                "seeds_needed": needed,
            }
        )
    if args.json:
        print(
            json.dumps(
                {"metric": metric, "effect": args.effect, "power": args.power, "alpha": args.alpha, "rows": rows},
                indent=1,
            )
        )
        return 0
    cells = [
        (
            r["comparison"],
            str(r["paired_seeds"]),
            f"{r['mean']:+.4g}" if r["mean"] is not None else "-",
            f"{r['sd']:.3g}" if r["sd"] is not None else "-",
            str(r["seeds_needed"]) if r["seeds_needed"] is not None else "-",
        )
        for r in rows
    ]
    print(
        "\n".join(table(("comparison", "seeds", "mean diff", "sd of diff", "seeds needed"), cells, right=(1, 2, 3, 4)))
    )
    print(
        f"{metric}, variant - baseline on paired seeds; seeds needed: to find a true difference of {args.effect:g} "
        f"with power {args.power:g} at two-sided alpha {args.alpha:g} (paired t-test; one comparison, no correction "
        "for looks or for the grid's other comparisons); a pair: a seed both trials finished (a diverged one forms "
        "none); '-': fewer than two pairs"
    )
    return 0


def add_plan_command(commands) -> None:
    plan = commands.add_parser("plan", help="seeds a comparison needs, from finished seeds")
    plan.add_argument("grid", help=f"grid: {WHERE_NAMES_RESOLVE}")
    plan.add_argument("--set", action="append", metavar="dotted.key=value", help="override a grid field")
    add_home(plan)
    plan.add_argument(
        "--metric", default=None, help="summary metric (default: the seeds policy's, else final_val_loss)"
    )
    plan.add_argument("--effect", type=float, default=0.01, help="difference to resolve, in the metric's units")
    plan.add_argument("--power", type=float, default=0.8)
    plan.add_argument("--alpha", type=float, default=0.05)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)
