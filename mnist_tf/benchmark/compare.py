"""The benchmark's `compare` part: two presets beside the reference programs in ../shared/bench, same sitting.

    fast  the `fast` preset's fit seconds and test accuracy (the accuracy part's
          runs, one per seed) against the fit seconds `keras_convnet_to99.py`
          (the Keras "simple MNIST convnet" recipe) takes to reach 99% test
          accuracy. Target: >= 99.0% in <= 0.15x the reference's time.
    seed  the `seed` preset's steady-state training images/s (the throughput
          part's measurement, over the steps the reference times) against
          `seed_torch.py`, the same network in PyTorch. Target: >= 1.5x.

Each reference runs as a child process once per seed of `Settings.seeds`,
interleaved with the project's own run for that seed, and every figure is the
median over them. Both sides use the same threads: the Keras reference gets
TensorFlow's pools through `TF_NUM_INTRAOP_THREADS` / `TF_NUM_INTEROP_THREADS`
(as `train.set_threads` sets them), the torch one `--threads`. The programs
are run as they are and read from their printed output. Every run records the
CPU other processes used meanwhile: a busy machine does not slow both sides
alike (torch's threads suffer more), so a ratio holds only where that is near 0.

Torch is not a dependency of this project: `$MNIST_TF_TORCH_PYTHON` names a
Python that has torch and numpy (default: this one, if it imports torch);
without one the torch reference is reported unavailable, with the reason, and
the rest carries on. `$MNIST_TF_BENCH_DIR` is the folder of the reference
programs (default: ../shared/bench beside the repository).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mnist_tf.benchmark.measurements import FAST_MAX_TIME_RATIO, SEED_MIN_SPEEDUP, OtherCpuMeter, Settings, median
from mnist_tf.benchmark.references import (
    BENCH_DIR_ENV,
    FAST_MIN_ACCURACY,
    KERAS_PROGRAM,
    TORCH_PROGRAM,
    TORCH_STEPS,
    bench_dir,
    keras_reference,
    torch_python,
    torch_reference,
)
from mnist_tf.benchmark.report import max_other_cpu
from mnist_tf.benchmark.training import preset_run, summarise_runs, training_throughput

PRESETS = ("fast", "seed")  # the presets this part compares

# The targets.


# --- the verdicts --------------------------------------------------------------------


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if "error" not in r]
    return round(median(values), 2) if values else None


def keras_summary(runs: list[dict[str, Any]], target: float = FAST_MIN_ACCURACY) -> dict[str, Any]:
    """The Keras reference's median seconds to `target` over its finished runs; None unless every one reached it."""
    ok = [r for r in runs if "error" not in r]
    reached = bool(ok) and all(r["reached"] for r in ok)
    return {"median_seconds_to_target": _median_of(ok, "seconds_to_target") if reached else None, "runs": runs}


def fast_verdict(reference: dict[str, Any], project: dict[str, Any]) -> dict[str, Any]:
    """Ratio of the medians (project fit s / reference s to 99%) and whether the `fast` target holds.

    `met` is None, with `why`, where a side has no figure.
    """
    ref_seconds = reference.get("median_seconds_to_target")
    fit_seconds, accuracy = project.get("median_fit_seconds"), project.get("median_test_accuracy")
    if ref_seconds is None:
        why = (
            f"the Keras reference is unavailable: {reference['why']}"
            if "why" in reference
            else f"the Keras reference did not reach {FAST_MIN_ACCURACY:.1%} in every run"
        )
        return {"time_ratio": None, "met": None, "why": why}
    if fit_seconds is None:
        return {"time_ratio": None, "met": None, "why": "no run of the fast preset finished"}
    ratio = fit_seconds / ref_seconds
    met = accuracy >= FAST_MIN_ACCURACY and ratio <= FAST_MAX_TIME_RATIO
    return {"time_ratio": round(ratio, 4), "met": met}


