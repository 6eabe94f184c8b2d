"""The benchmark's result as Markdown tables: printed, written to benchmark.md, pasted into docs/performance.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnist_tf.benchmark.measurements import FAST_MAX_TIME_RATIO, SEED_MIN_SPEEDUP, TARGETS, target_key
from mnist_tf.benchmark.references import FAST_MIN_ACCURACY


def tables(result: dict[str, Any]) -> str:
    """Markdown tables of `result`, as printed and pasted into docs/performance.md."""
    m, t = result["machine"], result["threads"]
    held = f"oneDNN held to {m['onednn_max_cpu_isa']}, " if m.get("onednn_max_cpu_isa") else ""
    out = [
        (
            f"Machine: {m['cpu']} ({', '.join(m.get('cpu_features', [])) or 'no AVX-512'}), {m['cores']} cores, "
            f"{held}GPUs: {', '.join(m['gpus']) or 'none'}; "
            f"TensorFlow {m['tensorflow']}, Keras {m['keras']}; threads intra-op {t['intra_op']}, inter-op {t['inter_op']}."
        )
    ]
    if "peak_gflops" in result:
        p = result["peak_gflops"]
        bf16 = f"{p['bfloat16']:.0f} GFLOP/s" if p.get("bfloat16") is not None else "not available (ONEDNN_MAX_CPU_ISA)"
        out.append(f"\nMeasured matmul peak: float32 {p['float32']:.0f} GFLOP/s, bfloat16 {bf16}.")
    if "throughput" in result:
        out += throughput_table(result["throughput"])
    if "accuracy" in result:
        out += accuracy_table(result["accuracy"])
    if "inference" in result:
        out += inference_table(result["inference"])
    if "serve" in result:
        from mnist_tf.benchmark.serve_load import table

        out.append(table(result["serve"]))
    if "compare" in result:
        out += compare_table(result["compare"])
    return "\n".join(out)


def throughput_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        (
            "\n| preset | precision | batch | XLA | train img/s (median) | repeats | M multiply-adds/img (forward) "
            "| MFLOP/img (train) | GFLOP/s | of peak | warm-up s | CPU steal |"
        ),
        "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['preset']} | {r['precision']} | {r['batch_size']} | {'on' if r['jit'] else 'off'} | "
            f"{r['images_per_second']:,.0f} | {', '.join(f'{x:,.0f}' for x in r['repeats'])} | "
            f"{r['forward_mflops_per_image'] / 2:.2f} | {r['train_mflops_per_image']:.1f} | "
            f"{r['images_per_second'] * r['train_mflops_per_image'] / 1000:.1f} | "
            f"{r['fraction_of_peak']:.1%} | {r['warmup_seconds']:.1f} | "
            f"{_pct(r.get('steal_percent'))} |"
        )
    return out


def accuracy_table(summaries: dict[str, dict[str, Any]]) -> list[str]:
    def to_targets(seconds_to: dict[str, float | None]) -> str:  # keyed by target, e.g. "0.990"
        return "".join(f"{_secs(seconds_to[target_key(t)])} | " for t in TARGETS)

    out = [
        "\n| preset | seed | test accuracy | fit s | img/s | "
        + "".join(f"s to {t:.1%} | " for t in TARGETS)
        + "peak RSS MiB | CPU steal |",
        "| --- | ---: | ---: | ---: | ---: | " + "---: | " * len(TARGETS) + "---: | ---: |",
    ]
    for name, summary in summaries.items():
        for r in summary["runs"]:
            if "error" in r:
                out.append(f"| {name} | {r['seed']} | failed: {r['error'][:60]} | | | " + "| " * len(TARGETS) + "| |")
                continue
            out.append(
                f"| {name} | {r['seed']} | {r['test_accuracy']:.2%} | {r['fit_seconds']:.1f} | "
                f"{r['train_images_per_second']:,.0f} | {to_targets(r['seconds_to'])}"
                f"{r['peak_rss_mib']:,.0f} | {_pct(r.get('steal_percent'))} |"
            )
        if "median_test_accuracy" in summary:
            out.append(
                f"| **{name} median** | | **{summary['median_test_accuracy']:.2%}** | "
                f"**{summary['median_fit_seconds']:.1f}** | {summary['median_train_images_per_second']:,.0f} | "
                f"{to_targets(summary['median_seconds_to'])}{summary['max_peak_rss_mib']:,.0f} | |"
            )
    return out


def inference_table(inference: dict[str, Any]) -> list[str]:
    out = [
        f"\nModel: {inference['model']}",
        "\n| format | batch-1 latency ms | batch-256 img/s | size KiB | test accuracy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in inference["rows"]:
        size = f"{r['size_bytes'] / 1024:,.0f}" if r["size_bytes"] else ""
        accuracy = "" if r.get("test_accuracy") is None else f"{r['test_accuracy']:.2%}"
        out.append(
            f"| {r['format']} | {r['latency_ms_batch1']:.3f} | {r['images_per_second_batch256']:,.0f} | {size} "
            f"| {accuracy} |"
        )
    return out


def compare_table(compare: dict[str, Any]) -> list[str]:
    """The compare part: each preset's median beside its reference program's, the ratio and the target."""
    out = [
        (
            f"\nBeside the reference programs in {compare['bench_dir']}, same sitting, {compare['threads']} threads "
            "each side; medians of the runs in brackets (the ratios carry across machines, seconds and images/s do "
            "not). Other CPU: the most that other processes used during any run of the row, in percent of one core; "
            "a row holds only where it is near 0."
        ),
        "\n| comparison | reference | mnist-tf | ratio | target | met? | other CPU |",
        "| --- | --- | --- | ---: | --- | --- | ---: |",
    ]
    if "fast" in compare:
        ref, project, verdict = compare["fast"]["reference"], compare["fast"]["project"], compare["fast"].get("verdict")
        seconds = ref.get("median_seconds_to_target")
        ref_cell = _unavailable(ref) or (
            (f"{seconds:.1f} s of fit to" if seconds is not None else "not in every run to")
            + f" {ref['target']:.1%} ({_runs(ref['runs'], _keras_run)})"
        )
        project_cell = (
            f"{project['median_fit_seconds']:.1f} s of fit, {project['median_test_accuracy']:.2%} "
            if "median_fit_seconds" in project
            else ""
        ) + f"({_runs(project['runs'], _fast_run)})"
        ratio = "" if not verdict or verdict["time_ratio"] is None else f"{verdict['time_ratio']:.3f}x"
        out.append(
            f'| `fast` vs the Keras "simple MNIST convnet", fit time | {ref_cell} | {project_cell} | {ratio} '
            f"| <= {FAST_MAX_TIME_RATIO}x the time at >= {FAST_MIN_ACCURACY:.1%} | {_met(verdict)} "
            f"| {_pct(max_other_cpu(compare['fast']))} |"
        )
    if "seed" in compare:
        ref, project, verdict = compare["seed"]["reference"], compare["seed"]["project"], compare["seed"].get("verdict")
        ref_cell = _unavailable(ref) or (
            f"{_rate(ref.get('median_images_per_second'))} img/s, torch {ref.get('torch', '?')} "
            f"({_runs(ref['runs'], _rate_run)})"
        )
        project_cell = (
            f"{_rate(project.get('median_images_per_second'))} img/s, {project['precision']} "
            f"({_runs(project['runs'], _rate_run)})"
        )
        ratio = "" if not verdict or verdict["speedup"] is None else f"{verdict['speedup']:.2f}x"
        out.append(
            f"| `seed` vs the seed network in PyTorch, training images/s ({project['steps']} steps of batch "
            f"{project['batch_size']}) | {ref_cell} | {project_cell} | {ratio} | >= {SEED_MIN_SPEEDUP}x "
            f"| {_met(verdict)} | {_pct(max_other_cpu(compare['seed']))} |"
        )
    return out


def _keras_run(run: dict[str, Any]) -> str:
    reached = "" if run["reached"] else f" to {run['test_accuracy']:.2%}, short of the target"
    return f"{run['seconds_to_target']:.1f}{reached}"


def _fast_run(run: dict[str, Any]) -> str:
    return f"{run['fit_seconds']:.1f} s {run['test_accuracy']:.2%}"


def _rate_run(run: dict[str, Any]) -> str:
    return f"{run['images_per_second']:,.0f}"


def _unavailable(reference: dict[str, Any]) -> str:
    return f"unavailable: {reference['why']}" if "why" in reference else ""


def _runs(runs: list[dict[str, Any]], figure: Callable[[dict[str, Any]], str]) -> str:
    """Each run's figure, or "failed" for one that failed."""
    return ", ".join("failed" if "error" in r else figure(r) for r in runs) or "no runs"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _met(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "not yet measured"
    return {True: "yes", False: "no"}.get(verdict["met"], "no verdict")


def _secs(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def run_line(run: dict[str, Any]) -> str:
    """One accuracy run in a line, for progress."""
    if "error" in run:
        return f"failed: {run['error']}"
    return (
        f"test accuracy {run['test_accuracy']:.4f}, fit {run['fit_seconds']:.1f} s, "
        f"{run['train_images_per_second']:.0f} img/s, peak RSS {run['peak_rss_mib']:.0f} MiB"
    )


def max_other_cpu(comparison: dict[str, Any]) -> float | None:
    """The most CPU other processes used during any run of either side of `comparison`, percent of one core."""
    values = [
        r["other_cpu_percent"]
        for side in ("reference", "project")
        for r in comparison[side]["runs"]
        if r.get("other_cpu_percent") is not None
    ]
    return max(values) if values else None
