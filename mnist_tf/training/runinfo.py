"""run.json: what a run dir remembers beside its config.

    {"data": {"data_dir": "/abs/tfds", "manual_dir": "/abs/archives", "dataset": "fashion_mnist",
              "class_names": ["T-shirt/top", "Trouser", ...]},
     "trained": [{"from_epoch": 0, "jit": null, "steps_per_execution": 1, "deterministic": false,
                  "strategy": "default", "replicas": 1},
                 {"from_epoch": 2, "jit": true, ...}]}

`data` is what `train` read and where: the data set (a TFDS name, or a folder of IDX
archives as an absolute path), its class names, and TFDS's folders (absolute paths; null:
TFDS's default, or no archives), so `evaluate`, `export` and `benchmark`, given the run dir
or its model.keras, read the same data from the same place unless told otherwise
(`data_source`), and `predict` names the classes (`class_names`). A run without `dataset`
was trained on MNIST. An unfinished run resumes only on the data set it started with.
`trained` has one entry per `train` that worked in the run dir, from the epoch
it started at, with the runtime settings it used: a run may resume with others
(`config.RUNTIME`). Written whole, at the start of each `train`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_tf.config import RUNTIME, Config
from mnist_tf.config.choices import DATASETS, DEFAULT_DATASET
from mnist_tf.core.errors import UserError
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
    before = read(run_dir)
    started_on = (before.get("data") or {}).get("dataset", DEFAULT_DATASET) if before else source.dataset
    if started_on != source.dataset:
        raise UserError(
            f"{run_dir} holds a run on {started_on}: pass --dataset {started_on} to resume it, "
            f"or choose another --run-dir for {source.dataset}"
        )
    data = {**folders, "dataset": source.dataset, "class_names": list(sources.class_names(source))}
    write_json(
        RunDir(run_dir).run_info, {"data": data, "trained": [*before.get("trained", []), start]}, "the run's record"
    )


def run_dir_of(model: Path) -> Path | None:
    """The run dir that `model` (a run dir or a file in one, e.g. its model.keras) belongs to; None if none."""
    model = Path(model)
    folder = model if model.is_dir() else model.parent
    return folder if RunDir(folder).run_info.is_file() else None


def _dataset(run_dir: Path, remembered: dict[str, Any], note: Callable[[str], None]) -> str:
    """The data set `run_dir` was trained on; a folder that is gone is refused in one line."""
    dataset = remembered.get("dataset")
    if not isinstance(dataset, str) or dataset == DEFAULT_DATASET:
        return DEFAULT_DATASET
    if dataset not in DATASETS and not Path(dataset).is_dir():
        raise UserError(
            f"{run_dir} was trained on the data set folder {dataset}, which no longer exists: "
            "pass --dataset with the folder's new place"
        )
    note(f"{run_dir} was trained on {dataset}: reading it (--dataset)")
    return dataset


def data_source(
    model: Path | None,
    data_dir: str | Path | None,
    manual_dir: str | Path | None,
    note: Callable[[str], None] = lambda message: None,
    dataset: str | Path | None = None,
) -> sources.Source:
    """Where a command given `model` reads its data: `dataset` and each of `data_dir` and `manual_dir`
    where given (`$MNIST_TF_MANUAL_DIR` counts as given), else the data set and folders the model's
    run was trained with.

    A remembered TFDS folder that no longer exists is left out, with a note, and TFDS's defaults are used.
    """
    given = sources.Source.from_options(data_dir, manual_dir, dataset)
    run_dir = run_dir_of(model) if model is not None else None
    if run_dir is None:
        return given
    remembered = read(run_dir, note).get("data") or {}
    if dataset is None:
        given = dataclasses.replace(given, dataset=_dataset(run_dir, remembered, note))
    chosen, reused = {}, []
    label = "MNIST" if given.dataset == DEFAULT_DATASET else given.dataset
    for name, flag in DATA_OPTIONS.items():
        chosen[name] = getattr(given, name)
        path = remembered.get(name)
        if chosen[name] is not None or not isinstance(path, str):
            continue
        if Path(path).is_dir():
            chosen[name] = Path(path)
            reused.append(f"{flag} {path}")
        else:
            note(f"{run_dir} was trained with {flag} {path}, which no longer exists: reading {label} without it")
    if reused:
        note(f"reading {label} as {run_dir} was trained: {' '.join(reused)}")
    return sources.Source(**chosen, dataset=given.dataset)
