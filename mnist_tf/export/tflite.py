"""TFLite variants of the SavedModel: conversion, the preprocessing as TFLite, and verification against Keras.

    OUT/tflite/mnist_<kind>.tflite            float32, dynamic_range, float16, int8
    OUT/tflite/mnist_preprocess.tflite        any picture -> MNIST's 28x28 form
    OUT/tflite/report.json, report.png        accuracy, size, latency, agreement
    OUT/tflite/labels.txt                     the class names, one a line

Every classifier variant is converted from the SavedModel's `serving_default`
signature and keeps its names: `image` uint8 [N,28,28,1] -> `probabilities`,
`class_id`, `class_name`, `logits`; the class names are also in its metadata
(`with_class_names`) and in OUT/tflite/labels.txt. Its `probabilities` are the
SavedModel's calibrated ones (the temperature is a constant of the converted
graph); a copy of the SavedModel's calibration.json is in its metadata too.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.config.choices import MAX_ACCURACY_DROP_POINTS, TFLITE_KINDS
from mnist_tf.core.contract import DEFAULT_SIGNATURE, INPUT_NAME, TFLITE_CALIBRATION, TFLITE_CLASS_NAMES
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import write_bytes, write_json
from mnist_tf.core.quiet import native_chatter_hidden
from mnist_tf.evaluation import plots
from mnist_tf.evaluation.metrics import Evaluation, evaluate_probabilities
from mnist_tf.imaging import mnist_form
from mnist_tf.inference.loading import TFLiteRunner, calibration_file
from mnist_tf.inference.timing import single_image_ms

PREPROCESS_FILE = "mnist_preprocess.tflite"
LABELS_FILE = "labels.txt"
PREPROCESS_SIGNATURE = "preprocess"
LATENCY_IMAGES = 500  # test images the batch-1 latency is timed on


def convert_tflite(saved_model_dir: Path, kind: str, representative_images: np.ndarray | None = None) -> bytes:
    """Converts the `serving_default` signature of a SavedModel to a TFLite flatbuffer.

    Args:
        saved_model_dir: a SavedModel version folder written by `export_saved_model`.
        kind: `float32` (no quantisation), `dynamic_range` (int8 weights, float
            activations), `float16` (float16 weights) or `int8` (full integer,
            uint8 input, calibrated on `representative_images`).
        representative_images: uint8 [N,28,28,1]; required for `int8`.

    Raises:
        ValueError: for an unknown `kind`, or `int8` without representative images.
    """
    if kind not in TFLITE_KINDS:
        raise ValueError(f"unknown TFLite kind {kind!r}; expected one of {', '.join(TFLITE_KINDS)}")
    if kind == "int8" and (representative_images is None or len(representative_images) == 0):
        raise ValueError("the int8 kind needs representative images for calibration")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[DEFAULT_SIGNATURE])
    if kind != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if kind == "int8":
        calibration = np.asarray(representative_images, np.uint8)

        def representative_dataset():
            for image in calibration:
                yield {INPUT_NAME: image[None]}

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    with warnings.catch_warnings():
        # Calibration runs TF's own deprecated interpreter; the warning is not for our users.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        with native_chatter_hidden():  # "fully_quantize: 0, inference_type: 6, ..."
            return converter.convert()


def export_tflite(
    saved_model_dir: Path,
    out_dir: Path,
    calibration_images: np.ndarray,
    kinds: Sequence[str] = TFLITE_KINDS,
    class_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Converts each kind and writes OUT/tflite/mnist_<kind>.tflite, and the preprocessing as
    mnist_preprocess.tflite (`convert_preprocessing`); returns the classifiers' paths.

    Each classifier keeps the SavedModel's `class_name` output; `class_names`, when given, are also
    written to OUT/tflite/labels.txt, one a line, for apps that read labels from a file. The SavedModel's
    calibration.json, when it has one, goes into each model's metadata."""
    paths = {}
    if class_names is not None:  # Also in each model's metadata (`with_class_names`).
        write_bytes(Path(out_dir) / LABELS_FILE, "".join(f"{n}\n" for n in class_names).encode(), "the class names")
    temperature_file = calibration_file(saved_model_dir)  # the probabilities' calibration, not int8's
    for kind in kinds:
        content = convert_tflite(saved_model_dir, kind, calibration_images if kind == "int8" else None)
        if class_names is not None:
            content = with_class_names(content, class_names)
        if temperature_file.is_file():
            content = with_metadata(content, TFLITE_CALIBRATION, temperature_file.read_bytes())
        paths[kind] = Path(out_dir) / f"mnist_{kind}.tflite"
        write_bytes(paths[kind], content, f"the {kind} TFLite model")
    write_bytes(Path(out_dir) / PREPROCESS_FILE, convert_preprocessing(), "the TFLite preprocessing")
    return paths


