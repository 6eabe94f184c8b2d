"""Load a trained model from any format mnist-tf writes, as one kind of callable.

Every loader returns a `ProbaFn`: uint8 images [N,28,28,1] -> probabilities
[N,C] (C classes, 10 for MNIST), so evaluation and prediction do not care which
format they run; `class_names_of` finds the classes' names beside any format.
`load_classify_fn` adds which pictures the model declines as not a digit: an
export's `not_a_digit` output, or for a Keras model the same test computed here.

Every format returns the same, calibrated, probabilities: softmax(logits / T), T
the temperature `mnist-tf train` fitted (`evaluation.calibration`). A Keras model
reads T from the calibration.json beside it; the SavedModel and TFLite models hold
it in their graphs (`temperature_of` reads the copy they carry).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mnist_tf.core.contract import (
    DEFAULT_SIGNATURE,
    INPUT_NAME,
    NOT_A_DIGIT,
    PROBABILITIES,
    TFLITE_CALIBRATION,
    TFLITE_CLASS_NAMES,
)
from mnist_tf.core.errors import UserError
from mnist_tf.core.quiet import native_chatter_hidden
from mnist_tf.core.rundir import CALIBRATION, RunDir
from mnist_tf.core.types import ClassifyFn, LogitsFn, ProbaFn
from mnist_tf.evaluation import calibration

MODEL_HELP = "a run dir, a .keras file, a SavedModel version folder or a .tflite file"


def resolve_model_path(path: str | Path) -> Path:
    """Maps a run dir to its model.keras; checks that the path exists."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model {path} does not exist: pass {MODEL_HELP}")
    if path.is_dir():
        if RunDir(path).model.is_file():
            return RunDir(path).model
        if (path / "saved_model.pb").is_file():
            return path
        numbered = sorted(int(p.name) for p in path.iterdir() if re.fullmatch(r"\d+", p.name))
        if numbered:
            raise UserError(
                f"{path} holds SavedModel versions {numbered}: pass one version folder, e.g. {path / str(numbered[-1])}"
            )
        raise UserError(f"{path} is a folder with neither model.keras nor saved_model.pb: pass {MODEL_HELP}")
    return path


def load_keras(path: Path):
    import keras

    import mnist_tf.modeling.network  # noqa: F401  (registers the custom BatchNormalization layer)

    try:
        return keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001  (Keras raises many types for a bad archive)
        raise UserError(
            f"{path} is not a readable Keras model ({type(e).__name__}): pass a model.keras written by mnist-tf train"
        ) from None


def load_saved_model(path: Path) -> ClassifyFn:
    """The `serving_default` signature of a SavedModel, as a `ClassifyFn`."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001  (TF raises several types for a broken SavedModel)
        raise UserError(
            f"{path} is not a readable SavedModel ({type(e).__name__}): "
            "pass a version folder written by mnist-tf export"
        ) from None
    signature = loaded.signatures.get(DEFAULT_SIGNATURE)
    if signature is None or INPUT_NAME not in signature.structured_input_signature[1]:
        raise UserError(
            f"{path} has no {DEFAULT_SIGNATURE} signature with an {INPUT_NAME!r} input: export it with mnist-tf export"
        )

    def classify_fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # `loaded` stays referenced here: the signature needs its variables alive.
        out = loaded.signatures[DEFAULT_SIGNATURE](**{INPUT_NAME: tf.constant(np.asarray(images, np.uint8))})
        probabilities = out[PROBABILITIES].numpy()
        return probabilities, _declined(out.get(NOT_A_DIGIT), len(probabilities))

    return classify_fn


def _declined(not_a_digit, n: int) -> np.ndarray:
    """An export's `not_a_digit` output as a bool array; all False for an export without one."""
    return np.zeros(n, bool) if not_a_digit is None else np.asarray(not_a_digit, bool).reshape(n)


class TFLiteRunner:
    """Runs the `serving_default` signature of a TFLite model on uint8 image batches.

    The input tensor is resized only when the batch size changes, so repeated
    calls with one batch size cost one `invoke` each.
    """

    def __init__(self, model_content: bytes, source: str = "the model"):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_content=model_content)
            runner = self.interpreter.get_signature_runner(DEFAULT_SIGNATURE)
            self.input = runner.get_input_details()[INPUT_NAME]["index"]
            outputs = runner.get_output_details()
            self.output = outputs[PROBABILITIES]["index"]
            self.not_a_digit = outputs[NOT_A_DIGIT]["index"] if NOT_A_DIGIT in outputs else None
        except (ValueError, KeyError, RuntimeError) as e:
            raise UserError(
                f"{source} is not a TFLite model with a {DEFAULT_SIGNATURE} signature mapping {INPUT_NAME!r} to "
                f"{PROBABILITIES!r} ({type(e).__name__}): pass a .tflite written by mnist-tf export"
            ) from None
        self.batch_size: int | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.classify(images)[0]

    def classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N,C] and which pictures the model declines as not a digit [N]."""
        images = np.asarray(images, np.uint8)
        if len(images) != self.batch_size:
            self.interpreter.resize_tensor_input(self.input, list(images.shape))
            with native_chatter_hidden():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter.allocate_tensors()
            self.batch_size = len(images)
        self.interpreter.set_tensor(self.input, images)
        self.interpreter.invoke()
        probabilities = self.interpreter.get_tensor(self.output).copy()
        declined = None if self.not_a_digit is None else self.interpreter.get_tensor(self.not_a_digit)
        return probabilities, _declined(declined, len(probabilities))


def class_names_of(path: str | Path) -> tuple[str, ...] | None:
    """The class names a model was trained with, class 0 first; None when they cannot be found.

    A run's model.keras: its run.json (`data.class_names`). A SavedModel version folder:
    assets.extra/labels.txt. A .tflite file: its metadata, else the labels.txt beside it, as
    `mnist-tf export` writes both.
    """
    path = resolve_model_path(path)
    if path.suffix == ".keras":
        try:
            names = (json.loads(RunDir(path.parent).run_info.read_text()).get("data") or {}).get("class_names")
        except (OSError, ValueError, AttributeError):
            return None
        return tuple(str(n) for n in names) if isinstance(names, list) else None
    if path.suffix == ".tflite":
        names = tflite_class_names(path)
        if names is not None:
            return names
    labels = path / "assets.extra" / "labels.txt" if path.is_dir() else path.parent / "labels.txt"
    try:
        names = labels.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    return tuple(names) if all(names) else None


def tflite_metadata(path: Path, name: str) -> bytes | None:
    """The metadata entry `name` of a TFLite model (`export.tflite.with_metadata`); None without it."""
    from tensorflow.lite.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    except Exception:  # noqa: BLE001  (not a flatbuffer: the loader says so in its own words)
        return None
    for entry in model.metadata or []:
        if entry.name.decode() == name:
            return bytes(model.buffers[entry.buffer].data)
    return None


def tflite_class_names(path: Path) -> tuple[str, ...] | None:
    """The class names in a TFLite model's metadata; None without them."""
    names = tflite_metadata(path, TFLITE_CLASS_NAMES)
    return tuple(names.decode("utf-8").split("\n")) if names is not None else None


