"""A time budget for `fit`: time the first steps, plan the epochs to end inside it, hold the run to it.

`plan` times a few training steps of the run's own network, precision, batch and
input pipeline (augmentation included) on a throwaway copy of the model, then
fits as many of the recipe's epochs as the budget holds; the learning-rate
schedule is made for the planned epochs, so a shortened run still anneals.
The plan is written to the run dir before training and a resumed run keeps it.
`BudgetGuard` stops training after an epoch when the next one would end past
the budget, so a wrong estimate costs at most one epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from typing import Any

import keras
import tensorflow as tf

from mnist_tf.config import Config
from mnist_tf.core.files import write_json
from mnist_tf.core.rundir import RunDir
from mnist_tf.data.pipeline import Datasets
from mnist_tf.modeling.network import build_model
from mnist_tf.training.setup import compile_model

WARMUP_STEPS = 3
TIMED_STEPS = 12
# Per epoch beyond its steps: the checkpoint, the history row, TensorBoard, the validation pass if any.
EPOCH_OVERHEAD_SECONDS = 1.0


def minutes(seconds: float) -> str:
    """A duration as people read one: "9.2 min", "45 s", "0.5 s"."""
    if seconds >= 90:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1g} s"


def epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many epochs fit the budget, from the measured step time."""

    budget_seconds: float
    recipe_epochs: int  # what the config asks for without a budget
    epochs: int  # what the budget holds (never more than the recipe's)
    step_seconds: float
    steps_per_epoch: int
    epoch_seconds: float  # the estimate: steps x step time + overhead
    startup_seconds: float = 0.0  # the first step's tracing and compiling, paid once

    @property
    def planned_seconds(self) -> float:
        return self.startup_seconds + self.epochs * self.epoch_seconds

    def seconds_left(self, epochs_done: int) -> float:
        """The budget a run resumed after `epochs_done` epochs may still spend (at least one epoch's worth)."""
        return max(self.epoch_seconds, self.budget_seconds - epochs_done * self.epoch_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "planned_seconds": round(self.planned_seconds, 1)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def describe(self, expected: dict[int, float] | None = None) -> str:
        """One line for the start of a run: what was planned, what it costs against the recipe."""
        line = (
            f"time budget {minutes(self.budget_seconds)}: {epochs(self.epochs)}, about "
            f"{minutes(self.planned_seconds)} on this CPU ({self.step_seconds * 1000:.0f} ms per step)"
        )
        accuracy = expect(expected, self.epochs)
        if accuracy is not None:
            line += f"; expect about {accuracy:.2%}"
        if self.epochs < self.recipe_epochs:
            line += (
                f". The recipe's {epochs(self.recipe_epochs)} would take about "
                f"{minutes(self.startup_seconds + self.recipe_epochs * self.epoch_seconds)} here"
            )
            recipe_accuracy = expect(expected, self.recipe_epochs)
            if recipe_accuracy is not None:
                line += f" for about {recipe_accuracy:.2%}"
            line += "; pass a larger --time-budget for them"
        return line


def expect(measured: dict[int, float] | None, epochs: int) -> float | None:
    """The test accuracy measured at `epochs`, or read off the line between the two nearest measured
    epoch counts; None outside what was measured."""
    if not measured:
        return None
    if epochs in measured:
        return measured[epochs]
    below = [e for e in measured if e < epochs]
    above = [e for e in measured if e > epochs]
    if not below or not above:
        return None
    low, high = max(below), min(above)
    return measured[low] + (measured[high] - measured[low]) * (epochs - low) / (high - low)


class _StepTimer(keras.callbacks.Callback):
    """The wall-clock time between the ends of consecutive training steps in `fit`."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def step_seconds(cfg: Config, datasets: Datasets, strategy: tf.distribute.Strategy) -> tuple[float, float]:
    """The median seconds of one training step of `cfg` in `fit` on real batches of `datasets.train`,
    and the seconds its first step took (tracing and compiling, which the run pays once).

    A throwaway copy of the model is compiled and fitted for a few steps, in the
    strategy's scope, so the run's own model and optimizer start untouched. Timing
    `fit` itself, not single calls, counts what a real epoch pays per step: the
    input pipeline and augmentation, the training loop and its callbacks.
    """
    steps_per_epoch = math.ceil(datasets.train_examples / cfg.batch_size)
    with strategy.scope():
        model = compile_model(build_model(cfg), cfg, steps_per_epoch, strategy.num_replicas_in_sync)
    timer = _StepTimer()
    model.fit(
        datasets.train.repeat(),
        epochs=1,
        steps_per_epoch=WARMUP_STEPS + TIMED_STEPS,
        callbacks=[timer],
        shuffle=False,  # The tf.data pipeline already shuffles, seeded.
        verbose=0,
    )
    del model
    gaps = [b - a for a, b in zip(timer.ends, timer.ends[1:])][WARMUP_STEPS - 1 :]
    return statistics.median(gaps), timer.ends[0] - timer.start


def make_plan(
    cfg: Config, budget_seconds: float, seconds_per_step: float, train_examples: int, startup_seconds: float = 0.0
) -> Plan:
    """The most epochs of `cfg` (at least one) whose estimated time, start-up included, fits `budget_seconds`."""
    steps = math.ceil(train_examples / cfg.batch_size)
    epoch_seconds = steps * seconds_per_step + EPOCH_OVERHEAD_SECONDS
    epochs = max(1, min(cfg.epochs, int((budget_seconds - startup_seconds) // epoch_seconds)))
    return Plan(
        budget_seconds,
        cfg.epochs,
        epochs,
        round(seconds_per_step, 5),
        steps,
        round(epoch_seconds, 3),
        round(startup_seconds, 2),
    )


def read_plan(run: RunDir) -> Plan | None:
    try:
        return Plan.from_dict(json.loads(run.plan.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def planned(cfg: Config, run: RunDir, datasets: Datasets, strategy: tf.distribute.Strategy) -> tuple[Plan, bool]:
    """The run's plan: the one its run dir holds (a resumed run keeps it), else a new one, written there.
    Returns it and whether it is new."""
    kept = read_plan(run)
    if kept is not None:
        return kept, False
    per_step, startup = step_seconds(cfg, datasets, strategy)
    new = make_plan(cfg, cfg.time_budget, per_step, datasets.train_examples, startup)
    write_json(run.plan, new.to_dict(), "the run's time plan")
    return new, True


class BudgetGuard(keras.callbacks.Callback):
    """Stops training after an epoch when one more epoch, as long as the longest so far, would end past
    `seconds` of fit: a plan that was wrong by a little costs at most one epoch, not hours."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.stopped_after: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()
        self.epoch_start = self.start
        self.longest = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.epoch_start)
        last = epoch + 1 >= self.params.get("epochs", 0)
        if not last and now - self.start + self.longest > self.seconds:
            self.model.stop_training = True
            self.stopped_after = epoch + 1
