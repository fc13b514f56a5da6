"""scripts/gpu_check.py on a machine without CUDA, as docs/gpu.md says it runs there: every section either
runs its CPU stand-in or is skipped with the reason, and the JSON and Markdown summaries are written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA run; on a GPU the script runs for real")
def test_gpu_check_runs_on_the_cpu_from_the_checkout_and_says_what_it_skipped(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(tmp_path), "--from-checkout"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["environment", "device_checks", "throughput", "small_trial", "packing"]
    assert sections["environment"]["gatelab_from"] == "checkout" and sections["environment"]["cuda"] is None
    checks = sections["device_checks"]
    assert checks["status"] == "ok" and checks["device"] == "cpu" and "no CUDA device" in checks["note"]
    assert set(checks["families"]) == {"baseline", "g1_elementwise_sigmoid", "more_experts"}
    assert checks["cuda_defaults"].startswith("skipped: no CUDA device")
    trial = sections["small_trial"]
    assert trial["status"] == "ok" and trial["last_loss"] < trial["first_loss"] and trial["resumed_from"] == 20
    throughput = sections["throughput"]
    assert throughput["status"] == "ok" and {r["compiled"] for r in throughput["trainer"]} == {False}
    assert all(0 < r["mfu_measured"] < 1 for r in throughput["trainer"])
    assert sections["packing"] == {
        "status": "skipped",
        "seconds": sections["packing"]["seconds"],
        "reason": "no CUDA device: several trials sharing one GPU needs a GPU",
    }
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "| packing | skipped | no CUDA device" in summary and "| small_trial | ok |" in summary


def test_gpu_check_with_no_time_left_skips_every_section_and_says_so(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(tmp_path), "--budget-s", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert sections["environment"]["status"] == "ok"
    for name in ("device_checks", "small_trial", "throughput"):
        assert sections[name]["status"] == "skipped" and sections[name]["reason"].startswith("time budget"), name
