"""Scores a model on the person-made sets (`data.person_made`), by `predict`'s path and `serving_bytes`.

`evaluate_person_made` is what `mnist-tf evaluate --person-made N` adds to the report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from mnist_tf.core.contract import BYTES_INPUT_NAME, BYTES_SIGNATURE, CLASS_ID
from mnist_tf.core.errors import UserError
from mnist_tf.data.person_made import SETS, write_sets
from mnist_tf.export.saved_model import keras_archive
from mnist_tf.inference.predict import predictor


def score_sets(
    files: dict[str, list[tuple[Path, int]]],
    predict_fn: Callable[[list[Path]], np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Accuracy of `predict_fn` (files -> predicted classes, -1 for none) on each set, and the share declined.

    A picture labelled -1 holds no digit: declining it (-1) is the right answer."""
    results = {}
    for kind, entries in files.items():
        predicted = np.asarray(predict_fn([path for path, _ in entries]))
        labels = np.array([label for _, label in entries])
        results[kind] = {
            "accuracy": float((predicted == labels).mean()),
            "examples": len(labels),
            "no_digit": int((predicted < 0).sum()),
            "declined": float((predicted < 0).mean()) if len(labels) else 0.0,
        }
    return results


def serving_bytes_fn(saved_model: Path) -> Callable[[list[Path]], np.ndarray]:
    """Files -> classes through a SavedModel's `serving_bytes` signature, as TF Serving runs it (-1: no digit)."""
    loaded = tf.saved_model.load(str(saved_model))
    if BYTES_SIGNATURE not in loaded.signatures:
        raise UserError(
            f"{saved_model} has no {BYTES_SIGNATURE} signature: export the model again with mnist-tf export"
        )

    def classify(paths: list[Path], batch: int = 64) -> np.ndarray:
        signature = loaded.signatures[BYTES_SIGNATURE]
        out = []
        for start in range(0, len(paths), batch):
            encoded = tf.constant([Path(p).read_bytes() for p in paths[start : start + batch]])
            out.append(signature(**{BYTES_INPUT_NAME: encoded})[CLASS_ID].numpy())
        return np.concatenate(out) if out else np.zeros([0], np.int64)

    return classify


def predict_fn(model_path: Path) -> Callable[[list[Path]], np.ndarray]:
    """Files -> classes through `mnist-tf predict`'s path (-1: no digit, not a digit, or unreadable)."""
    classify = predictor(model_path)
    return lambda paths: np.array([-1 if r.digit is None else r.digit for r in classify(paths)])


def evaluate_person_made(
    model_path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    out: Path,
    kinds: Sequence[str] = SETS,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Writes the sets for `images` under OUT/sets and scores `model_path` on them, both ways.

    `model_path` is a resolved model (see `models.resolve_model_path`). A .keras
    model is exported to a temporary SavedModel for the `serving_bytes` score; a
    .tflite model has no such signature and gets the `predict` score only.
    """
    progress(f"rendering {len(labels)} test digits in {len(kinds)} person-made sets into {out / 'sets'}")
    files = write_sets(images, labels, Path(out) / "sets", kinds)
    progress("scoring mnist-tf predict's path")
    report: dict[str, Any] = {
        "model": str(model_path),
        "sets": {kind: str(Path(out) / "sets" / kind) for kind in kinds},
        "predict": score_sets(files, predict_fn(model_path)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if model_path.suffix == ".keras":
            saved: Path | None = Path(tmp) / "saved_model"
            keras_archive(model_path).write_out(str(saved), verbose=False)  # calibrated, as the export is
        else:
            saved = model_path if model_path.is_dir() else None
        if saved is not None:
            progress(f"scoring the SavedModel's {BYTES_SIGNATURE} signature")
            report[BYTES_SIGNATURE] = score_sets(files, serving_bytes_fn(saved))
    return report


def table(report: dict[str, Any]) -> str:
    """The report as plain text: one row per set, accuracy and the share declined by each path.

    For the set without digits, accuracy is the share declined: the right answer."""
    paths = [p for p in ("predict", BYTES_SIGNATURE) if p in report]
    header = "".join(f" {p:>14} {'declined':>8}" for p in paths)
    lines = [f"{'set':<8}{header} {'images':>7}"]
    for kind in report["predict"]:
        cells = "".join(f" {report[p][kind]['accuracy']:>14.1%} {report[p][kind]['declined']:>8.1%}" for p in paths)
        lines.append(f"{kind:<8}{cells} {report['predict'][kind]['examples']:>7}")
    return "\n".join(lines)