def with_class_names(content: bytes, class_names: Sequence[str]) -> bytes:
    """A TFLite model with `class_names` in its metadata (entry `class_names`: UTF-8, one a line), so the
    .tflite file names its classes by itself; `inference.loading.class_names_of` reads them back."""
    return with_metadata(content, TFLITE_CLASS_NAMES, "\n".join(class_names).encode("utf-8"))


def with_metadata(content: bytes, name: str, data: bytes) -> bytes:
    """A TFLite model with a metadata entry `name` holding `data`; `inference.loading.tflite_metadata` reads it."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def convert_preprocessing() -> bytes:
    """`mnist_tf.imaging.mnist_form.to_mnist_tensor` as a TFLite flatbuffer of built-in ops only.

    Signature `preprocess`: `pixels` float32 [H,W,C] in [0,1] (C = 1, 2, 3 or 4) ->
    `image` uint8 [28,28,1] and `blank` bool. A client that decodes a picture
    itself (a phone app, LiteRT in Python) runs it before a classifier variant,
    to get the same 28x28 input the SavedModel's `serving_bytes` makes.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="pixels")])
    def preprocess(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        image, blank = mnist_form.to_mnist_function()(pixels)
        return {INPUT_NAME: image, "blank": blank}  # `image`: what a classifier variant takes

    module = tf.Module()
    module.preprocess = preprocess
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={PREPROCESS_SIGNATURE: preprocess})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[PREPROCESS_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        with native_chatter_hidden():
            return converter.convert()


def verify_tflite(
    models: dict[str, Path],
    images: np.ndarray,
    labels: np.ndarray,
    reference: Evaluation,
    max_accuracy_drop: float = MAX_ACCURACY_DROP_POINTS,
    latency_images: int = LATENCY_IMAGES,
    saved_model: Path | None = None,
) -> dict[str, Any]:
    """Scores each TFLite model on `images` against the Keras model's `reference`.

    Returns the report written to report.json: per variant the accuracy, its
    drop below Keras in percentage points, agreement with Keras' predicted
    classes, file size, batch-1 latency and whether it passed the gate.
    `saved_model`, the folder the models were converted from, is recorded.
    """
    rows = []
    for kind, path in models.items():
        runner = TFLiteRunner(Path(path).read_bytes())
        result = evaluate_probabilities(runner(images), labels)
        drop = (reference.accuracy - result.accuracy) * 100
        rows.append(
            {
                "variant": kind,
                "file": Path(path).name,
                "size_bytes": Path(path).stat().st_size,
                "accuracy": result.accuracy,
                "accuracy_drop_points": round(drop, 4),
                "agreement": float((result.predictions == reference.predictions).mean()),
                "latency_ms": single_image_ms(runner, images[:latency_images]),
                "passed": drop <= max_accuracy_drop,
            }
        )
    return {
        "saved_model": str(saved_model) if saved_model is not None else None,
        "keras_accuracy": reference.accuracy,
        "test_examples": len(labels),
        "max_accuracy_drop_points": max_accuracy_drop,
        "latency_images": min(latency_images, len(images)),
        "variants": rows,
    }


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Writes report.json and report.png into `out_dir`."""
    write_json(Path(out_dir) / "report.json", report, "the TFLite report")
    plots.tflite_report(report["variants"], Path(out_dir) / "report.png")


def report_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table, Keras first."""
    lines = [
        f"{'variant':<14} {'size KiB':>9} {'accuracy':>9} {'drop pts':>9} {'agree':>8} {'ms/image':>9}",
        f"{'keras':<14} {'':>9} {report['keras_accuracy']:>9.2%}",
    ]
    for r in report["variants"]:
        lines.append(
            f"{r['variant']:<14} {r['size_bytes'] / 1024:>9.1f} {r['accuracy']:>9.2%} "
            f"{r['accuracy_drop_points']:>9.2f} {r['agreement']:>8.2%} {r['latency_ms']:>9.3f}"
            + ("" if r["passed"] else "  FAILED")
        )
    return "\n".join(lines)


class AccuracyDropError(UserError):
    """A TFLite variant lost more test accuracy than allowed."""


def check_accuracy_gate(report: dict[str, Any]) -> None:
    """Raises `AccuracyDropError` naming every variant that failed the gate."""
    failed = [r for r in report["variants"] if not r["passed"]]
    if failed:
        details = ", ".join(
            f"{r['variant']} {r['accuracy']:.2%} (drop {r['accuracy_drop_points']:.2f})" for r in failed
        )
        raise AccuracyDropError(
            f"TFLite variant {', '.join(r['variant'] for r in failed)} fell more than "
            f"{report['max_accuracy_drop_points']} points below the Keras model's {report['keras_accuracy']:.2%} "
            f"test accuracy: {details}; calibrate with more --calibration-examples "
            "or allow a larger --max-accuracy-drop"
        )
