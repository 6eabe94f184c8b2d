"""`mnist-tf benchmark`: `benchmark.run_benchmark`, its tables printed."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mnist_tf import config
from mnist_tf.cli.common import data_options, main, note, start_tensorflow, user_errors
from mnist_tf.config import choices
from mnist_tf.core.errors import UserError


@main.command(name="benchmark")
@click.option(
    "--part",
    "parts",
    multiple=True,
    type=click.Choice(choices.BENCHMARK_PARTS),
    help="What to measure; repeat for several [all of them].",
)
@click.option(
    "--preset",
    "presets",
    multiple=True,
    type=click.Choice(list(config.PRESETS)),
    help="Presets to measure; repeat for several [all three].",
)
@click.option("--seeds", type=click.IntRange(1, 20), default=3, help="Training runs per preset (seeds 1..N).")
@click.option("--threads", type=click.IntRange(1), default=os.cpu_count() or 1, help="TF intra-op threads [all cores].")
@click.option(
    "--serve-seconds",
    type=click.FloatRange(1),
    default=20.0,
    help="serve part: seconds of load at each level of concurrent clients (1, 8, 32).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/benchmark"),
    help="Folder for benchmark.json, benchmark.md and plots.",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier benchmark in --out.")
@click.option(
    "--bench-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="compare part: folder of the reference programs [$MNIST_TF_BENCH_DIR, else ../shared/bench].",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="Run dir or .keras file the inference and serve parts time [a model the accuracy part trains].",
)
@data_options(from_run=True)
@user_errors
def benchmark_command(
    parts: tuple[str, ...],
    presets: tuple[str, ...],
    seeds: int,
    threads: int,
    serve_seconds: float,
    out: Path,
    overwrite: bool,
    model_path: Path | None,
    bench_dir: Path | None,
    data_dir: Path | None,
    manual_dir: Path | None,
    dataset: str | None,
) -> None:
    """Measure training speed, time to accuracy, inference speed, serving under load, memory, and the
    presets beside reference programs (compare).

    Prints tables and writes OUT/benchmark.json, OUT/benchmark.md and
    OUT/time_to_accuracy.png. Run it on an otherwise idle machine: with three
    seeds, the parts together take most of an hour on 2 CPU cores.
    """
    from mnist_tf.training import tuning

    inter_op = 1
    if "compare" in (parts or choices.BENCHMARK_PARTS) and "seed" in (presets or config.PRESETS):
        # The seed preset is timed in this process: its measured settings are set before TensorFlow starts.
        chosen, _ = tuning.resolve(config.preset("seed"), progress=lambda line: note(f"settings: {line}"))
        tuning.before_tensorflow(chosen)
        inter_op = tuning.threads_within(chosen, threads)[1]
    start_tensorflow()
    from mnist_tf import benchmark
    from mnist_tf.training import runinfo

    settings = benchmark.Settings(
        presets=presets or benchmark.Settings.presets,
        seeds=tuple(range(1, seeds + 1)),
        threads=threads,
        inter_op=inter_op,
        serve_seconds=serve_seconds,
        bench_dir=bench_dir,
    )
    source = runinfo.data_source(model_path, data_dir, manual_dir, note, dataset)
    if source.dataset != choices.DEFAULT_DATASET and "compare" in (parts or choices.BENCHMARK_PARTS):
        raise UserError(
            f"the compare part times the reference programs to MNIST's accuracy targets, not on {source.dataset}: "
            "leave it out (--part peak --part throughput ...) or benchmark on mnist"
        )
    result = benchmark.run_benchmark(
        out,
        source,
        parts or choices.BENCHMARK_PARTS,
        settings,
        model=model_path,
        overwrite=overwrite,
        progress=lambda message: click.echo(message, err=True),
    )
    click.echo(benchmark.tables(result))
    click.echo(f"wrote {out}/benchmark.json, benchmark.md" + (", time_to_accuracy.png" if "accuracy" in result else ""))
