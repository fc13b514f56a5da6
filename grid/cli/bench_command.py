"""`gatelab bench gates|trainer|grid|report`: the benchmarks, each a ratio measured side by side in one run. The
gates and trainer benchmarks import torch, only when they run."""

from __future__ import annotations

import argparse
import json

from gatelab.grid.cli.terminal import table
from gatelab.grid.spec.examples import resolve_config_path
from gatelab.trainer.config.presets import PRESETS, preset


def _tflops(flops: float | None) -> str:
    return f"{flops / 1e12:.3g} TFLOP/s" if flops else "n/a"


def _percent(fraction: float | None) -> str:
    return f"{fraction:.1%}" if fraction is not None else "n/a"


def _bench_gates(args: argparse.Namespace) -> int:
    from gatelab.trainer.bench.gates import bench_gates

    results = bench_gates(preset(args.model), rounds=args.rounds, compiled=args.compile)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
        return 0
    mode = "compiled" if args.compile else "eager"
    print(
        f"forward+backward step ({mode}), preset {args.model}: median over rounds of (variant / baseline step "
        "timed just before it); the baseline's own row is the noise floor"
    )
    targets = {
        "g1_elementwise_sigmoid": lambda r: f"<= {1 + r.extra_flop_share + 0.02:.3f}",
        "g1_headwise_sigmoid": lambda r: "<= 1.030",
    }
    cells = [
        (
            r.name,
            f"{r.median_ms:.2f}",
            f"{r.ratio:.3f}",
            f"{r.extra_flop_share:.3f}",
            targets[r.name](r) if r.name in targets else "",
        )
        for r in results
    ]
    print("\n".join(table(("name", "ms", "ratio", "+FLOPs", "target"), cells, right=(1, 2, 3))))
    return 0


def _bench_trainer(args: argparse.Namespace) -> int:
    from gatelab.trainer.bench.trainer import bench_trainer

    result = bench_trainer(
        args.model, steps=args.steps, variant=args.variant, compiled=args.compile, batch_size=args.batch_size
    )
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    peak = result["peak"]
    print(
        f"training loop throughput, preset {args.model}, variant {args.variant}, {result['steps']} step pairs "
        "in lockstep"
    )
    print(f"  model FLOPs per token (fwd+bwd, closed form): {result['flops_per_token']:.4g}")
    print(
        f"  peak on {peak['device']}: {_tflops(peak['measured_flops'])} measured ({peak['dtype']} matmul), "
        f"datasheet {_tflops(peak['datasheet_flops'])}"
    )
    gatelab_name = "gatelab (Lightning) loop, compiled" if args.compile else "gatelab (Lightning) loop"
    for name, tokens, mfu in (
        ("hand-written PyTorch loop", result["hand_tokens_per_s"], result["hand_mfu"]),
        (gatelab_name, result["gatelab_tokens_per_s"], result["gatelab_mfu"]),
    ):
        print(
            f"  {name + ':':37} {tokens:,.0f} tokens/s (median step), {_tflops(mfu['achieved_flops'])}, "
            f"MFU {_percent(mfu['mfu_measured'])} of measured, {_percent(mfu['mfu_datasheet'])} of datasheet"
        )
    q1, _, q3 = result["ratio_quartiles"]
    print(f"  per-step ratio quartiles {q1:.3f} / {q3:.3f}")
    if args.compile:
        print(f"  compiled / eager tokens/s {result['ratio']:.3f}  (compile is the default where this is > 1)")
    else:
        print(f"  ratio {result['ratio']:.3f}  (target >= 0.95)")
    return 0


def _bench_grid(args: argparse.Namespace) -> int:
    from gatelab.grid.dispatch.bench_grid import SMOKE, bench_grid

    result = bench_grid(resolve_config_path(args.grid) if args.grid else SMOKE, slots=args.slots)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"grid {result['grid']}: {result['finished']}/{result['trials']} trials finished on "
        f"{result['slots']} slots in {result['wall_s']:.1f} s ({result['compute_s']:.1f} s of trial compute)"
    )
    print(
        f"  efficiency {result['efficiency']:.3f}  (target >= 0.90); {result['efficiency_ray_running']:.3f} "
        f"without Ray's start ({result['ray_start_s']:.1f} s), as when joining a running Ray"
    )
    print(
        f"  median per-trial overhead {result['overhead_s']:.2f} s, max {result['overhead_max_s']:.2f} s  "
        "(target <= 2 s)"
    )
    print(
        "  slot-time lost: "
        + ", ".join(f"{name.replace('_', ' ')} {share:.1%}" for name, share in result["lost"].items())
    )
    print(
        f"  load+validate+expand+hash {result['expand_10k_trials']} trials: {result['expand_10k_s']:.2f} s  "
        "(target <= 2 s)"
    )
    return 0


def _bench_report(args: argparse.Namespace) -> int:
    from gatelab.grid.dispatch.bench_report import bench_report

    result = bench_report(args.trials)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    seconds = result["seconds"]
    print(
        f"grid of {result['trials']} finished synthetic trials (built in {result['build_s']:.0f} s), each command "
        "timed as a user runs it (a fresh process):"
    )
    print(
        f"  status {seconds['status']:.2f} s  resubmit (nothing to do) {seconds['resubmit']:.2f} s  "
        f"report {seconds['report']:.2f} s  (target <= {result['report_target_s']:.0f} s)"
    )
    return 0


BENCHMARKS = {"gates": _bench_gates, "trainer": _bench_trainer, "grid": _bench_grid, "report": _bench_report}


def cmd_bench(args: argparse.Namespace) -> int:
    return BENCHMARKS[args.what](args)


def add_bench_command(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks, measured side by side in one run")
    bench.add_argument("what", choices=list(BENCHMARKS))
    bench.add_argument("--model", default="laptop", choices=sorted(PRESETS))
    bench.add_argument("--rounds", type=int, default=15, help="gates: timed rounds per variant")
    bench.add_argument("--steps", type=int, default=60, help="trainer: steps per loop")
    bench.add_argument("--variant", default="baseline", help="trainer: the catalog variant to train")
    bench.add_argument("--batch-size", type=int, default=8, help="trainer: sequences per step")
    bench.add_argument(
        "--compile",
        action="store_true",
        help="gates, trainer: time torch.compile'd steps (trainer: against the eager hand loop)",
    )
    bench.add_argument("--grid", default=None, help="grid: the grid to run (default: the shipped smoke grid)")
    bench.add_argument("--slots", type=int, default=2, help="grid: concurrent trials")
    bench.add_argument("--trials", type=int, default=1000, help="report: finished trials in the synthetic grid")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
