"""The benchmark's training parts: steady-state throughput, and time to accuracy in real runs."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

from mnist_tf.benchmark.measurements import (
    TARGETS,
    Settings,
    StealMeter,
    forward_flops,
    median,
    peak_rss_mib,
    target_key,
)
from mnist_tf.benchmark.report import run_line
from mnist_tf.config import Config, preset

# --- throughput ---------------------------------------------------------------


def training_throughput(cfg: Config, settings: Settings) -> dict[str, Any]:
    """Steady-state training images/s of `cfg` (median of `settings.repeats`)."""
    import keras
    import tensorflow as tf

    from mnist_tf.data import pipeline
    from mnist_tf.modeling.network import build_model
    from mnist_tf.training import setup

    keras.utils.set_random_seed(cfg.seed)
    n = max(settings.throughput_images, 4 * cfg.batch_size)
    steps = n // cfg.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * cfg.batch_size, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    ds = pipeline.train_pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), cfg).repeat()
    model = setup.compile_model(build_model(cfg), cfg, steps)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)  # traces, compiles, warms up
    warmup_seconds = time.perf_counter() - start
    rates = []
    steal = StealMeter()
    for _ in range(settings.repeats):
        start = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        rates.append(steps * cfg.batch_size / (time.perf_counter() - start))
    flops = forward_flops(model)
    return {
        "images_per_second": round(median(rates), 1),
        "repeats": [round(r, 1) for r in rates],
        "steal_percent": steal.stop(),
        "warmup_seconds": round(warmup_seconds, 2),
        "forward_mflops_per_image": round(flops / 1e6, 2),
        "train_mflops_per_image": round(3 * flops / 1e6, 2),
    }


def throughput_cases(settings: Settings) -> list[tuple[str, Config]]:
    """Each preset at its own batch size and at twice it, XLA off and on, and
    once in float32 (its own batch size, no XLA) to show what bfloat16 gains."""
    cases = []
    for name in settings.presets:
        cfg = preset(name)
        if cfg.mixed_precision == "auto":  # Both precisions are measured here, bfloat16 across the grid.
            cfg = cfg.replace(mixed_precision="bfloat16")
        for batch_size in (cfg.batch_size, 2 * cfg.batch_size):
            for jit in (False, True):
                cases.append((name, cfg.replace(batch_size=batch_size, jit=jit)))
        if cfg.mixed_precision != "off":
            cases.append((name, cfg.replace(jit=False, mixed_precision="off")))
    return cases


def throughput_rows(
    settings: Settings, peak_gflops: dict[str, float], progress: Callable[[str], None]
) -> Iterator[dict[str, Any]]:
    """The throughput part: one row per case of `throughput_cases`, yielded as each is measured.

    `peak_gflops` (`measure_peak`) turns images/s into a fraction of what this machine's matmuls reach.
    """
    cases = throughput_cases(settings)
    for i, (name, cfg) in enumerate(cases, 1):
        progress(f"throughput {i}/{len(cases)}: {name}, batch {cfg.batch_size}, XLA {'on' if cfg.jit else 'off'}")
        row = {"preset": name, "batch_size": cfg.batch_size, "jit": cfg.jit, "precision": cfg.mixed_precision}
        row.update(training_throughput(cfg, settings))
        peak = peak_gflops["bfloat16" if cfg.mixed_precision == "bfloat16" else "float32"]
        row["fraction_of_peak"] = round(row["images_per_second"] * row["train_mflops_per_image"] / 1e3 / peak, 4)
        yield row


# --- accuracy -----------------------------------------------------------------


def _test_accuracy_callback(test_images: np.ndarray, test_labels: np.ndarray):
    import keras

    class TestAccuracyLog(keras.callbacks.Callback):
        """After each epoch: test accuracy, and training time excluding this evaluation."""

        def __init__(self):
            super().__init__()
            self.points: list[dict[str, float]] = []
            self.eval_seconds = 0.0

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            logits = self.model.predict(test_images, batch_size=1000, verbose=0)
            accuracy = float((logits.argmax(-1) == test_labels).mean())
            self.points.append(
                {"epoch": epoch + 1, "seconds": now - self.start - self.eval_seconds, "test_accuracy": accuracy}
            )
            self.eval_seconds += time.perf_counter() - now

    return TestAccuracyLog()


def _train_child(cfg: Config, run_dir: str, source: Any, threads: int, queue: Any) -> None:
    """Runs in a fresh process, so each run's memory and TF state are its own."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mnist_tf.training import tuning

    # The settings `mnist-tf train` would use here (measured once per machine), set before TensorFlow starts.
    chosen, tuned = tuning.resolve(cfg)
    tuning.before_tensorflow(chosen)
    from mnist_tf.data import pipeline
    from mnist_tf.jobs.train import train_and_evaluate
    from mnist_tf.training import setup

    setup.set_threads(*tuning.threads_within(chosen, threads))
    cfg = tuning.apply(cfg, chosen)

    try:
        images, labels = pipeline.arrays("test", source)
        log = _test_accuracy_callback(images, labels)
        metrics = train_and_evaluate(cfg, Path(run_dir), source, overwrite=True, extra_callbacks=[log], tuning=tuned)
        fit_seconds = metrics["train_seconds"] - log.eval_seconds
        queue.put(
            {
                "seed": cfg.seed,
                "test_accuracy": metrics["test_accuracy"],
                "fit_seconds": round(fit_seconds, 2),
                "data_seconds": metrics["data_seconds"],
                "epochs": metrics["epochs"],
                "train_images_per_second": round(metrics["epochs"] * metrics["train_examples"] / fit_seconds, 1),
                "curve": [{**p, "seconds": round(p["seconds"], 2)} for p in log.points],
                "seconds_to": {
                    target_key(t): next((round(p["seconds"], 2) for p in log.points if p["test_accuracy"] >= t), None)
                    for t in TARGETS
                },
                "peak_rss_mib": peak_rss_mib(),
                "run_dir": run_dir,
            }
        )
    except Exception as e:  # noqa: BLE001  (reported by the parent, which must not wait forever)
        queue.put({"seed": cfg.seed, "error": f"{type(e).__name__}: {e}"})