def calibration_file(path: str | Path) -> Path:
    """Where a Keras model or SavedModel version keeps its calibration: the calibration.json beside a
    .keras file (a run dir's), or in a SavedModel's assets.extra. The file may not exist."""
    path = resolve_model_path(path)
    return path / "assets.extra" / CALIBRATION if path.is_dir() else RunDir(path.parent).calibration


def calibration_of(path: str | Path) -> dict | None:
    """The calibration a model carries (calibration.json's content), None for a model never calibrated: beside
    a .keras model, in a SavedModel's assets.extra, in a TFLite model's metadata."""
    path = resolve_model_path(path)
    if path.suffix == ".tflite":
        data = tflite_metadata(path, TFLITE_CALIBRATION)
        return calibration.parse(data, f"in {path}") if data is not None else None
    return calibration.read(calibration_file(path))


def temperature_of(path: str | Path) -> float:
    """The temperature a model's probabilities are computed with; 1.0 for a model never calibrated.

    A .keras model is divided by it when loaded (`load_proba_fn`); a SavedModel and a TFLite model have
    it in their graph and carry a copy (`calibration_of`)."""
    return calibration.temperature(calibration_of(path))


def decline_below_of(path: str | Path) -> float | None:
    """The evidence (`evidence`) below which a model declines a picture as not a digit
    (`core.types.DECLINE_BELOW`), from the calibration it carries; None for a model that never declines."""
    return calibration.decline_below(calibration_of(path))


def calibrated_softmax(logits, temperature: float):
    """softmax(logits / temperature) in TensorFlow: the probabilities every format returns."""
    import tensorflow as tf

    return tf.nn.softmax(logits / tf.constant(temperature, logits.dtype))


def declined_by_evidence(logits, temperature: float, decline_below: float | None):
    """In TensorFlow, which pictures a model declines as not a digit: those whose evidence, logsumexp(logits /
    temperature) (`evaluation.calibration.evidence`), is below `decline_below`; none when that is None."""
    import tensorflow as tf

    if decline_below is None:
        return tf.zeros(tf.shape(logits)[:-1], tf.bool)
    evidence = tf.reduce_logsumexp(logits / tf.constant(temperature, logits.dtype), axis=-1)
    return evidence < tf.constant(decline_below, logits.dtype)


def load_logits_fn(path: str | Path) -> LogitsFn:
    """A Keras model (a run dir or .keras file) as a function from uint8 images [N,28,28,1] to logits [N,C],
    computed in float32 as the exports compute them (mixed precision only speeds up training)."""
    from mnist_tf.modeling.network import float32_copy

    model = float32_copy(load_keras(resolve_model_path(path)))
    return lambda images: model(np.asarray(images, np.uint8), training=False)


def load_proba_fn(path: str | Path) -> ProbaFn:
    """Returns a function from uint8 images [N,28,28,1] to calibrated probabilities [N,C]."""
    classify_fn = load_classify_fn(path)
    return lambda images: classify_fn(images)[0]


def load_classify_fn(path: str | Path) -> ClassifyFn:
    """Returns a function from uint8 images [N,28,28,1] to calibrated probabilities [N,C] and which of the
    pictures the model declines as not a digit [N] (`core.types.DECLINE_BELOW`), as its exports decide it."""
    path = resolve_model_path(path)
    if path.suffix == ".keras":
        logits_fn, temperature, decline_below = load_logits_fn(path), temperature_of(path), decline_below_of(path)

        def classify_fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logits = logits_fn(images)
            declined = declined_by_evidence(logits, temperature, decline_below)
            return calibrated_softmax(logits, temperature).numpy(), np.asarray(declined, bool)

        return classify_fn
    if path.is_dir():
        return load_saved_model(path)
    if path.suffix == ".tflite":
        return TFLiteRunner(path.read_bytes(), source=str(path)).classify
    raise UserError(f"{path} is not a model format mnist-tf reads: pass {MODEL_HELP}")
