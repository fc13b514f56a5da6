"""The trainer and gate benchmarks' arithmetic and modes on the CPU (tiny preset): MFU from the closed-form
FLOPs and a peak measured in the same run, compiled against eager. Their figures are benchmarks, not
asserted here; what is asserted is that each number is there and consistent with the others."""

import json

import pytest

from gatelab.grid.cli.main import main
from gatelab.trainer.bench.gates import bench_gates
from gatelab.trainer.bench.mfu import measured_matmul_peak, training_flops_per_token, utilisation
from gatelab.trainer.bench.trainer import bench_trainer
from gatelab.trainer.config.catalog import get_variant
from gatelab.trainer.config.model_cost import forward_flops_per_token
from gatelab.trainer.config.presets import preset

pytestmark = [pytest.mark.slow]


def test_training_flops_are_three_forwards_of_the_closed_form():
    laptop, g1 = preset("laptop"), get_variant("g1_elementwise_sigmoid")
    assert training_flops_per_token(laptop, g1, 256) == 3 * forward_flops_per_token(laptop, g1, 256).total


def test_utilisation_divides_achieved_by_the_peaks():
    peak = {"measured_flops": 2e12, "datasheet_flops": 4e12}
    assert utilisation(1e6, 1e6, peak) == {"achieved_flops": 1e12, "mfu_measured": 0.5, "mfu_datasheet": 0.25}
    assert utilisation(1e6, 1e6, {**peak, "datasheet_flops": None})["mfu_datasheet"] is None


def test_the_cpu_peak_is_a_measured_matmul_rate():
    import torch

    flops = measured_matmul_peak("cpu", torch.float32, 256, repeats=2)
    assert 1e8 < flops < 1e14  # between a very slow core and far more than any CPU


@pytest.fixture(scope="module")
def compiled_bench():
    return bench_trainer("tiny", steps=14, warmup=4, variant="g1_elementwise_sigmoid", compiled=True)


def test_bench_trainer_compiled_reports_tokens_ratio_and_mfu(compiled_bench):
    result = compiled_bench
    assert result["compiled"] is True and result["variant"] == "g1_elementwise_sigmoid" and result["steps"] == 10
    assert result["peak"]["dtype"] == "fp32" and result["peak"]["datasheet_flops"] is None
    for loop in ("gatelab", "hand"):
        mfu = result[f"{loop}_mfu"]
        assert mfu["achieved_flops"] == pytest.approx(result["flops_per_token"] * result[f"{loop}_tokens_per_s"])
        assert 0 < mfu["mfu_measured"] < 1 and mfu["mfu_datasheet"] is None
    assert result["ratio"] > 0 and len(result["ratio_quartiles"]) == 3


def test_bench_gates_compiled_times_every_variant_against_the_baseline():
    results = {
        r.name: r for r in bench_gates(preset("tiny"), rounds=2, warmup=1, names=["g1_headwise_sigmoid"], compiled=True)
    }
    assert set(results) == {"baseline", "g1_headwise_sigmoid"} and all(r.compiled for r in results.values())
    assert all(r.ratio > 0 and r.median_ms > 0 for r in results.values())


def test_bench_trainer_json_from_the_command_line(capsys):
    assert main(["bench", "trainer", "--model", "tiny", "--steps", "12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["compiled"] is False and result["gatelab_mfu"]["mfu_measured"] > 0


@pytest.mark.mlflow
def test_bench_report_times_status_resubmit_and_report_on_a_synthetic_grid(capsys):
    assert main(["bench", "report", "--trials", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trials"] == 20 and set(result["seconds"]) == {"status", "resubmit", "report"}
    assert all(seconds > 0 for seconds in result["seconds"].values())
