"""The run dir: everything of one training run in one folder, and the one place its layout is spelled.

    config.json         the Config, written first
    run.json            where the data came from; each start's runtime settings (`training.runinfo`)
    .lock               held by the process training in it (`training.runlock`)
    model.keras         the model after the last finished epoch (atomic writes)
    backup/             the resume state while a run is unfinished (`training.resume`)
    plan.json           with a time budget: the epochs planned from the measured step time (`training.budget`)
    history.csv         one row per epoch
    logs/               TensorBoard
    learning_curves.png
    calibration.json    the temperature that calibrates the model's probabilities (`evaluation.calibration`)
    metrics.json        written last: its presence marks the run finished
    evaluation/         `mnist-tf evaluate`'s report, by default

Training writes it (`training`, `jobs.train`); evaluate, export, predict and
benchmark read it. This module only names paths: it reads and writes nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

CONFIG = "config.json"
RUN_INFO = "run.json"
LOCK = ".lock"
MODEL = "model.keras"
BACKUP = "backup"
HISTORY = "history.csv"
LOGS = "logs"
LEARNING_CURVES = "learning_curves.png"
METRICS = "metrics.json"
CALIBRATION = "calibration.json"
PLAN = "plan.json"
EVALUATION = "evaluation"
# Files a finished run keeps that describe it; the SavedModel export copies them as assets.
DESCRIPTION = (CONFIG, METRICS, CALIBRATION)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The paths of one run dir."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    config = property(lambda self: self.path / CONFIG)
    run_info = property(lambda self: self.path / RUN_INFO)
    lock = property(lambda self: self.path / LOCK)
    model = property(lambda self: self.path / MODEL)
    backup = property(lambda self: self.path / BACKUP)
    history = property(lambda self: self.path / HISTORY)
    logs = property(lambda self: self.path / LOGS)
    learning_curves = property(lambda self: self.path / LEARNING_CURVES)
    metrics = property(lambda self: self.path / METRICS)
    calibration = property(lambda self: self.path / CALIBRATION)
    plan = property(lambda self: self.path / PLAN)
    evaluation = property(lambda self: self.path / EVALUATION)

    def is_run(self) -> bool:
        """Whether training ever started here (its config was written)."""
        return self.config.is_file()

    def is_finished(self) -> bool:
        return self.metrics.exists()


def of_model(model: Path) -> RunDir | None:
    """The run dir a model file belongs to: `RUN/model.keras` -> RUN; None for any other model."""
    model = Path(model)
    return RunDir(model.parent) if model.name == MODEL else None
