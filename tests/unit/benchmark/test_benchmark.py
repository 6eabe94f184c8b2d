"""The benchmark's measuring functions, on tiny inputs: right quantities, no hangs."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_tf import benchmark, config
from mnist_tf.benchmark import compare, measurements, references, report, training
from mnist_tf.core.errors import UserError
from mnist_tf.data.sources import Source
from mnist_tf.modeling.network import build_model


def test_forward_flops_counts_convolutions_and_dense_layers():
    # Seed network: conv 1->32 and 32->64 at 28x28 (3x3), dense 12,544->128, logits 128->10.
    expected = 2 * (28 * 28 * 9 * 1 * 32 + 28 * 28 * 9 * 32 * 64 + 14 * 14 * 64 * 128 + 128 * 10)
    assert measurements.forward_flops(build_model(config.SEED)) == expected


def test_training_throughput_measures_every_repeat():
    settings = benchmark.Settings(throughput_images=256, repeats=2)
    row = training.training_throughput(config.FAST.replace(batch_size=32), settings)
    assert len(row["repeats"]) == 2 and all(r > 0 for r in row["repeats"])
    assert row["images_per_second"] == pytest.approx(float(np.median(row["repeats"])), rel=1e-3)
    assert row["train_mflops_per_image"] == pytest.approx(3 * row["forward_mflops_per_image"], rel=1e-2)


def test_throughput_cases_cover_two_batch_sizes_and_xla_on_and_off():
    cases = training.throughput_cases(benchmark.Settings(presets=("fast",)))
    bfloat16 = {(cfg.batch_size, cfg.jit) for _, cfg in cases if cfg.mixed_precision == "bfloat16"}
    assert bfloat16 == {(b, j) for b in (config.FAST.batch_size, 2 * config.FAST.batch_size) for j in (False, True)}
    assert [(cfg.batch_size, cfg.jit) for _, cfg in cases if cfg.mixed_precision == "off"] == [
        (config.FAST.batch_size, False)
    ]


def test_a_failing_training_process_is_reported_not_waited_for(tmp_path):
    # No archives and no data dir: the child fails at once with a UserError.
    source = Source(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "no-such-folder")
    result = training.accuracy_run(config.FAST, tmp_path / "run", source, threads=1)
    assert "error" in result and "manual dir" in result["error"]


def test_other_cpu_is_the_machines_busy_time_less_this_process_and_its_children(monkeypatch):
    import types

    # Two readings: CPU seconds the machine was busy, this process's and its children's, wall seconds.
    busy, own, wall = (100.0, 103.5), (10.0, 12.0), (50.0, 52.0)
    monkeypatch.setattr(measurements, "busy_seconds", iter(busy).__next__)
    monkeypatch.setattr(measurements.OtherCpuMeter, "_own_seconds", staticmethod(iter(own).__next__))
    monkeypatch.setattr(measurements, "time", types.SimpleNamespace(perf_counter=iter(wall).__next__))
    assert measurements.OtherCpuMeter().stop() == 75.0  # 3.5 s busy, 2 of them ours, in 2 s: 75% of a core


def test_accuracy_table_has_a_column_per_target_and_a_row_per_run_failed_or_not():
    run = {
        "seed": 1,
        "test_accuracy": 0.991,
        "fit_seconds": 10.0,
        "train_images_per_second": 5000.0,
        "seconds_to": {"0.990": 8.0, "0.995": None},
        "peak_rss_mib": 900.0,
        "steal_percent": None,
    }
    summary = training.summarise_runs([run, {"seed": 2, "error": "RuntimeError: boom"}])
    lines = report.accuracy_table({"fast": summary})
    assert "| s to 99.0% | s to 99.5% |" in lines[0]
    assert "| fast | 1 | 99.10% | 10.0 | 5,000 | 8.0 | not reached | 900 | n/a |" in lines
    assert any(line.startswith("| fast | 2 | failed: RuntimeError: boom |") for line in lines)
    assert any(line.startswith("| **fast median** | | **99.10%** |") for line in lines)
    assert {line.count("|") for line in lines} == {lines[1].count("|")}  # every row has every column


# Real output of the reference programs on the 2-core machine (busy: the figures mean nothing as speeds).
KERAS_ONE_EPOCH = """\
epoch 1: test 0.9732 fit_seconds 11.6
REF seconds_to_target 11.64 acc 0.9732 epochs 1
"""


TORCH_10_STEPS = """\
python 3.11.7 torch 2.14.1+cu130 threads intra=2 interop=2 nproc=2 mkldnn=True
data loaded in 1.25s: train (60000, 1, 28, 28) test (10000, 1, 28, 28)
params: trainable=1626314 bn_buffers=448
epoch 1: steps=10 train_time=2.48s img/s=258.1 steady img/s=229.5 median_step=258.77ms loss=1.2233
total wall (train+eval, excl. data load): 2.48s
SUMMARY {"impl": "seed_torch", "torch": "2.14.1+cu130", "threads": 2, "params": 1626314, "batch": 64, "epochs": \
[{"epoch": 1, "steps": 10, "images": 640, "train_s": 2.479, "img_s": 258.1, "img_s_steady": 229.5, \
"train_loss": 1.2233, "median_step_ms": 258.77}], "total_wall_s": 2.48}
"""


TORCH_5_STEPS = """\
epoch 1: steps=5 train_time=2.11s img/s=151.8 steady img/s=nan median_step=Nonems loss=1.5701
total wall (train+eval, excl. data load): 2.12s
SUMMARY {"impl": "seed_torch", "torch": "2.14.1+cu130", "threads": 2, "params": 1626314, "batch": 64, "epochs": \
[{"epoch": 1, "steps": 5, "images": 320, "train_s": 2.108, "img_s": 151.8, "img_s_steady": NaN, \
"train_loss": 1.5701}], "total_wall_s": 2.12}
"""


def test_keras_reference_output_gives_its_seconds_accuracy_and_whether_it_reached_the_target():
    run = references.parse_keras_output(KERAS_ONE_EPOCH, target=0.5)
    assert run == {
        "seconds_to_target": 11.64, "test_accuracy": 0.9732, "epochs": 1, "reached": True,
        "curve": [{"epoch": 1, "test_accuracy": 0.9732, "seconds": 11.6}],
    }  # fmt: skip
    assert references.parse_keras_output(KERAS_ONE_EPOCH, target=0.99)["reached"] is False
    assert references.parse_keras_output(KERAS_ONE_EPOCH, target=0.9732)["reached"] is True
    with pytest.raises(ValueError, match="REF seconds_to_target"):  # e.g. killed after its first epoch
        references.parse_keras_output(KERAS_ONE_EPOCH.splitlines()[0], target=0.99)


def test_torch_reference_output_gives_its_steady_state_images_per_second():
    run = references.parse_torch_output(TORCH_10_STEPS)
    assert run["images_per_second"] == 229.5 and run["images_per_second_with_warmup"] == 258.1
    assert (run["steps"], run["images"], run["batch_size"], run["threads"]) == (10, 640, 64, 2)
    assert run["torch"] == "2.14.1+cu130"
    with pytest.raises(ValueError, match="warm-up"):  # 5 steps are all warm-up: its steady rate is NaN
        references.parse_torch_output(TORCH_5_STEPS)
    with pytest.raises(ValueError, match="SUMMARY"):
        references.parse_torch_output(TORCH_10_STEPS.rsplit("SUMMARY", 1)[0])


def test_a_reference_that_fails_or_prints_something_else_is_recorded_as_an_error():
    fails = [sys.executable, "-c", "import sys; print('epoch 1: ...'); sys.exit('FileNotFoundError: no archives')"]
    run = references.run_reference(fails, references.parse_torch_output, {}, timeout=60)
    assert run["error"] == "exit status 1: FileNotFoundError: no archives"
    run = references.run_reference(
        [sys.executable, "-c", "print('hello')"], references.parse_torch_output, {}, timeout=60
    )
    assert run["error"].startswith("cannot read its output: no 'SUMMARY {...}' line") and "'hello'" in run["error"]
    run = references.run_reference([sys.executable, "-c", "print('SUMMARY {}')"], references.parse_torch_output, {}, 60)
    assert run["error"] == "cannot read its output: 'epochs'"
    hangs = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert references.run_reference(hangs, references.parse_torch_output, {}, timeout=1)["error"].startswith(
        "TimeoutExpired"
    )


def test_the_references_run_on_the_projects_threads_and_archives(monkeypatch):
    commands = []

    def run_reference(command, parse, env, timeout):
        commands.append((command, env))
        return {}

    monkeypatch.setattr(references, "run_reference", run_reference)
    references.keras_reference(Path("/bench"), Source(manual_dir=Path("/archives")), threads=3)
    references.torch_reference("/torch/python", Path("/bench"), Source(), threads=3, seed=2)
    (keras, keras_env), (torch, torch_env) = commands
    assert keras == [sys.executable, "/bench/keras_convnet_to99.py", "0.99"]
    assert keras_env["TF_NUM_INTRAOP_THREADS"] == "3" and keras_env["TF_NUM_INTEROP_THREADS"] == "1"  # as set_threads
    assert keras_env["MNIST_GZ_DIR"] == "/archives"
    assert torch == [
        "/torch/python", "/bench/seed_torch.py", "--epochs", "1", "--limit-steps", "400", "--threads", "3",
        "--seed", "2", "--no-eval",
    ]  # fmt: skip
    assert torch_env == {}  # no archives given: the program's own default folder


def test_the_torch_reference_is_unavailable_with_the_reason_without_a_python_that_has_torch(tmp_path, monkeypatch):
    monkeypatch.setenv(references.TORCH_PYTHON_ENV, str(tmp_path / "no-python"))
    found = references.torch_python()
    assert found["python"] is None and f"{references.TORCH_PYTHON_ENV}={tmp_path / 'no-python'}" in found["why"]
    without_torch = tmp_path / "python"
    without_torch.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    without_torch.chmod(0o755)
    monkeypatch.setenv(references.TORCH_PYTHON_ENV, str(without_torch))
    assert references.torch_python() == {
        "python": None,
        "why": f"${references.TORCH_PYTHON_ENV}={without_torch} cannot import torch and numpy "
        "(ModuleNotFoundError: No module named 'torch')",
    }
    monkeypatch.delenv(references.TORCH_PYTHON_ENV)  # Then this Python, where it has torch.
    found = references.torch_python()
    if importlib.util.find_spec("torch") is None:
        assert found["python"] is None and found["why"].startswith(f"this project's Python ({sys.executable})")
        assert f"set ${references.TORCH_PYTHON_ENV}" in found["why"]
    else:
        assert found["python"] == sys.executable


def test_without_torch_the_seed_comparison_measures_the_project_and_gives_no_verdict(monkeypatch):
    settings = benchmark.Settings(seeds=(1, 2))
    torch = {"python": None, "why": "no torch here"}
    messages = []
    steps = list(compare.seed_comparison(settings, None, 1, references.bench_dir(), torch, messages.append, steps=4))
    last = steps[-1]
    assert last["reference"]["runs"] == [] and last["reference"]["why"] == "no torch here"
    assert [r["seed"] for r in last["project"]["runs"]] == [1, 2]  # one measurement per seed, as with torch
    assert all(r["images_per_second"] > 0 for r in last["project"]["runs"])
    assert last["project"]["median_images_per_second"] > 0 and last["project"]["steps"] == 4
    assert last["verdict"] == {"speedup": None, "met": None, "why": "the torch reference is unavailable: no torch here"}
    assert messages[-1] == "compare seed: no verdict: the torch reference is unavailable: no torch here"
    table = "\n".join(report.compare_table({"bench_dir": "b", "threads": 1, "seed": last}))
    assert "| unavailable: no torch here |" in table


def _fast_run(seed, fit_seconds, accuracy):
    return {
        "seed": seed, "test_accuracy": accuracy, "fit_seconds": fit_seconds, "train_images_per_second": 1.0,
        "seconds_to": {"0.990": fit_seconds, "0.995": None}, "peak_rss_mib": 1.0,
    }  # fmt: skip


def test_the_fast_target_is_the_median_fit_time_against_the_keras_median_at_99_percent():
    reference = compare.keras_summary(
        [{"seconds_to_target": s, "reached": True, "test_accuracy": 0.99} for s in (100.0, 90.0, 120.0)]
    )
    assert reference["median_seconds_to_target"] == 100.0

    def verdict(fits, accuracies, ref=reference):
        runs = [_fast_run(seed, fit, accuracy) for seed, (fit, accuracy) in enumerate(zip(fits, accuracies), 1)]
        return compare.fast_verdict(ref, training.summarise_runs(runs))

    assert verdict((15.0, 14.0, 30.0), (0.991, 0.99, 0.995)) == {"time_ratio": 0.15, "met": True}  # on the line
    assert verdict((15.1, 15.1, 1.0), (0.991, 0.99, 0.995)) == {"time_ratio": 0.151, "met": False}
    assert verdict((10.0, 10.0, 10.0), (0.991, 0.989, 0.9895)) == {"time_ratio": 0.1, "met": False}  # median 98.95%
    # A reference run that stopped short of 99% has no time to 99%: no verdict rather than a wrong one.
    short = compare.keras_summary([{"seconds_to_target": 300.0, "reached": False, "test_accuracy": 0.989}])
    assert short["median_seconds_to_target"] is None
    assert verdict((10.0,), (0.995,), short)["met"] is None
    failed = compare.keras_summary([{"error": "exit status 1: boom"}, {"seconds_to_target": 80.0, "reached": True}])
    assert failed["median_seconds_to_target"] == 80.0  # the finished runs count
    assert verdict((10.0,), (0.995,), {"why": "no keras_convnet_to99.py"}) == {
        "time_ratio": None, "met": None, "why": "the Keras reference is unavailable: no keras_convnet_to99.py",
    }  # fmt: skip
    assert compare.fast_verdict(reference, training.summarise_runs([{"seed": 1, "error": "boom"}]))["met"] is None


def test_the_seed_target_is_the_median_rate_over_the_torch_median():
    def verdict(ours, theirs):
        return compare.seed_verdict({"median_images_per_second": theirs}, {"median_images_per_second": ours})

    assert verdict(3000.0, 2000.0) == {"speedup": 1.5, "met": True}  # on the line
    assert verdict(2990.0, 2000.0) == {"speedup": 1.495, "met": False}
    assert verdict(3000.0, None)["met"] is None and verdict(None, 2000.0)["met"] is None


def test_compare_runs_each_reference_once_per_seed_beside_the_project_and_records_it(tmp_path, monkeypatch):
    from mnist_tf.training import precision

    for name in (references.KERAS_PROGRAM, references.TORCH_PROGRAM):
        (tmp_path / name).write_text("")
    monkeypatch.setenv(references.BENCH_DIR_ENV, str(tmp_path))
    calls = []

    def keras_reference(programs, source, threads, target=0.99):
        calls.append(("keras", threads))
        return {"seconds_to_target": 100.0 + len(calls), "reached": True, "test_accuracy": 0.99, "epochs": 5}

    def torch_reference(python, programs, source, threads, seed, steps=400):
        calls.append(("torch", seed, threads, python))
        return {"seed": seed, "images_per_second": 1000.0 * seed}

    def preset_run(name, seed, threads, source, runs_dir, progress, part):
        calls.append((name, seed))
        return _fast_run(seed, 10.0 * seed, 0.992)

    def training_throughput(cfg, settings):
        calls.append(("seed", cfg.seed, cfg.mixed_precision, settings.throughput_images // cfg.batch_size))
        return {"images_per_second": 2000.0 * cfg.seed}

    monkeypatch.setattr(compare, "keras_reference", keras_reference)
    monkeypatch.setattr(compare, "torch_reference", torch_reference)
    monkeypatch.setattr(compare, "preset_run", preset_run)
    monkeypatch.setattr(compare, "training_throughput", training_throughput)
    monkeypatch.setattr(compare, "torch_python", lambda: {"python": "/torch/python", "torch": "9.9"})
    monkeypatch.setattr(precision, "resolve", lambda cfg, gpu=False: ("bfloat16", {"chosen": "bfloat16", "how": "set"}))
    saved = []
    settings = benchmark.Settings(seeds=(1, 2, 3))
    result = benchmark.measure(
        ("compare",), settings, None, tmp_path, progress=lambda m: None, save=lambda r: saved.append(json.dumps(r))
    )
    assert calls == [
        ("keras", result["threads"]["intra_op"]), ("fast", 1), ("keras", result["threads"]["intra_op"]), ("fast", 2),
        ("keras", result["threads"]["intra_op"]), ("fast", 3),
        ("torch", 1, result["threads"]["intra_op"], "/torch/python"), ("seed", 1, "bfloat16", 400),
        ("torch", 2, result["threads"]["intra_op"], "/torch/python"), ("seed", 2, "bfloat16", 400),
        ("torch", 3, result["threads"]["intra_op"], "/torch/python"), ("seed", 3, "bfloat16", 400),
    ]  # fmt: skip
    fast, seed = result["compare"]["fast"], result["compare"]["seed"]
    assert fast["reference"]["median_seconds_to_target"] == 103.0 and fast["project"]["median_fit_seconds"] == 20.0
    assert fast["verdict"] == {"time_ratio": round(20 / 103, 4), "met": False}
    assert seed["reference"]["median_images_per_second"] == 2000.0
    assert seed["project"]["median_images_per_second"] == 4000.0
    assert seed["verdict"] == {"speedup": 2.0, "met": True}
    assert len(saved) >= 12 and json.loads(saved[-1]) == json.loads(json.dumps(result))  # saved after every run
    lines = report.compare_table(result["compare"])
    assert {line.count("|") for line in lines if line.startswith("|")} == {8}  # every row has every column
    table = benchmark.tables(result)
    assert "| 0.194x | <= 0.15x the time at >= 99.0% | no |" in table
    assert "| 2,000 img/s, torch 9.9 (1,000, 2,000, 3,000) | 4,000 img/s, bfloat16 (2,000, 4,000, 6,000) |" in table
    assert "| 2.00x | >= 1.5x | yes |" in table
    others = [r["other_cpu_percent"] for side in seed.values() if "runs" in side for r in side["runs"]]
    assert len(others) == 6 and f"| yes | {report.max_other_cpu(seed):.0f}% |" in table


def test_compare_needs_the_fast_or_the_seed_preset(tmp_path):
    with pytest.raises(UserError, match="--part compare compares the fast and seed presets"):
        benchmark.measure(("compare",), benchmark.Settings(presets=("default",)), None, tmp_path)


def test_the_throughput_table_shows_the_cost_per_image_and_what_the_machine_achieved():
    row = {"preset": "fast", "precision": "float32", "batch_size": 512, "jit": False, "images_per_second": 2000.0}
    row |= {"repeats": [1990.0, 2000.0, 2010.0], "forward_mflops_per_image": 5.68, "train_mflops_per_image": 17.04}
    row |= {"fraction_of_peak": 0.25, "warmup_seconds": 1.0, "steal_percent": 0.0}
    header, _, line = report.throughput_table([row])[:3]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    assert cells["M multiply-adds/img (forward)"] == "2.84"  # 5.68 MFLOP: 2.84 M multiply-adds
    assert cells["GFLOP/s"] == "34.1"  # 2,000 images/s x 17.04 MFLOP
    assert cells["of peak"] == "25.0%"


def test_the_machine_line_says_when_onednn_is_held_to_an_older_instruction_set(monkeypatch):
    threads = {"intra_op": 2, "inter_op": 1}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    held = measurements.machine()
    assert held["onednn_max_cpu_isa"] == "AVX2"
    assert "cores, oneDNN held to AVX2, GPUs:" in benchmark.tables({"machine": held, "threads": threads})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    native = measurements.machine()
    assert native["onednn_max_cpu_isa"] is None
    assert "held to" not in benchmark.tables({"machine": native, "threads": threads})
