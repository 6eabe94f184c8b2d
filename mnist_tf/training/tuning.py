"""Runtime settings chosen by measurement, once per machine, like the precision.

Four settings change how fast a training step runs and never what it computes:

    onednn          TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS) or its own (Eigen)
    threads         the intra-op and inter-op thread pools
    jit             XLA-compiled training steps on the CPU
    augment_calls   batches the input pipeline augments side by side

Which ones are fastest depends on the CPU: its instruction sets, whether its two
cores are two hyperthreads of one, TensorFlow's version. So `resolve` times a few
training steps of the run's own network, batch, precision and input pipeline in
each candidate, in child processes (oneDNN and the thread pools are fixed once
TensorFlow starts), and keeps the fastest. A candidate replaces the default only
when it is at least `MARGIN` faster, so noise never flips a setting. The answer is
cached per CPU, TensorFlow version and network in `settings.json` beside the
precision probe's cache, so only the first run of a network on a machine pays the
probe (a few seconds per candidate).

This module imports no TensorFlow: the parent decides before TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from mnist_tf.config import Config
from mnist_tf.core.files import write_json
from mnist_tf.core.machine import cpu_name, isa

# A setting other than the default must make a step at least 10% faster to be chosen: repeated probes of
# one setting differ by up to about 8% on a 2-core machine.
MARGIN = 0.10
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
CHILD_TIMEOUT_SECONDS = 600
# Set to "off" to skip the probe and keep the defaults (tests, or a machine shared while it would measure).
PROBE_ENV = "MNIST_TF_TUNE"
CACHE_ENV = "MNIST_TF_CACHE_DIR"
TUNED_ENV = "MNIST_TF_TUNED_ONEDNN"  # the value of TF_ENABLE_ONEDNN_OPTS this module set


@dataclasses.dataclass(frozen=True)
class Settings:
    onednn: bool
    intra_op: int
    inter_op: int
    jit: bool
    augment_calls: int

    def describe(self) -> str:
        return (
            f"oneDNN {'on' if self.onednn else 'off'}, XLA {'on' if self.jit else 'off'}, "
            f"threads {self.intra_op} intra-op / {self.inter_op} inter-op, {self.augment_calls} augmenting"
        )


def cores() -> int:
    return os.cpu_count() or 1


def default_settings(n: int | None = None) -> Settings:
    """What a run uses without measuring: oneDNN on, no XLA, every core for one op, half of them augmenting."""
    n = n or cores()
    return Settings(onednn=True, intra_op=n, inter_op=1, jit=False, augment_calls=max(1, n // 2))


def network_key(cfg: Config) -> str:
    """The parts of `cfg` that decide a training step's cost (shared with the precision probe's cache key)."""
    stride = f" first_stride={cfg.first_stride}" if cfg.first_stride != 1 else ""  # absent at 1: older keys match
    return f"stages={list(map(list, cfg.stages))}{stride} dense={list(cfg.dense_units)} batch={cfg.batch_size}"


def machine_key() -> str:
    """The CPU as the caches know it, with any limit set on oneDNN's instruction sets (ONEDNN_MAX_CPU_ISA:
    the same CPU then runs other kernels, at other speeds, and some precisions not at all)."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{cpu_name()} ONEDNN_MAX_CPU_ISA={limit}" if limit else cpu_name()


def cache_key(cfg: Config) -> str:
    try:
        version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        version = "?"
    return (
        f"{machine_key()} | {cores()} cores | tensorflow {version} | {network_key(cfg)} "
        f"augment={cfg.augment} precision={cfg.mixed_precision}"
    )


def cache_dir() -> Path:
    """Where the probes keep their answers: `$MNIST_TF_CACHE_DIR`, else `$XDG_CACHE_HOME/mnist-tf`, else
    ~/.cache/mnist-tf."""
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-tf"
    return Path(base)


def cache_path() -> Path:
    return cache_dir() / "settings.json"


