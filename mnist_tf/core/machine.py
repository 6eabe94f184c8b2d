"""The machine: its CPU as /proc/cpuinfo reports it. Figures are only comparable with the CPU named."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpuinfo() -> dict[str, str]:
    """The first core's fields of /proc/cpuinfo (every core reports the same); empty where there is none."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name, family and model numbers (machines of one name can differ in the latter)."""
    fields = cpuinfo()
    name = fields.get("model name") or platform.processor() or platform.machine()
    return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


# The instruction-set extensions that decide how fast TensorFlow's CPU kernels run here, in rising order.
ISA_FLAGS = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")


def isa() -> list[str]:
    """Which of `ISA_FLAGS` this CPU reports (/proc/cpuinfo's flags)."""
    flags = set(cpuinfo().get("flags", "").split())
    return [flag for flag in ISA_FLAGS if flag in flags]


def describe() -> dict[str, object]:
    """The CPU for a record: its name and the ISA extensions that matter, and the cores; and the instruction
    set oneDNN is held to where `ONEDNN_MAX_CPU_ISA` emulates an older CPU."""
    held = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return {"cpu": cpu_name(), "isa": isa(), "cores": os.cpu_count(), **({"onednn_max_cpu_isa": held} if held else {})}
