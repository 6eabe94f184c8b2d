"""The benchmark's instruments: its settings, the machine, CPU steal and other processes' CPU, peak memory, matmul
peak and FLOPs."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnist_tf.config import PRESETS
from mnist_tf.core.machine import cpu_name
from mnist_tf.core.machine import cpuinfo as read_cpuinfo

TARGETS = (0.990, 0.995)  # test accuracies whose time to reach the accuracy part reports
# The compare part's targets.
FAST_MAX_TIME_RATIO = 0.15  # the `fast` preset's median fit seconds / the Keras reference's median seconds
SEED_MIN_SPEEDUP = 1.5  # the `seed` preset's median images/s / the torch reference's median images/s


def target_key(target: float) -> str:
    """A target's key in a run's `seconds_to`: "0.990"."""
    return f"{target:.3f}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a benchmark run measures."""

    presets: tuple[str, ...] = tuple(PRESETS)
    seeds: tuple[int, ...] = (1, 2, 3)
    threads: int = os.cpu_count() or 1
    inter_op: int = 1  # TF's inter-op pool in the benchmark's own process (`training.tuning` measures it)
    throughput_images: int = 6144  # images per timed repeat
    repeats: int = 3
    latency_images: int = 300
    serve_seconds: float = 20.0  # per level of concurrent clients
    bench_dir: Path | None = None  # the compare part's reference programs (`references.bench_dir`)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    """The CPU (and the units that decide bfloat16 speed), cores, GPUs and versions."""
    import keras
    import tensorflow as tf

    cpuinfo = read_cpuinfo()
    flags = set(cpuinfo.get("flags", "").split())
    return {
        "cpu": cpu_name(),
        # The units that decide bfloat16 speed: AVX-512 BF16 dot products, AMX tiles.
        "cpu_features": [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "cores": os.cpu_count(),
        # Set to emulate an older CPU: oneDNN's kernels use no instructions above it.
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def cpu_times() -> list[int] | None:
    """The machine's CPU time since boot, all cores, in clock ticks, from /proc/stat (Linux; elsewhere None):
    user, nice, system, idle, iowait, irq, softirq, steal."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None


def busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (all cores, all processes) since boot."""
    fields = cpu_times()
    if fields is None:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class StealMeter:
    """Share of CPU time the hypervisor gave to other machines ("steal") meanwhile.

    On a shared virtual machine this is why the same work can take twice as
    long from one run to the next; every timed figure carries it. Reads
    /proc/stat (Linux); elsewhere it reports None.
    """

    @staticmethod
    def _read() -> tuple[int, int] | None:
        fields = cpu_times()
        return None if fields is None else (fields[7], sum(fields))

    def __init__(self) -> None:
        self.start = self._read()

    def stop(self) -> float | None:
        """Percent of all CPU time stolen since this meter was made."""
        end = self._read()
        if not (self.start and end and end[1] > self.start[1]):
            return None
        return round(100 * (end[0] - self.start[0]) / (end[1] - self.start[1]), 1)


class OtherCpuMeter:
    """CPU time that processes other than this one and its finished children used meanwhile, in percent of one core.

    A busy machine does not slow every program alike, so two figures compare only
    where this stayed near 0 for both. Reads /proc/stat (Linux); elsewhere it reports None.
    """

    @staticmethod
    def _own_seconds() -> float:
        import resource

        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __init__(self) -> None:
        self.start = (busy_seconds(), self._own_seconds(), time.perf_counter())

    def stop(self) -> float | None:
        busy, own, now = busy_seconds(), self._own_seconds(), time.perf_counter()
        if busy is None or self.start[0] is None or now <= self.start[2]:
            return None
        others = (busy - self.start[0]) - (own - self.start[1])
        return round(max(0.0, 100 * others / (now - self.start[2])), 1)


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB.

    Reads VmHWM from /proc/self/status: `getrusage`'s ru_maxrss survives
    exec on Linux, so a spawned child would report its parent's peak.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def matmul_peak(dtype: str, size: int = 1024, repeats: int = 5, iterations: int = 20) -> float:
    """Best GFLOP/s of a square `size` matmul chain in `dtype`, over `repeats`."""
    import tensorflow as tf

    a = tf.random.uniform([size, size], dtype="float32")
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)

    @tf.function
    def chain(x):
        for _ in range(iterations):
            x = tf.matmul(x, b) * tf.cast(1e-3, dtype)  # scaled to stay finite
        return tf.reduce_sum(tf.cast(x, "float32"))

    chain(a).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * iterations / best / 1e9


# oneDNN instruction-set limits (ONEDNN_MAX_CPU_ISA) under which it has no bfloat16 matmul: asked for one,
# it aborts the process instead of raising.
NO_BF16_ISA = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def measure_peak() -> dict[str, float | None]:
    """GFLOP/s of `matmul_peak` in float32 and bfloat16: the peak the throughput fractions divide by.
    bfloat16 is None where oneDNN is held to an instruction set without it."""
    limited = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_BF16_ISA
    return {
        dtype: None if dtype == "bfloat16" and limited else round(matmul_peak(dtype), 1)
        for dtype in ("float32", "bfloat16")
    }


def forward_flops(model: Any) -> int:
    """Multiply-adds x2 of the convolutions and dense layers for one image.

    BatchNorm, ReLU, pooling and the optimizer are left out: they are memory
    bound, not FLOP bound. Training is counted as 3x forward (the forward
    pass, the gradient with respect to the inputs and to the weights).
    """
    import keras

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return int(flops)
