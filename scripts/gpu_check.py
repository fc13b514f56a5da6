#!/usr/bin/env python3
"""gatelab's GPU acceptance check: one run on a GPU machine says whether the CUDA path works and how fast.

    python3 scripts/gpu_check.py OUT_DIR [--budget-s 420]

Run from a checkout. It needs what a stock GPU image has (torch with CUDA, lightning, numpy, scipy,
matplotlib, pyyaml) and no network; not Ray, MLflow, Optuna or pytest (the trainer never imports them), and
not an install: where gatelab is not installed it maps the checkout's folders to the gatelab.* names itself.
It writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md:
  1. the device, torch and CUDA versions, bf16 support;
  2. the checks the gpu-marked tests run (gatelab.trainer.device_checks): every gate family trains a few bf16
     steps, the probes' eager attention equals the fused one within bf16 rounding, resume equals an
     uninterrupted run, and a default CUDA trial trains compiled in bf16;
  3. a `small`-preset trial (GPT-2-small size, the embedded corpus) for a few hundred bf16 steps: the loss
     falls, the probes are finite, checkpoints are written and a resume continues the same curve;
  4. throughput: tokens/s and MFU for the baseline, G1 elementwise and G1 headwise, eager and compiled; the
     gates' step-time overhead (eager and compiled); aggregate tokens/s of 1, 2 and 4 concurrent `laptop`
     trials on the one GPU.
On a machine without CUDA it runs the same sections on the tiny preset and says, section by section, what it
skipped and why (tests/test_gpu_check.py runs it so). Sections run while the time budget lasts, throughput
(which holds the goal figures) before the small trial; what the budget cuts is reported as skipped. The
summaries are rewritten after every section, so a run cut at its limit still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATE_VARIANTS = ("baseline", "g1_elementwise_sigmoid", "g1_headwise_sigmoid")
PACKED_COUNTS = (1, 2, 4)


def use_gatelab(from_checkout: bool) -> dict[str, str]:
    """Import gatelab as installed, or (not installed, or --from-checkout) from this checkout through a folder
    of symlinks named like the installed layout. Returns the environment a child process needs for the same."""
    if not from_checkout:
        try:
            import gatelab.trainer.config.trial  # noqa: F401  (only: is it importable)

            return {}
        except ImportError:
            pass
    shim = Path(tempfile.mkdtemp(prefix="gatelab-checkout-"))
    (shim / "gatelab").mkdir()
    for folder in ("grid", "trainer", "tracking", "ablations"):
        (shim / "gatelab" / folder).symlink_to(ROOT / folder, target_is_directory=True)
    sys.path.insert(0, str(shim))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}


class Budget:
    """Seconds left for the check; a section that would not fit is skipped, saying so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_section(name: str, sections: dict, budget: Budget, needs_s: float, work, *args) -> None:
    """Run one section into sections[name]: ok with its figures, failed with the error, or skipped with why."""
    if needs_s and budget.left() < needs_s:  # a section that needs no time (the environment) always runs
        sections[name] = {
            "status": "skipped",
            "reason": f"time budget: {budget.left():.0f} s left, needs ~{needs_s:.0f} s",
        }
        return
    started = time.monotonic()
    try:
        result = work(*args)
        sections[name] = result if result.get("status") == "skipped" else {"status": "ok", **result}
    except Exception as err:  # a failed section is a finding; the others still run
        sections[name] = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=-8),  # the innermost frames: where it broke
        }
    sections[name]["seconds"] = round(time.monotonic() - started, 1)


def environment(import_mode: str) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "gatelab_from": import_mode,
    }


def device_checks(device: str, work: Path) -> dict:
    from gatelab.trainer import device_checks as checks

    families = checks.FAMILIES if device == "cuda" else ("baseline", "g1_elementwise_sigmoid", "more_experts")
    results = {}
    for variant in families:
        results[variant] = {
            "train": checks.trains_and_probes(variant, work / f"train-{variant}"),
            "eager_vs_fused": checks.eager_matches_fused(variant, device),
        }
    resumes = {
        variant: checks.resume_matches(checks.short_trial(variant), work / f"resume-{variant}", device)
        for variant in ("g1_elementwise_sigmoid", "more_experts")
    }
    compiled = (
        checks.cuda_defaults_resume(work / "cuda-defaults")
        if device == "cuda"
        else "skipped: no CUDA device (a default CUDA trial trains compiled in bf16)"
    )
    note = (
        ""
        if device == "cuda"
        else ("no CUDA device: a CPU rehearsal of 3 families in bf16-mixed; the CUDA run of all families is skipped")
    )
    return {"device": device, "note": note, "families": results, "resume": resumes, "cuda_defaults": compiled}


