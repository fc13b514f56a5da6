"""Benchmarks of the trainer: tokens/s and MFU, gate overhead, the machine's matmul peak."""
