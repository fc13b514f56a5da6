"""How a failed trial's reason is worded: `<reason>: <first line>`, out-of-memory told apart (deterministic: a
retry would run out of memory again, so it is recorded, not retried)."""

from __future__ import annotations

from gatelab.trainer.config.outcome import DiskFull

# How allocators word running out: torch's CUDA OOM ("CUDA out of memory"), torch's CPU allocator
# ("DefaultCPUAllocator: can't allocate memory"), Ray's memory monitor ("...running low on memory").
_OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or any(word in str(error).lower() for word in _OUT_OF_MEMORY_WORDS)


def failure_reason(error: BaseException, out_of_memory: bool = False) -> str:
    """The `gatelab.error` text of a failed trial: "<reason>: <first line>", the reason `out_of_memory` when
    the error says so (deterministic: a retry would run out of memory again), `disk_full` when a checkpoint
    did not fit (trainer/checkpoint.py DiskFull), else the error's type."""
    text = str(error)
    if out_of_memory or is_out_of_memory(error):
        reason = "out_of_memory"
    elif isinstance(error, DiskFull):
        reason = "disk_full"
    else:
        reason = type(error).__name__
    return f"{reason}: {text.splitlines()[0] if text else ''}"
