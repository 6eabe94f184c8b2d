"""`mnist-tf benchmark`: measured speed, time to accuracy and memory.

Four parts, each runnable alone (`--part`), all written to one JSON file and
printed as tables:

    throughput  steady-state training images/s per preset, batch size and XLA
                setting, on synthetic uint8 images through the preset's own
                input pipeline (augmentation included); estimated FLOPs per
                training image and the fraction of the machine's measured peak
    accuracy    real training runs (one per preset and seed, each in a fresh
                process): test accuracy after every epoch against training
                time, time to reach 99.0% and 99.5%, final accuracy, fit time
                and the run's peak resident memory
    inference   batch-1 latency and batch-256 throughput of the Keras model,
                the SavedModel and each TFLite variant of a trained model
    peak        the largest matmul rate this machine reaches, float32 and
                bfloat16: the "peak" the throughput fractions divide by
    serve       `mnist-tf serve` under load on loopback: single-image b64
                requests from 1, 8 and 32 concurrent clients (mnist_tf/serve/load.py)

Timing rules: every figure is a median of repeats after warm-up, threads are
set explicitly (`--threads`) and reported, and nothing else should run on the
machine meanwhile.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

from mnist_tf.config import Config, preset

TARGETS = (0.990, 0.995)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a benchmark run measures."""

    presets: tuple[str, ...] = ("default", "fast", "seed")
    seeds: tuple[int, ...] = (1, 2, 3)
    threads: int = os.cpu_count() or 1
    throughput_images: int = 6144  # images per timed repeat
    repeats: int = 3
    latency_images: int = 300
    serve_seconds: float = 20.0  # per level of concurrent clients


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class StealMeter:
    """Share of CPU time the hypervisor gave to other machines ("steal") meanwhile.

    On a shared virtual machine this is why the same work can take twice as
    long from one run to the next; every timed figure carries it. Reads
    /proc/stat (Linux); elsewhere it reports None.
    """

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        return fields[7], sum(fields)

    def __init__(self) -> None:
        self.start = self._read()

    def stop(self) -> float | None:
        """Percent of all CPU time stolen since this meter was made."""
        end = self._read()
        if not (self.start and end and end[1] > self.start[1]):
            return None
        return round(100 * (end[0] - self.start[0]) / (end[1] - self.start[1]), 1)


# --- peak -------------------------------------------------------------------


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


def measure_peak() -> dict[str, float]:
    return {dtype: round(matmul_peak(dtype), 1) for dtype in ("float32", "bfloat16")}


# --- throughput ---------------------------------------------------------------


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


def training_throughput(cfg: Config, settings: Settings) -> dict[str, Any]:
    """Steady-state training images/s of `cfg` (median of `settings.repeats`)."""
    import keras
    import tensorflow as tf

    from mnist_tf import data, train
    from mnist_tf.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    n = max(settings.throughput_images, 4 * cfg.batch_size)
    steps = n // cfg.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * cfg.batch_size, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    ds = data.train_pipeline(tf.data.Dataset.from_tensor_slices((images, labels)), cfg).repeat()
    model = train.compile_model(build_model(cfg), cfg, steps)
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
            self.points.append({"epoch": epoch + 1, "seconds": now - self.start - self.eval_seconds, "test_accuracy": accuracy})
            self.eval_seconds += time.perf_counter() - now

    return TestAccuracyLog()


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


def _train_child(cfg: Config, run_dir: str, source: Any, threads: int, queue: Any) -> None:
    """Runs in a fresh process, so each run's memory and TF state are its own."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mnist_tf import data, train

    train.set_threads(threads)

    try:
        images, labels = data.arrays("test", source)
        log = _test_accuracy_callback(images, labels)
        metrics = train.train_and_evaluate(cfg, Path(run_dir), source, overwrite=True, extra_callbacks=[log])
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
                    f"{t:.3f}": next((round(p["seconds"], 2) for p in log.points if p["test_accuracy"] >= t), None)
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


# --- inference ------------------------------------------------------------------


def inference_speeds(
    keras_path: Path, work_dir: Path, images: np.ndarray, settings: Settings, labels: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Batch-1 latency and batch-256 throughput of every deployable format, and
    its accuracy on (`images`, `labels`) when labels are given."""
    import tensorflow as tf

    from mnist_tf import evaluate
    from mnist_tf.saved_model import export_saved_model
    from mnist_tf.tflite import export_tflite
    from mnist_tf.model import float32_copy
    from mnist_tf.models import TFLiteRunner, load_keras, load_saved_model
    from mnist_tf.timing import seconds_per_call, single_image_ms

    model = float32_copy(load_keras(keras_path))  # Served in float32, as every export is.
    serve = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))  # probabilities, as the exports
    version_dir = export_saved_model(keras_path, work_dir, images[:8])
    runners: dict[str, Callable[[np.ndarray], Any]] = {
        "keras (tf.function)": lambda x: serve(tf.constant(x)).numpy(),
        "savedmodel": load_saved_model(version_dir),
    }
    tflite = export_tflite(version_dir, work_dir / "tflite", images[:500])
    for kind, path in tflite.items():
        runners[f"tflite {kind}"] = TFLiteRunner(path.read_bytes())
    big = [images[i : i + 256] for i in range(0, 256 * 4, 256)]
    rows = []
    for name, fn in runners.items():
        latency_ms = single_image_ms(fn, images[: settings.latency_images], settings.repeats)
        batch = seconds_per_call(fn, big, settings.repeats)
        size = tflite[name.split()[-1]].stat().st_size if name.startswith("tflite") else None
        accuracy = None if labels is None else round(evaluate.evaluate(fn, images, labels, batch_size=256).accuracy, 5)
        rows.append(
            {
                "format": name,
                "latency_ms_batch1": round(latency_ms, 3),
                "images_per_second_batch256": round(256 / batch, 1),
                "size_bytes": size,
                "test_accuracy": accuracy,
            }
        )
    return rows


