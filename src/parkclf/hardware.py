"""What this machine can do fast, detected once, and how a benchmark or a log line names it."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# The CPU features that decide which engine is fastest: int8 dot products (AVX-512 VNNI, AVX-VNNI, AMX) and bf16
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_threads() -> int:
    """Cores this process may use: OMP_NUM_THREADS when set (several processes sharing a machine), else what the
    affinity mask allows (a Space's cgroup or taskset can give fewer than the machine has)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())


def cpu_flags() -> list[str]:
    """The speed-relevant flags this CPU has, in SPEED_FLAGS order (AVX2-only machines show just avx2)."""
    flags = set(next((line.split(":", 1)[1].split() for line in _cpuinfo().splitlines()
                      if line.startswith("flags")), []))
    return [f for f in SPEED_FLAGS if f in flags]


def describe() -> str:
    """One line for a log or a benchmark's header: the CPU's name, the cores this process may use, its flags."""
    return f"{cpu_name()}, {cpu_threads()} of {os.cpu_count()} cores, {' '.join(cpu_flags()) or 'no AVX2'}"


def machine() -> dict:
    """What a benchmark's JSON records beside its figures."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "bf16": bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags())),
            "cores": os.cpu_count(), "threads": cpu_threads(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            **{name: ver(name) for name in ("torch", "transformers", "onnxruntime", "openvino")}}


@functools.cache
def bf16_supported() -> bool:
    """bf16 where it is native: CUDA with bf16, or a CPU with AVX512-BF16/AMX (else autocast is emulated and slower)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return "avx512_bf16" in _cpuinfo() or "amx_bf16" in _cpuinfo()
