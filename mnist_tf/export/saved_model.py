"""The SavedModel for TF Serving: two signatures, versions written whole, warm-up requests.

The layout under the export folder OUT (see docs/deployment.md):

    OUT/saved_model/models.config             TF Serving model config (text format)
    OUT/saved_model/mnist/<N>/                one SavedModel per version, N = 1, 2, ...
        saved_model.pb, variables/
        assets.extra/tf_serving_warmup_requests, labels.txt, config.json, metrics.json, calibration.json

Both signatures return `probabilities` [N,C] float32 (calibrated: softmax(logits / T), T the
temperature in the run's calibration.json, a constant in the graph; 1 without the file), `class_id` [N] int64,
`class_name` [N] string (the data set's name of that class, e.g. "7" or "Sneaker";
also in assets.extra/labels.txt, one a line) and `logits` [N,C] float32, C the
number of classes (10 for MNIST):

    serving_default  image        uint8 [N,28,28,1], white digit on black, as in MNIST
    serving_bytes    image_bytes  string [N], encoded PNG/JPEG/GIF/BMP/WebP, up to 50 megapixels:
                                  any picture of a digit, put in MNIST's form by
                                  `mnist_tf.imaging.mnist_form.to_mnist_tensor` (the same function
                                  `mnist-tf predict` runs); it also returns `image`
                                  uint8 [N,28,28,1], what the model saw, and `blank`
                                  bool [N], true where no digit was found (then
                                  `class_id` is -1, `class_name` empty and the
                                  probabilities are 1/C each)

Both also return `not_a_digit` bool [N]: true where a model trained with non-digits declines the picture,
its evidence, logsumexp(logits / T), below the `decline_evidence_below` of its calibration.json
(`core.types.DECLINE_BELOW`); then
`class_id` is -1 and `class_name` empty, and the probabilities are left as they are. A model trained
without non-digits never declines.

Any other dtype or shape, and bytes that do not decode, fail with a
`tf.errors.InvalidArgumentError` whose message names what was expected.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core import rundir
from mnist_tf.core.contract import (
    BYTES_INPUT_NAME,
    BYTES_SIGNATURE,
    CLASS_ID,
    CLASS_NAME,
    DEFAULT_SIGNATURE,
    IMAGE_SHAPE,
    INPUT_NAME,
    LOGITS,
    MODEL_NAME,
    NOT_A_DIGIT,
    NUM_CLASSES,
    PROBABILITIES,
)
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import disk_errors, fault_point, write_bytes
from mnist_tf.imaging import decode, mnist_form
from mnist_tf.inference.loading import (
    calibrated_softmax,
    decline_below_of,
    declined_by_evidence,
    load_keras,
    temperature_of,
)
from mnist_tf.modeling.network import float32_copy

WARMUP_FILE = "tf_serving_warmup_requests"
LABELS_FILE = "labels.txt"  # in assets.extra: the class names, one a line, class 0 first
# Where models.config says the versions are: the path inside the tensorflow/serving
# container when OUT/saved_model is mounted at /models (docs/deployment.md, "Serving with TF Serving").
SERVING_BASE_PATH = f"/models/{MODEL_NAME}"


def digit_names(count: int = NUM_CLASSES) -> tuple[str, ...]:
    """Class names where the data give none: the labels themselves, "0" to "9" for MNIST."""
    return tuple(str(c) for c in range(count))


def keras_archive(keras_path: Path, class_names: Sequence[str] | None = None) -> Any:
    """`serving_archive` of a .keras file, in float32, with the temperature and decline threshold of the
    calibration.json beside it."""
    model = float32_copy(load_keras(keras_path))
    return serving_archive(model, class_names, temperature_of(keras_path), decline_below_of(keras_path))


def serving_archive(
    model: Any,
    class_names: Sequence[str] | None = None,
    temperature: float = 1.0,
    decline_below: float | None = None,
) -> Any:
    """A `keras.export.ExportArchive` with the pixel and encoded-image signatures; `class_names`
    (default: the labels as numbers) become the `class_name` output, `probabilities` are
    softmax(logits / `temperature`), and a picture whose evidence, logsumexp(logits / `temperature`), is below
    `decline_below` (None: never) is declined as not a digit; both constants in the graph."""
    import keras
    import tensorflow as tf

    num_classes = int(model.outputs[0].shape[-1])
    # The class names and, last, "" for a declined picture: a gather, which TFLite has for strings (a select has not).
    names = tf.constant([*(class_names if class_names is not None else digit_names(num_classes)), ""], tf.string)

    def outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = model(images, training=False)
        probabilities = calibrated_softmax(logits, temperature)
        class_id = tf.argmax(logits, axis=-1, output_type=tf.int64)
        declined = declined_by_evidence(logits, temperature, decline_below)
        return {
            PROBABILITIES: probabilities,
            CLASS_ID: tf.where(declined, tf.constant(-1, tf.int64), class_id),
            CLASS_NAME: tf.gather(names, tf.where(declined, tf.constant(num_classes, tf.int64), class_id)),
            LOGITS: logits,
            NOT_A_DIGIT: declined,
        }

    def prepare(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return mnist_form.to_mnist_function()(decode.decode_bytes_tensor(encoded))

    @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name=INPUT_NAME)])
    def serve_pixels(image: tf.Tensor) -> dict[str, tf.Tensor]:
        # A signature checks the dtype of what it is given, not the shape, and oneDNN's
        # convolution aborts the whole process (TF Serving included) on some wrong shapes,
        # such as [N,28,28]: refuse them first, as an InvalidArgumentError naming the shape.
        return outputs(tf.ensure_shape(image, [None, *IMAGE_SHAPE]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT_NAME)])
    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        image_bytes = tf.ensure_shape(image_bytes, [None])
        prepared, blank = tf.map_fn(
            prepare,
            image_bytes,
            fn_output_signature=(tf.TensorSpec(IMAGE_SHAPE, tf.uint8), tf.TensorSpec([], tf.bool)),
        )
        result = outputs(prepared)
        # A picture with no digit: class -1, even probabilities, zero logits (never NaN).
        found = tf.logical_not(blank)
        return {
            PROBABILITIES: tf.where(found[:, None], result[PROBABILITIES], 1.0 / num_classes),
            CLASS_ID: tf.where(found, result[CLASS_ID], tf.constant(-1, tf.int64)),
            CLASS_NAME: tf.where(found, result[CLASS_NAME], ""),
            LOGITS: tf.where(found[:, None], result[LOGITS], 0.0),
            NOT_A_DIGIT: tf.logical_and(found, result[NOT_A_DIGIT]),
            INPUT_NAME: prepared,  # what the model saw
            "blank": blank,
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(DEFAULT_SIGNATURE, serve_pixels)
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes)
    return archive


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one uint8 image [28,28,1]."""
    import tensorflow as tf

    return tf.io.encode_png(np.asarray(image, np.uint8)).numpy()