def read_cache(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


# --- the candidates --------------------------------------------------------------------------------


def _variant(settings: Settings, precision: str) -> dict[str, Any]:
    return {"jit": settings.jit, "augment_calls": settings.augment_calls, "precision": precision}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def precisions(cfg: Config) -> tuple[str, ...]:
    """The precisions a step is timed in: the run's own, or for `auto` float32 and, where the CPU has
    bfloat16 units, bfloat16 too (the precision probe then decides between them)."""
    if cfg.mixed_precision != "auto":
        return (cfg.mixed_precision,)
    has_bf16 = any(flag in isa() for flag in ("avx512_bf16", "amx_bf16"))
    return ("off", "bfloat16") if has_bf16 else ("off",)


def thread_splits(n: int) -> list[tuple[int, int]]:
    """(intra-op, inter-op) pairs tried beside the default (n, 1): two op pools, and one core fewer per op
    (which leaves one to the input pipeline, and helps where two logical cores share one physical one)."""
    splits = [(n, 2)]
    if n > 1:
        splits.append((n - 1, 1) if n > 2 else (1, 1))
    return splits


# --- measuring -----------------------------------------------------------------------------------


def _child_env(onednn: bool) -> dict[str, str]:
    env = {**os.environ, ONEDNN_ENV: "1" if onednn else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(PROBE_ENV, None)
    env.pop(TUNED_ENV, None)
    return env


def run_child(cfg: Config, onednn: bool, intra: int, inter: int, variants: list[dict[str, Any]]) -> list[float]:
    """Milliseconds per training step of each of `variants` in a fresh process with these pools and oneDNN.
    A variant that failed is `inf` (XLA can refuse a network, for example)."""
    request = {"config": cfg.to_dict(), "intra": intra, "inter": inter, "variants": variants}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mnist_tf.training.tuning", json.dumps(request)],
            check=False,
            env=_child_env(onednn),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return [float("inf")] * len(variants)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return [float("inf")] * len(variants)
    return [float("inf") if ms is None else ms for ms in json.loads(lines[-1])["ms"]]


Measure = Callable[[Config, bool, int, int, list[dict[str, Any]]], list[float]]


def measure(cfg: Config, progress: Callable[[str], None], child: Measure = run_child) -> dict[str, Any]:
    """Times the candidates and returns the decision: the chosen `Settings`, every timing, the seconds spent.

    1. oneDNN on, with the default pools: the run's precisions, XLA on, and (with augmentation) another
       number of batches augmenting; then oneDNN off (float32, the rest default).
    2. The other thread splits, with the best oneDNN, XLA and augmentation found so far.
    """
    start = time.perf_counter()
    n = cores()
    base = default_settings(n)
    precision = precisions(cfg)
    tried: list[tuple[Settings, str, float]] = []  # (settings, precision, ms per step)

    def candidates(onednn: bool, first: bool) -> list[tuple[Settings, str]]:
        """The first oneDNN setting tried gets every variant; the other its plain steps only."""
        out = [(dataclasses.replace(base, onednn=onednn), p) for p in (precision if onednn else ("off",))]
        if first:
            out.append((dataclasses.replace(base, onednn=onednn, jit=True), "off"))
            if cfg.augment and n > 1:
                other = 1 if base.augment_calls != 1 else n
                out.append((dataclasses.replace(base, onednn=onednn, augment_calls=other), "off"))
        return out

    forced = users_onednn()  # The user's own choice is kept.
    onednn_options = [forced not in ("0", "false", "False")] if forced is not None else [True, False]
    for i, onednn in enumerate(onednn_options):
        group = candidates(onednn, first=i == 0)
        progress(f"timing training steps with oneDNN {'on' if onednn else 'off'} ({plural(len(group), 'setting')})")
        timings = child(cfg, onednn, base.intra_op, base.inter_op, [_variant(s, p) for s, p in group])
        tried += [(s, p, ms) for (s, p), ms in zip(group, timings)]
    best = min(tried, key=lambda t: t[2])
    for intra, inter in thread_splits(n):
        settings = dataclasses.replace(best[0], intra_op=intra, inter_op=inter)
        progress(f"timing training steps with {intra} intra-op / {inter} inter-op threads")
        (ms,) = child(cfg, settings.onednn, intra, inter, [_variant(settings, best[1])])
        tried.append((settings, best[1], ms))
    chosen = choose(base, tried)
    return {
        "chosen": dataclasses.asdict(chosen),
        "step_ms": [{**dataclasses.asdict(s), "precision": p, "ms": round(ms, 2)} for s, p, ms in tried],
        "probe_seconds": round(time.perf_counter() - start, 1),
    }


def choose(base: Settings, tried: list[tuple[Settings, str, float]]) -> Settings:
    """The fastest settings (at any precision tried), unless they beat the default's best time by less than
    MARGIN; then the default. Nothing finished: the default."""
    finite = [t for t in tried if t[2] != float("inf")]
    if not finite:
        return base
    fastest = min(finite, key=lambda t: t[2])
    base_ms = min((ms for s, _, ms in finite if s == base), default=float("inf"))
    return fastest[0] if fastest[2] < (1 - MARGIN) * base_ms else base


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible, without starting TensorFlow; on a GPU the CPU's settings matter little."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def resolve(cfg: Config, progress: Callable[[str], None] = lambda _: None) -> tuple[Settings, dict[str, Any]]:
    """The settings `cfg` trains with here, and how they were decided (recorded in metrics.json).

    Read from the cache, or measured and cached; the defaults where measuring is off
    (`MNIST_TF_TUNE=off`), on a GPU machine, or for a deterministic run.
    """
    base = default_settings()
    if os.environ.get(PROBE_ENV, "").lower() in ("off", "0", "no") or gpu_present() or cfg.deterministic:
        return base, {"chosen": dataclasses.asdict(base), "how": "default"}
    key, path = cache_key(cfg), cache_path()
    cache = read_cache(path)
    try:
        return Settings(**cache[key]["chosen"]), {**cache[key], "how": "cached", "cache": str(path)}
    except (KeyError, TypeError):
        pass
    decision = {**measure(cfg, progress), "machine": key}
    try:
        write_json(path, {**cache, key: decision})
    except OSError:  # An unwritable cache costs a probe per run, nothing else.
        pass
    return Settings(**decision["chosen"]), {**decision, "how": "measured", "cache": str(path)}


def users_onednn() -> str | None:
    """TF_ENABLE_ONEDNN_OPTS as the user set it, or None where they did not (a value `before_tensorflow` set,
    which child processes inherit, is not theirs)."""
    value = os.environ.get(ONEDNN_ENV)
    return None if value is None or value == os.environ.get(TUNED_ENV) else value


def before_tensorflow(settings: Settings) -> None:
    """Sets what must be set before TensorFlow starts: oneDNN, unless the user set it themselves."""
    if users_onednn() is None:
        os.environ[ONEDNN_ENV] = os.environ[TUNED_ENV] = "1" if settings.onednn else "0"


def threads_within(settings: Settings, threads: int) -> tuple[int, int]:
    """(intra-op, inter-op) pools: the measured ones, unless a caller holds the run to fewer `threads`
    (the benchmark gives a reference program and the project the same number)."""
    if threads >= cores():
        return settings.intra_op, settings.inter_op
    return min(threads, settings.intra_op), 1


def apply(cfg: Config, settings: Settings) -> Config:
    """`cfg` with the measured XLA and augmentation parallelism where it leaves them to be decided and the
    measurement chose other than the default (`jit` None stays XLA off on a CPU, on with a GPU)."""
    base = default_settings()
    changes = {}
    if cfg.jit is None and settings.jit != base.jit and not gpu_present():
        changes["jit"] = settings.jit
    if cfg.augment_calls is None and settings.augment_calls != base.augment_calls:
        changes["augment_calls"] = settings.augment_calls
    return cfg.replace(**changes)


def describe(decision: dict[str, Any]) -> str:
    """One line for the start of a run."""
    chosen = Settings(**decision["chosen"]).describe()
    if decision["how"] == "default":
        return f"settings: {chosen} (defaults)"
    if decision["how"] == "cached":
        return f"settings: {chosen} (measured on this CPU earlier; cache {decision['cache']})"
    fastest = min(t["ms"] for t in decision["step_ms"])
    return (
        f"settings: {chosen} (measured on this CPU in {decision['probe_seconds']:.0f} s: "
        f"{plural(len(decision['step_ms']), 'setting')} timed, fastest {fastest:.1f} ms per step)"
    )


# --- the child process ------------------------------------------------------------------------------


def _time_variants(request: dict[str, Any]) -> list[float | None]:
    """In the child: ms per training step of each variant, in `fit`, on random batches through the real
    input pipeline (augmentation included)."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(request["intra"])
    tf.config.threading.set_inter_op_parallelism_threads(request["inter"])
    import keras

    from mnist_tf.data.pipeline import Datasets, train_pipeline
    from mnist_tf.training.budget import step_seconds

    cfg = Config(**request["config"])
    rng = np.random.default_rng(0)
    n = cfg.batch_size * 32
    images, labels = rng.integers(0, 256, (n, 28, 28, 1), np.uint8), rng.integers(0, 10, n)
    out: list[float | None] = []
    for variant in request["variants"]:
        try:
            run_cfg = cfg.replace(
                jit=variant["jit"], augment_calls=variant["augment_calls"], mixed_precision=variant["precision"]
            )
            ds = train_pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), run_cfg)
            seconds, _ = step_seconds(run_cfg, Datasets(ds, None, ds, 60_000, 0), tf.distribute.get_strategy())
            out.append(round(seconds * 1000, 3))
        except Exception:  # noqa: BLE001  (a setting this TensorFlow cannot run loses, whatever the error)
            out.append(None)
        keras.backend.clear_session()
    return out


if __name__ == "__main__":
    print(json.dumps({"ms": _time_variants(json.loads(sys.argv[1]))}), flush=True)
