"""run.json: what a run dir remembers beside its config.

    {"data": {"data_dir": "/abs/tfds", "manual_dir": "/abs/archives"},
     "trained": [{"from_epoch": 0, "jit": null, "steps_per_execution": 1, "deterministic": false,
                  "strategy": "default", "replicas": 1},
                 {"from_epoch": 2, "jit": true, ...}]}

`data` is where `train` read MNIST (absolute paths; null: TFDS's default, or
no archives), so `evaluate`, `export` and `benchmark`, given the run dir or its
model.keras, read it from the same place unless told otherwise (`data_source`).
`trained` has one entry per `train` that worked in the run dir, from the epoch
it started at, with the runtime settings it used: a run may resume with others
(`config.RUNTIME`). Written whole, at the start of each `train`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_tf.config import RUNTIME, Config
from mnist_tf.core.files import write_json
from mnist_tf.core.rundir import RunDir
from mnist_tf.data import sources
from mnist_tf.training.resume import latest_state

DATA_OPTIONS = {"data_dir": "--data-dir", "manual_dir": "--manual-dir"}


def read(run_dir: Path, note: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """`run_dir`'s run.json; empty when there is none, or (with a note) when it cannot be read."""
    path = RunDir(run_dir).run_info
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
        if isinstance(content, dict):
            return content
        reason = "not a JSON object"
    except (OSError, ValueError) as e:
        reason = type(e).__name__
    note(f"cannot read {path} ({reason}): its data folders are not used")
    return {}


def record_start(run_dir: Path, source: sources.Source, cfg: Config, strategy: dict[str, Any]) -> None:
    """Adds this `train` to run.json: the data source, and the runtime settings from the epoch it starts at.

    `strategy` is `distribute.describe`'s record of the strategy made for it.
    """
    run_dir = Path(run_dir)
    found = latest_state(RunDir(run_dir).backup)
    start = {"from_epoch": found[1] if found else 0, **{k: getattr(cfg, k) for k in RUNTIME}, **strategy}
    folders = {name: str(Path(p).absolute()) if (p := getattr(source, name)) else None for name in DATA_OPTIONS}
    trained = read(run_dir).get("trained", [])
    write_json(RunDir(run_dir).run_info, {"data": folders, "trained": [*trained, start]}, "the run's record")


def run_dir_of(model: Path) -> Path | None:
    """The run dir that `model` (a run dir or a file in one, e.g. its model.keras) belongs to; None if none."""
    model = Path(model)
    folder = model if model.is_dir() else model.parent
    return folder if RunDir(folder).run_info.is_file() else None


def data_source(
    model: Path | None,
    data_dir: str | Path | None,
    manual_dir: str | Path | None,
    note: Callable[[str], None] = lambda message: None,
) -> sources.Source:
    """Where a command given `model` reads MNIST: each of `data_dir` and `manual_dir` where given
    (`$MNIST_TF_MANUAL_DIR` counts as given), else the folder the model's run was trained with.

    A remembered folder that no longer exists is left out, with a note, and TFDS's defaults are used.
    """
    given = sources.Source.from_options(data_dir, manual_dir)
    run_dir = run_dir_of(model) if model is not None else None
    if run_dir is None:
        return given
    remembered = read(run_dir, note).get("data") or {}
    chosen, reused = {}, []
    for name, flag in DATA_OPTIONS.items():
        chosen[name] = getattr(given, name)
        path = remembered.get(name)
        if chosen[name] is not None or not isinstance(path, str):
            continue
        if Path(path).is_dir():
            chosen[name] = Path(path)
            reused.append(f"{flag} {path}")
        else:
            note(f"{run_dir} was trained with {flag} {path}, which no longer exists: reading MNIST without it")
    if reused:
        note(f"reading MNIST as {run_dir} was trained: {' '.join(reused)}")
    return sources.Source(**chosen)
