"""`export_model`: a trained model as the files a deployment needs, verified.

The export folder OUT (see docs/deployment.md):

    OUT/saved_model/models.config             TF Serving model config (`saved_model.py`)
    OUT/saved_model/mnist/<N>/                one SavedModel per version, N = 1, 2, ...
    OUT/tflite/mnist_<kind>.tflite            float32, dynamic_range, float16, int8 (`tflite.py`)
    OUT/tflite/mnist_preprocess.tflite        any picture -> MNIST's 28x28 form
    OUT/tflite/report.json, report.png        accuracy, size, latency, agreement
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnist_tf.config.choices import CALIBRATION_EXAMPLES, MAX_ACCURACY_DROP_POINTS
from mnist_tf.core.errors import UserError
from mnist_tf.data import pipeline, sources
from mnist_tf.evaluation.metrics import evaluate_proba_fn
from mnist_tf.export.saved_model import choose_version, export_saved_model, stray_temporaries
from mnist_tf.export.tflite import LATENCY_IMAGES, check_accuracy_gate, export_tflite, verify_tflite, write_report
from mnist_tf.inference.loading import load_proba_fn, resolve_model_path
from mnist_tf.training import runlock


@dataclasses.dataclass
class Exported:
    """What `export_model` wrote."""

    saved_model: Path  # the SavedModel version folder, OUT/saved_model/mnist/<N>
    # Hidden `.tmp-*` folders beside the versions: unfinished versions of an interrupted export (`stray_temporaries`).
    stray_temporaries: list[Path]
    tflite: dict[str, Path] = dataclasses.field(default_factory=dict)  # kind -> OUT/tflite/mnist_<kind>.tflite
    report: dict[str, Any] | None = None  # the TFLite report, as in OUT/tflite/report.json


def resolve_keras_path(path: str | Path) -> Path:
    """The model.keras of a run dir, or a .keras file; refuses exported formats."""
    resolved = resolve_model_path(path)
    if resolved.suffix != ".keras":
        raise UserError(f"{path} is not a Keras model: export needs a run dir (with model.keras) or a .keras file")
    training = runlock.holder(path) if Path(path).is_dir() else None
    if training:
        raise UserError(
            f"{path} is still training ({training}): export it when it has finished, "
            f"or pass {resolved} to export its last finished epoch now"
        )
    return resolved


def export_model(
    model: str | Path,
    out: Path,
    source: sources.Source,
    *,
    version: int | None = None,
    tflite_kinds: Sequence[str] = (),
    calibration_examples: int = CALIBRATION_EXAMPLES,
    max_accuracy_drop: float = MAX_ACCURACY_DROP_POINTS,
    latency_images: int = LATENCY_IMAGES,
    on_saved_model: Callable[[Exported], None] = lambda exported: None,
    on_tflite: Callable[[Exported], None] = lambda exported: None,
) -> Exported:
    """Exports a run dir or .keras file into `out`: SavedModel version `version`
    (default: the next) and, for each of `tflite_kinds`, a TFLite variant verified
    on the test split against the Keras model.

    int8 is calibrated on the first `calibration_examples` training images. A
    taken version is refused before any work. `on_saved_model` is called once
    the SavedModel is in place and `on_tflite` once the TFLite report is
    written, so a caller can say what was written before the next long step
    and before the accuracy gate.

    Raises:
        UserError: for a model that is not Keras or is still training, or a version that exists.
        AccuracyDropError: a variant lost more than `max_accuracy_drop` points
            of test accuracy; every file and the report are written first.
    """
    keras_path = resolve_keras_path(model)
    version = choose_version(out, version)
    images, labels = pipeline.arrays("test", source)
    names = sources.class_names(source)
    saved = export_saved_model(keras_path, out, warmup_images=images[:3], version=version, class_names=names)
    exported = Exported(saved_model=saved, stray_temporaries=stray_temporaries(out))
    on_saved_model(exported)
    if not tflite_kinds:
        return exported
    calibration, _ = pipeline.arrays(f"train[:{calibration_examples}]", source)
    exported.tflite = export_tflite(saved, Path(out) / "tflite", calibration, tflite_kinds, class_names=names)
    reference = evaluate_proba_fn(load_proba_fn(keras_path), images, labels)
    exported.report = verify_tflite(
        exported.tflite, images, labels, reference, max_accuracy_drop, latency_images, saved_model=saved
    )
    write_report(exported.report, Path(out) / "tflite")
    on_tflite(exported)
    check_accuracy_gate(exported.report)
    return exported