def accuracy_run(cfg: Config, run_dir: Path, source: Any, threads: int) -> dict[str, Any]:
    """Trains `cfg` in a fresh process and returns its measurements."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_train_child, args=(cfg, str(run_dir), source, threads, queue))
    steal = StealMeter()
    child.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not child.is_alive():  # Died without a word (killed, out of memory, ...).
                result = {"seed": cfg.seed, "error": f"the training process exited with status {child.exitcode}"}
                break
    child.join()
    return {**result, "steal_percent": steal.stop()}


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs that finished, and the runs; a target's time is given only when every run reached it."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"runs": runs}

    def med(key: str) -> float:
        return round(median([r[key] for r in ok]), 4)

    seconds_to = {}
    for t in ok[0]["seconds_to"]:
        reached = [r["seconds_to"][t] for r in ok if r["seconds_to"][t] is not None]
        seconds_to[t] = round(median(reached), 2) if len(reached) == len(ok) else None
    return {
        "median_test_accuracy": med("test_accuracy"),
        "median_fit_seconds": med("fit_seconds"),
        "median_train_images_per_second": med("train_images_per_second"),
        "median_seconds_to": seconds_to,
        "max_peak_rss_mib": max(r["peak_rss_mib"] for r in ok),
        "runs": runs,
    }


def accuracy_summaries(
    settings: Settings, source: Any, work_dir: Path, progress: Callable[[str], None]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The accuracy part: every preset trained once per seed, each in a fresh process under
    WORK_DIR/runs; yields (preset, `summarise_runs` of its runs so far) after every run."""
    for name in settings.presets:
        runs = []
        for seed in settings.seeds:
            runs.append(preset_run(name, seed, settings.threads, source, work_dir / "runs", progress))
            yield name, summarise_runs(runs)


def preset_run(
    name: str,
    seed: int,
    threads: int,
    source: Any,
    runs_dir: Path,
    progress: Callable[[str], None],
    part: str = "accuracy",
) -> dict[str, Any]:
    """One `accuracy_run` of preset `name` with `seed` in RUNS_DIR/NAME-seedSEED, reported to `progress` by `part`."""
    progress(f"{part}: training preset {name}, seed {seed} (a full run)")
    run = accuracy_run(
        preset(name, source.dataset).replace(seed=seed), runs_dir / f"{name}-seed{seed}", source, threads
    )
    progress(f"  -> {run_line(run)}")
    return run
