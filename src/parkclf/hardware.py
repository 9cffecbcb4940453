"""What this machine can do fast, detected once at start-up."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def bf16_supported() -> bool:
    """bf16 where it is native: CUDA with bf16, or a CPU with AVX512-BF16/AMX (else autocast is emulated and slower)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
