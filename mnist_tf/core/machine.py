"""The machine: its CPU as /proc/cpuinfo reports it. Figures are only comparable with the CPU named."""

from __future__ import annotations

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
