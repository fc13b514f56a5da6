"""Model FLOPs utilisation (MFU): the model's FLOPs per second over the machine's peak, both measured in
the same process, so a benchmark's fraction says how much of this machine the training step uses.

Model FLOPs are the catalog's closed form (trainer/config/model_cost.py: every matmul, attention included) times 3
for forward plus backward; recomputation or padding is not counted, as in the usual MFU definition (PaLM,
Chowdhery et al. 2022, App. B). The peak is one large matmul timed here: bf16 on CUDA (the precision trials
train in), fp32 on the CPU; on CUDA the datasheet's dense bf16 figure is given beside it.
"""

from __future__ import annotations

import time

import torch

from gatelab.trainer.config.catalog import Variant
from gatelab.trainer.config.model_cost import forward_flops_per_token
from gatelab.trainer.config.presets import ModelConfig

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s, by a name fragment of
# torch.cuda.get_device_name(); SXM parts (the PCIe/NVL variants are lower: the measured peak is the one to use).
DATASHEET_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
    "B200": 2250.0,
}


def synchronize() -> None:
    """Wait for queued CUDA work, so that a wall-clock timer measures it (nothing to wait for on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def training_flops_per_token(base: ModelConfig, variant: Variant, seq_len: int) -> float:
    """Forward plus backward (3x the forward matmuls) per trained token."""
    return 3 * forward_flops_per_token(base, variant, seq_len).total


def measured_matmul_peak(device: str | torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` timed (size x size) @ (size x size) matmuls after one warm-up."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    best = float("inf")
    for attempt in range(repeats + 1):
        synchronize()
        start = time.perf_counter()
        a @ b
        synchronize()
        if attempt:  # the first is the warm-up (allocation, kernel choice)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def machine_peak() -> dict:
    """The peak a training step on this machine is measured against: bf16 on CUDA, fp32 on the CPU."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        datasheet = next((tflops for fragment, tflops in DATASHEET_BF16_TFLOPS.items() if fragment in name), None)
        return {
            "device": name,
            "dtype": "bf16",
            "measured_flops": measured_matmul_peak("cuda", torch.bfloat16, 8192),
            "datasheet_flops": datasheet * 1e12 if datasheet else None,
        }
    return {
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "dtype": "fp32",
        "measured_flops": measured_matmul_peak("cpu", torch.float32, 2048),
        "datasheet_flops": None,
    }


def utilisation(flops_per_token: float, tokens_per_s: float, peak: dict) -> dict:
    """Achieved FLOP/s and its fraction of the measured (and, where known, the datasheet) peak."""
    achieved = flops_per_token * tokens_per_s
    return {
        "achieved_flops": achieved,
        "mfu_measured": achieved / peak["measured_flops"],
        "mfu_datasheet": achieved / peak["datasheet_flops"] if peak["datasheet_flops"] else None,
    }
