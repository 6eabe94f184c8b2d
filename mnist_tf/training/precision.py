"""`--mixed-precision auto`: the compute precision chosen by measuring it on this machine.

bfloat16 trains this network 1.6-2.7x faster than float32 on some CPUs (AVX-512 BF16
or AMX units that oneDNN uses) and 1.3-2x slower on others that report the same
instruction sets, so no rule of thumb decides it. `resolve` times a few training
steps of the run's own network and batch in each candidate precision and keeps the
fastest, unless it beats float32 by less than `MARGIN` (then float32, the exact one).
The answer is cached per CPU, TensorFlow version and network in
`~/.cache/mnist-tf/precision.json` (`$XDG_CACHE_HOME`, or `$MNIST_TF_CACHE_DIR`), so
only the first run on a machine pays the few seconds of the probe.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.config import Config
from mnist_tf.core.files import write_json
from mnist_tf.modeling.network import build_model
from mnist_tf.training.setup import compile_model
from mnist_tf.training.tuning import cache_dir, machine_key, network_key, read_cache

MARGIN = 0.05  # A 16-bit precision must be at least 5% faster than float32 to be chosen.
WARMUP_STEPS = 3
TIMED_STEPS = 8


def cache_path() -> Path:
    return cache_dir() / "precision.json"


def candidates(gpu: bool) -> tuple[str, ...]:
    return ("off", "float16", "bfloat16") if gpu else ("off", "bfloat16")


def cache_key(cfg: Config, gpu: bool) -> str:
    import tensorflow as tf

    device = "GPU " + ",".join(d.name for d in tf.config.list_physical_devices("GPU")) if gpu else machine_key()
    return f"{device} | tensorflow {tf.__version__} | {network_key(cfg)}"


def step_ms(cfg: Config, precision: str) -> float:
    """Median milliseconds of one training step of `cfg`'s network at `precision`, on random data."""
    import keras

    run_cfg = cfg.replace(mixed_precision=precision)
    model = compile_model(build_model(run_cfg), run_cfg, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (cfg.batch_size, 28, 28, 1), np.uint8)
    labels = rng.integers(0, 10, cfg.batch_size)
    times = []
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        if step >= WARMUP_STEPS:
            times.append((time.perf_counter() - start) * 1000)
    keras.backend.clear_session()
    return statistics.median(times)


def _timed(cfg: Config, precision: str) -> float | None:
    """`step_ms` rounded, or None where this machine's kernels cannot run the precision (oneDNN held to an
    older instruction set by ONEDNN_MAX_CPU_ISA refuses bfloat16 convolutions, for one)."""
    import tensorflow as tf

    try:
        return round(step_ms(cfg, precision), 2)
    except tf.errors.OpError:
        return None


def choose(timings: dict[str, float | None]) -> str:
    """The fastest precision, unless it is within MARGIN of float32 ("off"); one that could not run (None)
    never wins."""
    ran = {p: ms for p, ms in timings.items() if ms is not None}
    if not ran:
        return "off"
    fastest = min(ran, key=ran.get)
    return fastest if "off" not in ran or ran[fastest] < (1 - MARGIN) * ran["off"] else "off"


def resolve(cfg: Config, gpu: bool = False) -> tuple[str, dict[str, Any]]:
    """The precision `cfg` trains in, and how it was decided (recorded in metrics.json).

    A forced precision (`off`, `float16`, `bfloat16`) is returned as it is; `auto`
    is looked up in the cache or measured, then cached.
    """
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision, {"chosen": cfg.mixed_precision, "how": "set"}
    key = cache_key(cfg, gpu)
    path = cache_path()
    cache = read_cache(path)
    if key in cache and cache[key].get("chosen") in candidates(gpu):
        return cache[key]["chosen"], {**cache[key], "how": "cached", "cache": str(path)}
    timings = {p: _timed(cfg, p) for p in candidates(gpu)}
    decision = {"chosen": choose(timings), "step_ms": timings, "machine": key}
    try:
        write_json(path, {**cache, key: decision})
    except OSError:  # An unwritable cache costs a probe per run, nothing else.
        pass
    return decision["chosen"], {**decision, "how": "measured", "cache": str(path)}


def describe(decision: dict[str, Any]) -> str:
    """One line for the start of a run."""
    names = {"off": "float32", "float16": "float16", "bfloat16": "bfloat16"}
    chosen = names[decision["chosen"]]
    if decision["how"] == "set":
        return f"mixed precision: {chosen}"
    timings = ", ".join(
        f"{names[p]} {ms:.1f} ms" if ms is not None else f"{names[p]} cannot run"
        for p, ms in decision["step_ms"].items()
    )
    return f"mixed precision: {chosen} (auto, {decision['how']}: one training step takes {timings} on this machine)"