def seed_verdict(reference: dict[str, Any], project: dict[str, Any]) -> dict[str, Any]:
    """Ratio of the medians (project images/s / torch images/s) and whether the `seed` target holds."""
    ref_rate, rate = reference.get("median_images_per_second"), project.get("median_images_per_second")
    if ref_rate is None:
        why = (
            f"the torch reference is unavailable: {reference['why']}"
            if "why" in reference
            else "no run of the torch reference finished"
        )
        return {"speedup": None, "met": None, "why": why}
    if rate is None:
        return {"speedup": None, "met": None, "why": "no measurement of the seed preset finished"}
    speedup = rate / ref_rate
    return {"speedup": round(speedup, 4), "met": speedup >= SEED_MIN_SPEEDUP}


def verdict_line(name: str, comparison: dict[str, Any]) -> str:
    """One comparison's ratio and verdict in a line, for progress."""
    v, other = comparison["verdict"], max_other_cpu(comparison)
    if v["met"] is None:
        return f"compare {name}: no verdict: {v['why']}"
    met = "met" if v["met"] else "NOT met"
    if other is not None:
        met += f"; other processes used up to {other:.0f}% of a core during its runs (valid only near 0)"
    if name == "fast":
        p, r = comparison["project"], comparison["reference"]
        return (
            f"compare fast: {p['median_fit_seconds']:.1f} s fit to {p['median_test_accuracy']:.2%} against the Keras "
            f"convnet's {r['median_seconds_to_target']:.1f} s to {FAST_MIN_ACCURACY:.1%}: {v['time_ratio']:.3f}x "
            f"(target <= {FAST_MAX_TIME_RATIO}x at >= {FAST_MIN_ACCURACY:.1%}): {met}"
        )
    p, r = comparison["project"], comparison["reference"]
    return (
        f"compare seed: {p['median_images_per_second']:,.0f} images/s against torch's "
        f"{r['median_images_per_second']:,.0f}: {v['speedup']:.2f}x (target >= {SEED_MIN_SPEEDUP}x): {met}"
    )


# --- the part ----------------------------------------------------------------------


def fast_comparison(
    settings: Settings,
    source: Any,
    work_dir: Path,
    threads: int,
    programs: Path,
    progress: Callable[[str], None],
    target: float = FAST_MIN_ACCURACY,
) -> Iterator[dict[str, Any]]:
    """Per seed: a Keras reference run, then the `fast` preset trained with that seed (`preset_run`, in a
    fresh process under WORK_DIR/compare); yields the comparison so far after every run."""
    program = programs / KERAS_PROGRAM
    reference: dict[str, Any] = {"program": str(program), "python": sys.executable, "target": target, "runs": []}
    comparison: dict[str, Any] = {"reference": reference, "project": summarise_runs([])}
    if not program.is_file():
        reference["why"] = f"no {KERAS_PROGRAM} in {programs} (set ${BENCH_DIR_ENV} to its folder)"
    runs: list[dict[str, Any]] = []
    for i, seed in enumerate(settings.seeds, 1):
        if program.is_file():
            progress(f"compare {i}/{len(settings.seeds)}: {KERAS_PROGRAM}, the Keras convnet trained to {target:.1%}")
            run = _metered(keras_reference, programs, source, threads, target)
            progress(f"  -> {_keras_line(run)}")
            reference["runs"].append(run)
            reference.update(keras_summary(reference["runs"], target))
            yield comparison
        runs.append(_metered(preset_run, "fast", seed, threads, source, work_dir / "compare", progress, "compare"))
        comparison["project"] = summarise_runs(runs)
        yield comparison
    comparison["verdict"] = fast_verdict(reference, comparison["project"])
    progress(verdict_line("fast", comparison))
    yield comparison


