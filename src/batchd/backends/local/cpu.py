"""What this CPU advertises, for settings llama.cpp cannot be trusted to pick itself."""

from __future__ import annotations

import functools
from pathlib import Path

_AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def advertises_amx() -> bool:
    """Whether the CPU claims Intel AMX. ggml then picks its AMX buffer type, whose
    kernels crash (SIGSEGV in llama_decode) on virtual machines that advertise AMX
    without really providing it, so batchd keeps extra buffer types off there."""
    return bool(cpu_flags() & _AMX_FLAGS)


def extra_buffer_types(configured: bool | None) -> bool:
    """llama.cpp's ``use_extra_bufts``: as configured, else on unless AMX is advertised
    (elsewhere they are llama.cpp's default and repack weights for faster kernels)."""
    return configured if configured is not None else not advertises_amx()