# --- the whole benchmark -----------------------------------------------------------


def machine() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from mnist_tf.precision import cpu_name
    from mnist_tf.precision import cpuinfo as read_cpuinfo

    cpuinfo = read_cpuinfo()
    flags = set(cpuinfo.get("flags", "").split())
    return {
        "cpu": cpu_name(),
        # The units that decide bfloat16 speed: AVX-512 BF16 dot products, AMX tiles.
        "cpu_features": [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def run(
    parts: Sequence[str],
    settings: Settings,
    source: Any,
    work_dir: Path,
    progress: Callable[[str], None] = print,
    save: Callable[[dict[str, Any]], None] = lambda result: None,
    model: Path | None = None,
) -> dict[str, Any]:
    """Runs the chosen `parts` and returns everything measured (the JSON).

    `save` receives the result so far after every measurement, so a long
    benchmark that is stopped keeps what it had measured. The inference and
    serve parts time `model` (a `.keras` file), else a model trained by the accuracy part.
    """
    from mnist_tf.train import set_threads

    threads = set_threads(settings.threads)
    result: dict[str, Any] = {"machine": machine(), "threads": threads, "settings": dataclasses.asdict(settings)}
    if "peak" in parts or "throughput" in parts:
        progress("peak: timing large matmuls (float32, bfloat16)")
        result["peak_gflops"] = measure_peak()
    if "throughput" in parts:
        rows = []
        cases = throughput_cases(settings)
        for i, (name, cfg) in enumerate(cases, 1):
            progress(f"throughput {i}/{len(cases)}: {name}, batch {cfg.batch_size}, XLA {'on' if cfg.jit else 'off'}")
            row = {"preset": name, "batch_size": cfg.batch_size, "jit": cfg.jit, "precision": cfg.mixed_precision}
            row.update(training_throughput(cfg, settings))
            peak = result["peak_gflops"]["bfloat16" if cfg.mixed_precision == "bfloat16" else "float32"]
            row["fraction_of_peak"] = round(row["images_per_second"] * row["train_mflops_per_image"] / 1e3 / peak, 4)
            rows.append(row)
            result["throughput"] = rows
            save(result)
    if "accuracy" in parts:
        result["accuracy"] = {}
        for name in settings.presets:
            runs = []
            for seed in settings.seeds:
                progress(f"accuracy: training preset {name}, seed {seed} (a full run)")
                cfg = preset(name).replace(seed=seed)
                run = accuracy_run(cfg, work_dir / "runs" / f"{name}-seed{seed}", source, settings.threads)
                progress(f"  -> {_run_line(run)}")
                runs.append(run)
                result["accuracy"][name] = summarise_runs(runs)
                save(result)
    if "inference" in parts:
        keras_path = model or _trained_model(result, work_dir, source, settings, progress)
        from mnist_tf import data

        images, labels = data.arrays("test", source)
        progress(f"inference: exporting and timing {keras_path}")
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            rows = inference_speeds(keras_path, Path(tmp), images, settings, labels)
            result["inference"] = {"model": str(keras_path), "rows": rows}
    if "serve" in parts:
        result["serve"] = _serve(model or _trained_model(result, work_dir, source, settings, progress), work_dir, source,
                                 settings, progress)
    save(result)
    return result


def _serve(keras_path: Path, work_dir: Path, source: Any, settings: Settings, progress: Callable) -> dict[str, Any]:
    """The serve part: `keras_path` exported, served, and loaded with a real test digit as PNG."""
    from mnist_tf import data
    from mnist_tf.saved_model import encode_png, export_saved_model
    from mnist_tf.serve import load

    images, _ = data.arrays("test[:3]", source)
    progress(f"serve: exporting {keras_path} and serving it")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        version = export_saved_model(keras_path, Path(tmp), images)
        return load.benchmark(version, encode_png(images[0]), settings.serve_seconds, progress=progress)


def _run_line(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"failed: {run['error']}"
    return (
        f"test accuracy {run['test_accuracy']:.4f}, fit {run['fit_seconds']:.1f} s, "
        f"{run['train_images_per_second']:.0f} img/s, peak RSS {run['peak_rss_mib']:.0f} MiB"
    )


def _trained_model(result, work_dir, source, settings, progress) -> Path:
    """The first model of the accuracy part (`default` first), else a new `fast` run."""
    accuracy = result.get("accuracy", {})
    for name in sorted(accuracy, key=lambda n: n != "default"):
        for run in accuracy[name].get("runs", []):
            if "error" not in run:
                return Path(run["run_dir"]) / "model.keras"
    progress("inference: training the fast preset for a model to time")
    run = accuracy_run(preset("fast"), work_dir / "runs" / "fast-inference", source, settings.threads)
    if "error" in run:
        raise RuntimeError(f"training the model to time failed: {run['error']}")
    return Path(run["run_dir"]) / "model.keras"


def tables(result: dict[str, Any]) -> str:
    """Markdown tables of `result`, as printed and pasted into docs/performance.md."""
    out = []
    m = result["machine"]
    t = result["threads"]
    out.append(
        f"Machine: {m['cpu']} ({', '.join(m.get('cpu_features', [])) or 'no AVX-512'}), {m['cores']} cores, "
        f"GPUs: {', '.join(m['gpus']) or 'none'}; "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}; threads intra-op {t['intra_op']}, inter-op {t['inter_op']}."
    )
    if "peak_gflops" in result:
        p = result["peak_gflops"]
        out.append(f"\nMeasured matmul peak: float32 {p['float32']:.0f} GFLOP/s, bfloat16 {p['bfloat16']:.0f} GFLOP/s.")
    if "throughput" in result:
        out.append(
            "\n| preset | precision | batch | XLA | train img/s (median) | repeats | MFLOP/img (train) | of peak "
            "| warm-up s | CPU steal |"
        )
        out.append("| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |")
        for r in result["throughput"]:
            out.append(
                f"| {r['preset']} | {r['precision']} | {r['batch_size']} | {'on' if r['jit'] else 'off'} | "
                f"{r['images_per_second']:,.0f} | {', '.join(f'{x:,.0f}' for x in r['repeats'])} | "
                f"{r['train_mflops_per_image']:.1f} | {r['fraction_of_peak']:.1%} | {r['warmup_seconds']:.1f} | "
                f"{_pct(r.get('steal_percent'))} |"
            )
    if "accuracy" in result:
        out.append(
            "\n| preset | seed | test accuracy | fit s | img/s | s to 99.0% | s to 99.5% | peak RSS MiB | CPU steal |"
        )
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, summary in result["accuracy"].items():
            for r in summary["runs"]:
                if "error" in r:
                    out.append(f"| {name} | {r['seed']} | failed: {r['error'][:60]} | | | | | | |")
                    continue
                to = r["seconds_to"]
                out.append(
                    f"| {name} | {r['seed']} | {r['test_accuracy']:.2%} | {r['fit_seconds']:.1f} | "
                    f"{r['train_images_per_second']:,.0f} | {_secs(to['0.990'])} | {_secs(to['0.995'])} | "
                    f"{r['peak_rss_mib']:,.0f} | {_pct(r.get('steal_percent'))} |"
                )
            if "median_test_accuracy" in summary:
                to = summary["median_seconds_to"]
                out.append(
                    f"| **{name} median** | | **{summary['median_test_accuracy']:.2%}** | "
                    f"**{summary['median_fit_seconds']:.1f}** | {summary['median_train_images_per_second']:,.0f} | "
                    f"{_secs(to['0.990'])} | {_secs(to['0.995'])} | {summary['max_peak_rss_mib']:,.0f} | |"
                )
    if "inference" in result:
        out.append(f"\nModel: {result['inference']['model']}")
        out.append("\n| format | batch-1 latency ms | batch-256 img/s | size KiB | test accuracy |")
        out.append("| --- | ---: | ---: | ---: | ---: |")
        for r in result["inference"]["rows"]:
            size = f"{r['size_bytes'] / 1024:,.0f}" if r["size_bytes"] else ""
            accuracy = "" if r.get("test_accuracy") is None else f"{r['test_accuracy']:.2%}"
            out.append(
                f"| {r['format']} | {r['latency_ms_batch1']:.3f} | {r['images_per_second_batch256']:,.0f} | {size} "
                f"| {accuracy} |"
            )
    if "serve" in result:
        from mnist_tf.serve.load import table

        out.append(table(result["serve"]))
    return "\n".join(out)


def _secs(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"