def write_warmup(path: Path, images: np.ndarray) -> None:
    """TF Serving warm-up records: one PredictRequest per signature on `images`.

    TF Serving replays them when it loads a version, so the first client
    request does not pay for graph initialisation.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images = np.asarray(images, np.uint8)
    inputs = {
        DEFAULT_SIGNATURE: (INPUT_NAME, tf.make_tensor_proto(images)),
        BYTES_SIGNATURE: (BYTES_INPUT_NAME, tf.make_tensor_proto([encode_png(i) for i in images], dtype=tf.string)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, (name, tensor) in inputs.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name=signature)
            )
            request.inputs[name].CopyFrom(tensor)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def versions(base: Path) -> list[int]:
    """The version numbers under `base`: the all-digit folder names TF Serving loads."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def stray_temporaries(out: Path) -> list[Path]:
    """The hidden `.tmp-*` folders beside the versions: left by an export that was
    killed, or being written by one running now. Their names are not numbers, so
    TF Serving and `versions` ignore them; only a person can tell which is which."""
    base = Path(out) / "saved_model" / MODEL_NAME
    return sorted(p for p in base.glob(".tmp-*") if p.is_dir()) if base.is_dir() else []


def choose_version(out: Path, version: int | None = None) -> int:
    """`version`, or the next free number; refuses a version that exists."""
    base = Path(out) / "saved_model" / MODEL_NAME
    latest = max(versions(base), default=0)
    if version is None:
        return latest + 1
    if version < 1:
        raise UserError(f"version must be a positive integer, got {version}")
    if (base / str(version)).exists():
        raise UserError(f"version {version} already exists in {base}: omit --version to write version {latest + 1}")
    return version


def models_config() -> str:
    """TF Serving's `--model_config_file` in protobuf text format."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = MODEL_NAME
    model.base_path = SERVING_BASE_PATH
    model.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def export_saved_model(
    keras_path: Path,
    out: Path,
    warmup_images: np.ndarray,
    version: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Writes `keras_path` as SavedModel version `version` (default: the next) of
    OUT/saved_model/mnist and returns the version folder.

    The version is written in a hidden sibling folder and renamed into place,
    so TF Serving never sees a half-written version and a failure leaves none.
    The run's config.json, metrics.json and calibration.json (whose temperature the
    graph holds), when beside `keras_path`, are copied into assets.extra with
    labels.txt (`class_names`, default the labels as numbers) and the warm-up requests.
    """
    base = Path(out) / "saved_model" / MODEL_NAME
    version = choose_version(out, version)
    final = base / str(version)
    model = float32_copy(load_keras(keras_path))
    names = list(class_names) if class_names is not None else list(digit_names(int(model.outputs[0].shape[-1])))
    temperature = temperature_of(keras_path)  # read, and refused if unreadable, before any work
    decline_below = decline_below_of(keras_path)
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    except OSError as e:
        raise UserError(f"cannot write to {base} ({e.strerror}): pass a writable --out") from None
    try:
        with disk_errors(final, "SavedModel version"):
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the server may run as another user.
            serving_archive(model, names, temperature, decline_below).write_out(str(tmp), verbose=False)
            extra = tmp / "assets.extra"
            write_warmup(extra / WARMUP_FILE, warmup_images)
            (extra / LABELS_FILE).write_text("".join(f"{c}\n" for c in names), encoding="utf-8")
            for name in rundir.DESCRIPTION:
                if (keras_path.parent / name).is_file():
                    shutil.copyfile(keras_path.parent / name, extra / name)
        fault_point(final, tmp)
        if final.exists():  # Another export took this version meanwhile.
            raise UserError(f"version {version} appeared in {base} during the export: run the export again")
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_bytes(Path(out) / "saved_model" / "models.config", models_config().encode(), "TF Serving's model config")
    return final
