"""`gatelab bench scale`: the grid loop at cluster scale, simulated (grid/bench/scale.py), as a table of lines."""

from __future__ import annotations

import argparse
import json

SCALE_TRIALS, SCALE_STEPS = 5000, 50  # the large grid's trials; steps per simulated trial


def bench_scale_command(args: argparse.Namespace) -> int:
    from gatelab.grid.bench.scale import bench_scale

    result = bench_scale(
        args.concurrent or [64, 128, 256],
        args.trials or SCALE_TRIALS,
        nodes=args.nodes,
        steps=args.steps or SCALE_STEPS,
        step_s=args.step_s,
        out=lambda line: print(line, flush=True),
    )
    if args.json:
        print(json.dumps(result, indent=1))
        return 1 if result["large"]["problems"] else 0
    print(f"simulated cluster: {args.nodes} worker nodes; trials of {result['steps']} steps x {args.step_s:g} s")
    for level in [*result["levels"], result["large"]]:
        over, warm, lag, status = (
            level[k]
            for k in ("dispatch_overhead_s", "dispatch_overhead_warm_worker_s", "close_lag_s", "status_while_running_s")
        )
        print(
            f"  {level['concurrent']} {level['slots']} slots, {level['trials']} trials: wall {level['wall_s']:.0f} s "
            f"({level['trials_per_min']:.0f} trials/min)  overhead/trial median {over['median']:.2f} s "
            f"(p90 {over['p90']:.2f}; warm worker {warm['median']:.2f})  close lag p90 {lag['p90']:.2f} s  "
            + (f"status while running median {status['median']:.2f} s (max {status['max']:.2f})  " if status else "")
            + f"driver RSS peak {level['driver_rss_mb']['peak']:.0f} MB"
        )
    for line in result["not_run"]:
        print(f"  not run: {line}")
    large = result["large"]
    print(
        f"  node removed at {large['node_removed_at_s']:.0f} s: {large['trials_retried']} trials retried elsewhere; "
        + (
            "; ".join(large["problems"][:5])
            if large["problems"]
            else "every trial finished in one run, every step once"
        )
    )
    after = result["after"]
    print(f"  after: `gatelab status` {after['status_s']:.2f} s, no-op resubmit {after['noop_resubmit_s']:.2f} s")
    return 1 if large["problems"] or any(level["problems"] for level in result["levels"]) else 0
