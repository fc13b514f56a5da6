"""`gatelab bench gates|trainer|grid|report|chaos|ladder|ledger`: the benchmarks, each a ratio measured side by
side in one run (chaos: a fault-tolerance soak, checked against an undisturbed run of the same grid; ledger: the
tracking server under load, every point checked). The gates and trainer benchmarks import torch, only when they
run."""

from __future__ import annotations

import argparse
import json

from gatelab.grid.cli.bench_scale_command import SCALE_STEPS, SCALE_TRIALS, bench_scale_command
from gatelab.grid.cli.terminal import table
from gatelab.grid.spec.examples import resolve_config_path
from gatelab.trainer.config.presets import PRESETS, preset

# Each benchmark's defaults, written once: the help says them and the command passes them on.
TRIALS = {
    "report": 1000,
    "chaos": 24,
    "ladder": 500,
    "scale": 5000,
}  # finished trials of the synthetic grid; chaos: trials; ladders
STEPS = {"trainer": 60, "chaos": 100}  # steps per loop; chaos: per trial
KILLS, SIGTERM_SHARE = 12, 0.25  # chaos
LEDGER_LOAD = {"writers": 16, "metrics": 250, "rate": 4.0, "seconds": 30.0}  # ledger: above this machine's server


def _or(value, default):
    return default if value is None else value


def _per(defaults: dict) -> str:
    return "; ".join(f"{name}: {value}" for name, value in defaults.items())


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
        args.model,
        steps=_or(args.steps, STEPS["trainer"]),
        variant=args.variant,
        compiled=args.compile,
        batch_size=args.batch_size,
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
    from gatelab.grid.bench.grid import SMOKE, bench_grid

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
    from gatelab.grid.bench.report import bench_report

    result = bench_report(_or(args.trials, TRIALS["report"]))
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


def _bench_chaos(args: argparse.Namespace) -> int:
    from gatelab.grid.bench.chaos_soak import bench_chaos

    result = bench_chaos(
        trials=_or(args.trials, TRIALS["chaos"]),
        kills=args.kills,
        seed=args.seed,
        steps=_or(args.steps, STEPS["chaos"]),
        sigterm_share=args.sigterm_share,
        keep=args.keep,
    )
    # Exit 1 on any violation, and when no signal was sent: then the soak tested nothing.
    code = 1 if result["violations"] or not result["kills"] else 0
    if args.json:
        print(json.dumps(result, indent=1))
        return code
    signals = ", ".join(f"{n} {name}" for name, n in sorted(result["signals"].items())) or "none"
    print(
        f"chaos soak: {result['trials']} trials of {result['steps']} steps (checkpoint every "
        f"{result['checkpoint_every']}), seed {result['seed']}, on a local Ray"
    )
    print(
        f"  kills {result['kills']} ({signals}) of {result['kills_wanted']} wanted, in {result['killed_trials']} "
        f"trials, {result['kills_past_imports']} past the worker's imports (the trials' stored steps then: "
        f"{result['kill_steps']}); retries "
        f"{result['retries']} (from the runs' attempt tags: a worker killed before it opened its run leaves none)"
    )
    print(
        f"  lost {result['lost']}  duplicated runs {result['duplicated_runs']}  duplicated steps "
        f"{result['duplicated_steps']}  missing steps {result['missing_steps']}  largest loss difference from the "
        f"undisturbed run {result['max_loss_difference']:.2g}"
    )
    print(
        f"  wall time {result['wall_s']:.1f} s with chaos, {result['undisturbed_wall_s']:.1f} s undisturbed; "
        f"signals at {result['kill_times_s']} s"
    )
    print(f"  {result['violations']} violations" + "".join(f"\n    {line}" for line in result["violation_lines"]))
    if not result["kills"]:
        print("  no signal was sent before the grid ended, so nothing was tested: give it more --trials or --steps")
    return code


def _bench_ladder(args: argparse.Namespace) -> int:
    from gatelab.tracking.stats.ladder_simulation import CROSSING, EFFECT, NULL, STUDY_TARGET, Ladder, study

    ladders = _or(args.trials, TRIALS["ladder"])
    shape = Ladder(seeds=args.ladder_seeds)
    studies = {
        name: study(
            law,
            shape,
            variant="g1",
            target_flops=STUDY_TARGET,
            ladders=ladders,
            resamples=args.resamples,
            seed=args.seed,
        )  # fmt: skip
        for name, law in (("effect", EFFECT), ("null", NULL), ("crossing", CROSSING))
    }
    if args.json:
        print(json.dumps({name: s.__dict__ for name, s in studies.items()}, indent=1))
        return 0
    print(
        f"ladder fit on {ladders} synthetic ladders a law: {len(shape.rung_flops)} rungs "
        f"{shape.rung_flops[0]:.3g}-{shape.rung_flops[-1]:.3g} FLOPs x {shape.seeds} seeds, target "
        f"{STUDY_TARGET:.3g} FLOPs, {args.resamples} bootstrap resamples, 90% intervals"
    )
    rows = [
        (
            name,
            f"{s.true_delta:+.4f}",
            f"{s.coverage:.1%}",
            f"{s.verdicts['holds']:.1%}",
            f"{s.verdicts['flips']:.1%}",
            f"{s.verdicts['inconclusive']:.1%}",
            f"{s.backtest_inside:.1%}",
            f"{s.seconds:.0f} s",
        )
        for name, s in studies.items()
    ]
    header = ("law", "true delta", "coverage", "holds", "flips", "inconclusive", "backtest inside", "time")
    print("\n".join(table(header, rows, right=range(1, 8))))
    return 0