def small_trial(device: str, work: Path) -> dict:
    from gatelab.trainer import device_checks as checks
    from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ModelChoice, ScheduleConfig, TrialConfig

    cuda = device == "cuda"
    steps = 300 if cuda else 40
    config = TrialConfig(
        name="gpu-check",
        variant="g1_elementwise_sigmoid",
        model=ModelChoice(preset="small" if cuda else "tiny"),
        schedule=ScheduleConfig(max_steps=steps, batch_size=16 if cuda else 8, log_every=10),
        eval=EvalConfig(every=100 if cuda else 20, batches=4, long_context_factors=(1, 2)),
        checkpoint=CheckpointConfig(every=100 if cuda else 20, keep_last=2),
    )
    result = checks.resume_matches(config, work, device)
    assert result["last_loss"] < result["first_loss"], (
        f"the loss did not fall: {result['first_loss']} -> {result['last_loss']}"
    )
    note = "" if cuda else "no CUDA device: the tiny preset for 40 steps in fp32 stands in for `small` in bf16"
    return {"preset": config.model.preset, "steps": steps, "note": note, **result}


def throughput(device: str) -> dict:
    from gatelab.trainer.bench.gates import bench_gates
    from gatelab.trainer.bench.trainer import bench_trainer
    from gatelab.trainer.config.presets import preset

    cuda = device == "cuda"
    modes = (False, True) if cuda else (False,)
    name, steps, batch = ("small", 50, 32) if cuda else ("tiny", 20, 8)
    rows = []
    for compiled in modes:
        for variant in GATE_VARIANTS:
            result = bench_trainer(name, steps=steps, warmup=10, variant=variant, compiled=compiled, batch_size=batch)
            rows.append(
                {
                    "variant": variant,
                    "compiled": compiled,
                    "tokens_per_s": result["gatelab_tokens_per_s"],
                    "mfu_measured": result["gatelab_mfu"]["mfu_measured"],
                    "mfu_datasheet": result["gatelab_mfu"]["mfu_datasheet"],
                    "peak": result["peak"],
                }
            )
    gates = {}
    for compiled in modes:
        timings = bench_gates(
            preset(name), batch_size=batch if cuda else 8, rounds=10, names=list(GATE_VARIANTS[1:]), compiled=compiled
        )
        gates["compiled" if compiled else "eager"] = {
            t.name: {"ratio": t.ratio, "median_ms": t.median_ms} for t in timings
        }
    note = "" if cuda else "no CUDA device: tiny preset, eager only (compile is off by default on the CPU)"
    return {"preset": name, "batch_size": batch, "note": note, "trainer": rows, "gate_overhead": gates}


def packed_worker(out: Path, steps: int, cache: Path) -> None:
    """One of several concurrent `laptop` trials on the GPU: write its median step time."""
    import lightning.pytorch as pl

    from gatelab.trainer.bench.mfu import synchronize
    from gatelab.trainer.config.trial import CheckpointConfig, EvalConfig, ModelChoice, ScheduleConfig, TrialConfig
    from gatelab.trainer.run import run_trial
    from gatelab.trainer.tracker import InMemoryTracker

    class StepTimes(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.last = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            synchronize()
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    config = TrialConfig(
        name="packed",
        model=ModelChoice(preset="laptop"),
        compile=False,
        schedule=ScheduleConfig(max_steps=steps, batch_size=16, log_every=50),
        eval=EvalConfig(every=10 * steps, batches=1, long_context_factors=(1,)),
        checkpoint=CheckpointConfig(every=10 * steps),
    )
    timer = StepTimes()
    with tempfile.TemporaryDirectory() as tmp:
        run_trial(config, InMemoryTracker(), Path(tmp) / "trial", cache, callbacks=(timer,))
    out.write_text(
        json.dumps({"median_step_s": statistics.median(timer.times[10:]), "tokens_per_step": config.tokens_per_step})
    )


def packing(device: str, work: Path, cache: Path, env: dict) -> dict:
    """1, 2 and 4 trial processes at once; the first (alone) tokenizes the corpus into `cache` if no section
    did, so concurrent ones only read it."""
    if device != "cuda":
        return {"status": "skipped", "reason": "no CUDA device: several trials sharing one GPU needs a GPU"}
    rows = {}
    for count in PACKED_COUNTS:
        outs = [work / f"packed-{count}-{i}.json" for i in range(count)]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--packed-worker", str(out), "--steps", "200", "--cache", str(cache)],
                env={**os.environ, **env},
                cwd=ROOT,
            )
            for out in outs
        ]
        for proc in procs:
            proc.wait(timeout=600)
        results = [json.loads(out.read_text()) for out in outs]
        rows[count] = {
            "aggregate_tokens_per_s": sum(r["tokens_per_step"] / r["median_step_s"] for r in results),
            "per_trial_tokens_per_s": [r["tokens_per_step"] / r["median_step_s"] for r in results],
        }
    return {
        "preset": "laptop",
        "note": "eager, 16 x 256 tokens per step; each trial's median step while they share",
        "concurrent": rows,
    }