def seed_comparison(
    settings: Settings,
    source: Any,
    threads: int,
    programs: Path,
    torch: dict[str, Any],
    progress: Callable[[str], None],
    steps: int = TORCH_STEPS,
) -> Iterator[dict[str, Any]]:
    """Per seed: a torch reference run of `steps` steps (with `torch`, a `torch_python()`), then the `seed` preset's
    training images/s over as many steps of its batch after a warm-up of as many (`training_throughput`); yields
    the comparison so far after every measurement."""
    from mnist_tf.config import preset
    from mnist_tf.training import precision, tuning
    from mnist_tf.training.setup import gpu_available

    program = programs / TORCH_PROGRAM
    reference: dict[str, Any] = {"program": str(program), "python": torch["python"], "steps": steps, "runs": []}
    if torch["python"] is None:
        reference["why"] = torch["why"]
    elif not program.is_file():
        reference["why"] = f"no {TORCH_PROGRAM} in {programs} (set ${BENCH_DIR_ENV} to its folder)"
    else:
        reference["torch"] = torch["torch"]
    cfg = preset("seed")
    # The settings and precision `mnist-tf train --preset seed` uses here (the CLI set oneDNN before TensorFlow).
    tuned, tuned_decision = tuning.resolve(cfg)
    chosen, decision = precision.resolve(cfg, gpu_available())
    cfg = tuning.apply(cfg, tuned).replace(mixed_precision=chosen)
    measure = dataclasses.replace(settings, throughput_images=steps * cfg.batch_size, repeats=1)
    project: dict[str, Any] = {
        "precision": chosen, "precision_decision": decision, "settings": tuned_decision, "steps": steps,
        "batch_size": cfg.batch_size, "runs": [],
    }  # fmt: skip
    comparison = {"reference": reference, "project": project}
    for i, seed in enumerate(settings.seeds, 1):
        if "why" not in reference:
            progress(f"compare {i}/{len(settings.seeds)}: {TORCH_PROGRAM}, {steps} steps on {threads} threads")
            run = _metered(torch_reference, torch["python"], programs, source, threads, seed, steps)
            progress(f"  -> {_rate_line(run)}")
            reference["runs"].append(run)
            reference["median_images_per_second"] = _median_of(reference["runs"], "images_per_second")
            yield comparison
        progress(f"compare {i}/{len(settings.seeds)}: seed preset, {steps} steps of batch {cfg.batch_size}, {chosen}")
        run = _metered(_seed_throughput, cfg.replace(seed=seed), measure)
        progress(f"  -> {_rate_line(run)}")
        project["runs"].append(run)
        project["median_images_per_second"] = _median_of(project["runs"], "images_per_second")
        yield comparison
    comparison["verdict"] = seed_verdict(reference, project)
    progress(verdict_line("seed", comparison))
    yield comparison


def compare_part(
    settings: Settings, source: Any, work_dir: Path, threads: int, progress: Callable[[str], None]
) -> Iterator[dict[str, Any]]:
    """The compare part for the presets of `PRESETS` among `settings.presets`; yields everything so far
    ({"bench_dir", "fast", "seed"}) after every measurement."""
    programs = bench_dir(settings.bench_dir)
    result: dict[str, Any] = {"bench_dir": str(programs), "threads": threads}
    if "fast" in settings.presets:
        for compared in fast_comparison(settings, source, work_dir, threads, programs, progress):
            result["fast"] = compared
            yield result
    if "seed" in settings.presets:
        torch = torch_python()
        if torch["python"] is None:
            progress(f"compare: the torch reference is unavailable: {torch['why']}")
        for compared in seed_comparison(settings, source, threads, programs, torch, progress):
            result["seed"] = compared
            yield result


def _seed_throughput(cfg: Any, settings: Settings) -> dict[str, Any]:
    try:
        return {"seed": cfg.seed, **training_throughput(cfg, settings)}
    except Exception as e:  # noqa: BLE001  (recorded; the other seeds and the reference still count)
        return {"seed": cfg.seed, "error": f"{type(e).__name__}: {e}"}


def _metered(measure: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`measure(*args)` with the CPU other processes used meanwhile (`OtherCpuMeter`): its figure holds only near 0."""
    meter = OtherCpuMeter()
    run = measure(*args)
    return {**run, "other_cpu_percent": meter.stop()}


def _keras_line(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"failed: {run['error']}"
    reached = "reached" if run["reached"] else "did not reach"
    return (
        f"{run['seconds_to_target']:.1f} s of fit, {run['epochs']} epochs, "
        f"test {run['test_accuracy']:.4f} ({reached} the target){_others(run)}"
    )


def _rate_line(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"failed: {run['error']}"
    return f"{run['images_per_second']:,.0f} training images/s{_others(run)}"


def _others(run: dict[str, Any]) -> str:
    other = run.get("other_cpu_percent")
    return "" if other is None else f"; other processes used {other:.0f}% of a core meanwhile"
