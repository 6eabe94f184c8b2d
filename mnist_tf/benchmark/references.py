"""The reference programs of the `compare` part (../shared/bench): where they are, running them, reading them.

`keras_convnet_to99.py` prints the fit seconds the Keras "simple MNIST
convnet" recipe takes to reach a test accuracy; `seed_torch.py` prints the
training images/s of the seed network in PyTorch. Both run as child processes,
as they are, and read the MNIST archives the project reads.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_tf.benchmark.measurements import StealMeter

TORCH_PYTHON_ENV = "MNIST_TF_TORCH_PYTHON"
BENCH_DIR_ENV = "MNIST_TF_BENCH_DIR"
KERAS_PROGRAM = "keras_convnet_to99.py"
TORCH_PROGRAM = "seed_torch.py"
FAST_MIN_ACCURACY = 0.990  # the test accuracy the Keras reference trains to (the `fast` target's)
TORCH_STEPS = 400  # training steps per run, as the reference's README runs it (`--limit-steps 400`)
REFERENCE_TIMEOUT_SECONDS = 3600  # a hung reference must not hold the benchmark forever


DEFAULT_BENCH_DIR = Path("../shared/bench")  # beside a checkout, for commands run from its top folder


def bench_dir(chosen: str | Path | None = None) -> Path:
    """Where the reference programs are: `chosen` (`benchmark --bench-dir`), else `$MNIST_TF_BENCH_DIR`,
    else ../shared/bench from the current folder (a checkout's top folder, where `make benchmark` runs)."""
    chosen = chosen or os.environ.get(BENCH_DIR_ENV) or DEFAULT_BENCH_DIR
    return Path(chosen).expanduser().absolute()


def torch_python() -> dict[str, Any]:
    """The Python that runs the torch reference: {"python", "torch": version}, or {"python": None, "why"}.

    `$MNIST_TF_TORCH_PYTHON` if set (it must import torch and numpy), else this
    Python if it imports them. Checked in a child process: torch is not imported here.
    """
    chosen = os.environ.get(TORCH_PYTHON_ENV)
    python = chosen or sys.executable
    try:
        done = subprocess.run(
            [python, "-c", "import numpy, torch; print(torch.__version__)"],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        problem = None if done.returncode == 0 else _last_line(done.stderr) or f"exit status {done.returncode}"
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem is None:
        return {"python": python, "torch": done.stdout.strip()}
    if chosen:
        why = f"${TORCH_PYTHON_ENV}={chosen} cannot import torch and numpy ({problem})"
    else:
        why = (
            f"this project's Python ({python}) cannot import torch ({problem}); "
            f"set ${TORCH_PYTHON_ENV} to a Python that has torch and numpy"
        )
    return {"python": None, "why": why}


# --- the reference programs' output ---------------------------------------------

_KERAS_EPOCH = re.compile(r"^epoch (\d+): test ([0-9.]+) fit_seconds ([0-9.]+)$")
_KERAS_RESULT = re.compile(r"^REF seconds_to_target ([0-9.]+) acc ([0-9.]+) epochs (\d+)$")


def parse_keras_output(stdout: str, target: float) -> dict[str, Any]:
    """`keras_convnet_to99.py`'s figures: fit seconds until its last epoch, that epoch's test accuracy, whether
    it reached `target` (it stops at 15 epochs if not), and the test accuracy after every epoch.

    Raises ValueError when its result line is missing.
    """
    curve, result = [], None
    for line in stdout.splitlines():
        if m := _KERAS_EPOCH.match(line.strip()):
            curve.append({"epoch": int(m[1]), "test_accuracy": float(m[2]), "seconds": float(m[3])})
        elif m := _KERAS_RESULT.match(line.strip()):
            result = m
    if result is None:
        raise ValueError(f"no 'REF seconds_to_target ...' line in its output (last line: {_last_line(stdout)!r})")
    accuracy = float(result[2])
    return {
        "seconds_to_target": float(result[1]),
        "test_accuracy": accuracy,
        "epochs": int(result[3]),
        "reached": accuracy >= target,
        "curve": curve,
    }


def parse_torch_output(stdout: str) -> dict[str, Any]:
    """`seed_torch.py`'s figures from its `SUMMARY {json}` line, last epoch: steady-state images/s (after its
    warm-up steps, the figure compared), images/s over all steps, steps, and its torch version and threads.

    Raises ValueError when the line is missing or has no steady-state rate (fewer steps than its warm-up).
    """
    lines = [line for line in stdout.splitlines() if line.startswith("SUMMARY ")]
    if not lines:
        raise ValueError(f"no 'SUMMARY {{...}}' line in its output (last line: {_last_line(stdout)!r})")
    summary = json.loads(lines[-1][len("SUMMARY ") :])
    epoch = summary["epochs"][-1]
    steady = float(epoch["img_s_steady"])
    if not math.isfinite(steady):
        raise ValueError(f"no steady-state rate: {epoch['steps']} steps are not more than its warm-up steps")
    return {
        "images_per_second": steady,
        "images_per_second_with_warmup": float(epoch["img_s"]),
        "steps": epoch["steps"],
        "images": epoch["images"],
        "train_seconds": epoch["train_s"],
        "median_step_ms": epoch.get("median_step_ms"),
        "batch_size": summary["batch"],
        "threads": summary["threads"],
        "torch": summary["torch"],
    }


# --- running them -----------------------------------------------------------------


def run_reference(
    command: list[str], parse: Callable[[str], dict[str, Any]], env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Runs one reference program to the end and returns `parse` of its output, or {"error"}; with CPU steal."""
    steal = StealMeter()
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}", "steal_percent": steal.stop()}
    if done.returncode != 0:
        why = _last_line(done.stderr) or _last_line(done.stdout)
        return {"error": f"exit status {done.returncode}: {why}", "steal_percent": steal.stop()}
    try:
        return {**parse(done.stdout), "steal_percent": steal.stop()}
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"cannot read its output: {e}", "steal_percent": steal.stop()}


def _data_env(source: Any) -> dict[str, str]:
    """The programs read the archives from `$MNIST_GZ_DIR`: the same ones the project reads, where it reads archives."""
    manual_dir = getattr(source, "manual_dir", None)
    return {"MNIST_GZ_DIR": str(manual_dir)} if manual_dir else {}


def keras_reference(
    programs: Path,
    source: Any,
    threads: int,
    target: float = FAST_MIN_ACCURACY,
    timeout: float = REFERENCE_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """One run of `keras_convnet_to99.py` with this project's Python and TensorFlow thread pools."""
    env = {
        **_data_env(source),
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    command = [sys.executable, str(programs / KERAS_PROGRAM), str(target)]
    return run_reference(command, lambda out: parse_keras_output(out, target), env, timeout)


def torch_reference(
    python: str,
    programs: Path,
    source: Any,
    threads: int,
    seed: int,
    steps: int = TORCH_STEPS,
    timeout: float = REFERENCE_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """One run of `seed_torch.py` as its README gives it (`--epochs 1 --limit-steps 400 --no-eval`), with `--threads`
    and `--seed`."""
    command = [
        python, str(programs / TORCH_PROGRAM), "--epochs", "1", "--limit-steps", str(steps),
        "--threads", str(threads), "--seed", str(seed), "--no-eval",
    ]  # fmt: skip
    return {"seed": seed, **run_reference(command, parse_torch_output, _data_env(source), timeout)}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