def markdown(report: dict) -> str:
    env = report["sections"]["environment"]
    lines = [
        f"# gatelab GPU check, {report['date']}",
        "",
        f"{env.get('device')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, bf16 "
        f"{env.get('bf16_supported')}; Python {env.get('python')}; gatelab from {env.get('gatelab_from')}; "
        f"{report['seconds']:.0f} s in all.",
        "",
        "| section | status | figures |",
        "|---|---|---|",
    ]
    for name, section in report["sections"].items():
        if name == "environment":
            continue
        lines.append(f"| {name} | {section['status']} | {_figures(name, section)} |")
    return "\n".join(lines) + "\n"


def _figures(name: str, section: dict) -> str:
    if section["status"] == "skipped":
        return section["reason"]
    if section["status"] == "failed":
        return section["error"].replace("|", "/")[:300]
    note = f"{section['note']}. " if section.get("note") else ""
    if name == "device_checks":
        worst = max(f["eager_vs_fused"]["eager_vs_fused"] for f in section["families"].values())
        return (
            f"{note}{len(section['families'])} families trained in bf16 on {section['device']}; eager vs fused "
            f"logits at most {worst:.3g} apart; resume worst relative difference "
            f"{max(r['worst_relative_difference'] for r in section['resume'].values()):.2g}"
        )
    if name == "small_trial":
        return (
            f"{note}{section['preset']}, {section['steps']} steps: loss {section['first_loss']:.3f} -> "
            f"{section['last_loss']:.3f}, resumed from step {section['resumed_from']} (worst relative "
            f"difference {section['worst_relative_difference']:.2g}), probes "
            + ", ".join(f"{key} {value:.3g}" for key, value in section["probes"].items())
        )
    if name == "throughput":
        rows = "; ".join(
            f"{r['variant']} {'compiled' if r['compiled'] else 'eager'} "
            f"{r['tokens_per_s']:,.0f} tok/s MFU {r['mfu_measured']:.1%}"
            for r in section["trainer"]
        )
        gates = "; ".join(
            f"{mode}: " + ", ".join(f"{n} {g['ratio']:.3f}" for n, g in timings.items())
            for mode, timings in section["gate_overhead"].items()
        )
        return f"{note}{section['preset']} batch {section['batch_size']}: {rows}. Gate step time / baseline: {gates}"
    if name == "packing":
        return "; ".join(
            f"{count} at once: {row['aggregate_tokens_per_s']:,.0f} tok/s"
            for count, row in section["concurrent"].items()
        )
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420,
        help="start no section that would not fit in this many seconds (default 420: under 8 minutes)",
    )
    parser.add_argument(
        "--from-checkout", action="store_true", help="use this checkout even where gatelab is installed"
    )
    parser.add_argument("--packed-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = use_gatelab(args.from_checkout)
    if args.packed_worker:
        packed_worker(Path(args.packed_worker), args.steps, Path(args.cache))
        return 0
    if not args.out:
        parser.error("the output folder is required")
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gatelab-gpu-check-"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started, budget, sections = time.monotonic(), Budget(args.budget_s), {}
    plan = (
        ("environment", 0, environment, "checkout" if env else "installed"),
        ("device_checks", 60, device_checks, device, work / "checks"),
        ("throughput", 150 if device == "cuda" else 30, throughput, device),
        ("small_trial", 90, small_trial, device, work / "small"),
        ("packing", 60 if device == "cuda" else 0, packing, device, work / "packing", work / "small" / "cache", env),
    )
    for name, needs_s, work_fn, *work_args in plan:
        print(f"[{time.monotonic() - started:5.0f} s] {name} ...", flush=True)
        run_section(name, sections, budget, needs_s, work_fn, *work_args)
        # written after every section: a run killed at its time limit still leaves what it measured
        write_summaries(out, sections, time.monotonic() - started)
    print(markdown(json.loads((out / "gpu_check.json").read_text())))
    return 1 if any(s["status"] == "failed" for s in sections.values()) else 0


def write_summaries(out: Path, sections: dict, seconds: float) -> None:
    report = {"date": time.strftime("%Y-%m-%d"), "seconds": seconds, "sections": sections}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


if __name__ == "__main__":
    sys.exit(main())