def _bench_ledger(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gatelab.grid.bench.ledger import bench_ledger, bench_ledger_home, violations

    load = {k: _or(getattr(args, k), v) for k, v in LEDGER_LOAD.items()}
    if args.uri:
        results = [{"backend": args.uri, "server_workers": "?", **bench_ledger(args.uri, **load)}]
    else:
        home = Path(args.home) if args.home else None
        backends = [None, args.postgres] if args.postgres else [None]  # side by side: SQLite, then PostgreSQL
        results = [bench_ledger_home(home if b is None else None, backend=b, **load) for b in backends]
    problems = [violations(r) for r in results]
    if args.json:
        print(json.dumps([{**r, "violations": v} for r, v in zip(results, problems)], indent=1))
    else:
        for result, found in zip(results, problems):
            _print_ledger(result, found)
    return 1 if any(problems) else 0


def _print_ledger(result: dict, problems: list[str]) -> None:
    lag, cores = result["close_lag_s"], result["server_cores"]
    print(
        f"ledger on {result['backend']} ({result['server_workers']} server workers): {result['writers']} writers x "
        f"{result['metrics_per_step']} metrics x {result['steps_per_s']:g} steps/s for {result['seconds']:g} s, "
        "each a run as a trial opens and ends it"
    )
    print(
        f"  offered {result['offered_points_per_s']:,.0f} points/s  sustained {result['sustained_points_per_s']:,.0f}"
        f" points/s  steps logged {result['steps_logged']:,} of {result['steps_offered']:,} offered  "
        f"wall {result['wall_s']:.1f} s"
    )
    print(
        (f"  close lag median {lag['median']:.1f} s, max {lag['max']:.1f} s  " if lag else "  close lag n/a  ")
        + (f"server CPU {cores:.2f} cores" if cores is not None else "server CPU n/a (not this machine's)")
    )
    print(
        f"  stored {result['points_stored']:,} points: lost {result['lost']}, doubled {result['doubled']}, wrong "
        f"{result['wrong_values']}; runs not finished {result['runs_not_finished']}"
    )
    print("  " + ("; ".join(problems) if problems else "nothing lost or doubled, every run finished"))


BENCHMARKS = {
    "gates": _bench_gates,
    "trainer": _bench_trainer,
    "grid": _bench_grid,
    "report": _bench_report,
    "chaos": _bench_chaos,
    "ladder": _bench_ladder,
    "ledger": _bench_ledger,
    "scale": bench_scale_command,
}


def cmd_bench(args: argparse.Namespace) -> int:
    return BENCHMARKS[args.what](args)


def add_bench_command(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks, measured side by side in one run")
    bench.add_argument("what", choices=list(BENCHMARKS))
    bench.add_argument("--model", default="laptop", choices=sorted(PRESETS))
    bench.add_argument("--rounds", type=int, default=15, help="gates: timed rounds per variant")
    bench.add_argument(
        "--steps", type=int, default=None, help=f"steps per loop or trial ({_per(STEPS)}, scale {SCALE_STEPS})"
    )
    bench.add_argument("--variant", default="baseline", help="trainer: the catalog variant to train")
    bench.add_argument("--batch-size", type=int, default=8, help="trainer: sequences per step")
    bench.add_argument(
        "--compile",
        action="store_true",
        help="gates, trainer: time torch.compile'd steps (trainer: against the eager hand loop)",
    )
    bench.add_argument("--grid", default=None, help="grid: the grid to run (default: the shipped smoke grid)")
    bench.add_argument("--slots", type=int, default=2, help="grid: concurrent trials")
    bench.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"report: trials of a synthetic grid; chaos, scale: trials; ladder: ladders per law ({_per(TRIALS)}, "
        f"scale {SCALE_TRIALS})",
    )
    bench.add_argument("--resamples", type=int, default=300, help="ladder: bootstrap resamples per ladder")
    bench.add_argument("--ladder-seeds", type=int, default=3, help="ladder: seeds per rung and variant")
    bench.add_argument("--kills", type=int, default=KILLS, help="chaos: trial workers to signal")
    bench.add_argument(
        "--seed", type=int, default=0, help="chaos: seeds when, whom and which signal; ladder: the draws"
    )
    bench.add_argument(
        "--sigterm-share", type=float, default=SIGTERM_SHARE, help="chaos: share of SIGTERM (else SIGKILL)"
    )
    bench.add_argument("--keep", default=None, help="chaos: keep both homes and the submits' logs in this folder")
    bench.add_argument("--writers", type=int, default=None, help=f"ledger: writer processes ({LEDGER_LOAD['writers']})")
    bench.add_argument("--metrics", type=int, default=None, help=f"ledger: metrics a step ({LEDGER_LOAD['metrics']})")
    bench.add_argument("--rate", type=float, default=None, help=f"ledger: steps/s a writer ({LEDGER_LOAD['rate']:g})")
    bench.add_argument(
        "--seconds", type=float, default=None, help=f"ledger: seconds of logging ({LEDGER_LOAD['seconds']:g})"
    )
    bench.add_argument("--uri", default=None, help="ledger: a tracking server to load (default: a fresh home's)")
    bench.add_argument("--home", default=None, help="ledger: load this home's server (default: a fresh home's)")
    bench.add_argument(
        "--postgres",
        default=None,
        metavar="URI",
        help="ledger: also run the load on a fresh home whose ledger is this PostgreSQL database, side by side",
    )
    bench.add_argument(
        "--concurrent", type=int, nargs="+", default=None, help="scale: levels of concurrent trials (64 128 256)"
    )
    bench.add_argument("--nodes", type=int, default=4, help="scale: simulated worker nodes")
    bench.add_argument("--step-s", type=float, default=0.1, help="scale: seconds per simulated step")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
