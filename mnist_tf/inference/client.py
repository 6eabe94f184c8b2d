"""`mnist-tf predict --server`: image files through any server speaking TF Serving's REST or gRPC API.

Each file's bytes go to the `serving_bytes` signature in a request of its own,
so one bad file gets its own error and the rest are still classified, as with a
local model: over REST (`http(s)://HOST:PORT`) base64-encoded in JSON, over gRPC
(`grpc://HOST:PORT`) as a TensorProto in a Predict call.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core.contract import BYTES_INPUT_NAME, BYTES_SIGNATURE, MODEL_NAME, NOT_A_DIGIT
from mnist_tf.core.errors import UserError
from mnist_tf.core.types import DECLINED, Prediction
from mnist_tf.imaging.mnist_form import NO_DIGIT

GRPC_SCHEME = "grpc://"


def predict_url(server: str, model: str = MODEL_NAME) -> str:
    """`URL/v1/models/MODEL:predict` for a server's base URL."""
    server = server.strip().rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise UserError(
            f"--server {server!r} is not an http(s):// or grpc:// URL: pass e.g. http://127.0.0.1:8501 "
            "(REST) or grpc://127.0.0.1:8500 (gRPC)"
        )
    return f"{server}/v1/models/{model}:predict"


def grpc_address(server: str) -> str:
    """HOST:PORT of a `grpc://HOST:PORT` URL."""
    address = server.strip().rstrip("/")[len(GRPC_SCHEME) :]
    if not address or "/" in address or ":" not in address:
        raise UserError(f"--server {server!r} is not a grpc://HOST:PORT URL: pass e.g. grpc://127.0.0.1:8500")
    return address


def request_body(image: bytes, signature: str = BYTES_SIGNATURE) -> dict[str, Any]:
    """The JSON of a one-image b64 predict request."""
    return {"signature_name": signature, "instances": [{"b64": base64.b64encode(image).decode("ascii")}]}


def read_file(path: Path) -> bytes:
    """A file's bytes; UserError, meant to follow the file name, when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError("no such file: check the path") from None
    except IsADirectoryError:
        raise UserError("is a folder, not an image: pass image files") from None
    except OSError as e:
        raise UserError(f"cannot read it ({e.strerror})") from None
    if not data:
        raise UserError("empty file: pass a PNG or JPEG of a digit")
    return data


def prediction(file: str, answer: dict[str, Any]) -> Prediction:
    """A `Prediction` from the first row of a `predictions` answer."""
    return row_prediction(file, answer["predictions"][0])


def row_prediction(file: str, row: Any) -> Prediction:
    """A `Prediction` from one image's outputs (name -> value)."""
    if not isinstance(row, dict) or "probabilities" not in row:
        raise UserError("the server's answer has no `probabilities`: is it serving an mnist-tf model?")
    seen = np.asarray(row["image"], np.uint8) if "image" in row else None  # the 28x28 the model saw, for --show
    if row.get("blank"):
        return Prediction(file=file, error=NO_DIGIT, image=seen)
    if row.get(NOT_A_DIGIT):
        return Prediction(file=file, error=DECLINED, image=seen)
    probabilities = [float(p) for p in row["probabilities"]]
    digit = int(row.get("class_id", max(range(len(probabilities)), key=probabilities.__getitem__)))
    name = row.get("class_name")  # a string in JSON, bytes over gRPC; absent from older exports
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return Prediction(
        file,
        digit,
        probabilities[digit],
        [round(p, 6) for p in probabilities],
        class_name=name if isinstance(name, str) else None,
        image=seen,
    )


def predict_files_on_server(
    server: str, paths: Sequence[str | Path], timeout: float = 60.0, model: str = MODEL_NAME
) -> list[Prediction]:
    """Classifies each file on `server` (http(s):// or grpc://); a file the server refuses gets the
    server's error message."""
    if server.strip().startswith(GRPC_SCHEME):
        return _predict_files_over_grpc(server, paths, timeout, model)
    import httpx

    url = predict_url(server, model)
    results = []
    with httpx.Client(timeout=timeout) as client:
        for path in paths:
            try:
                response = client.post(url, json=request_body(read_file(Path(path))))
            except UserError as e:
                results.append(Prediction(file=str(path), error=str(e)))
                continue
            except httpx.HTTPError as e:
                raise UserError(
                    f"cannot reach {server} ({type(e).__name__}: {e}): start mnist-tf serve or check --server"
                )
            results.append(_answer(str(path), response, server))
    return results


def _answer(file: str, response: Any, server: str) -> Prediction:
    try:
        answer = response.json()
    except ValueError:
        raise UserError(
            f"{server} answered HTTP {response.status_code} without JSON: is it TF Serving's REST port (8501)?"
        ) from None
    if response.status_code == 404:
        raise UserError(f"{server} has no model {MODEL_NAME} ({answer.get('error')}): check --server")
    if response.status_code != 200:
        return Prediction(file=file, error=str(answer.get("error", f"HTTP {response.status_code}")))
    return prediction(file, answer)


def _predict_files_over_grpc(server: str, paths: Sequence[str | Path], timeout: float, model: str) -> list[Prediction]:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    results = []
    with grpc.insecure_channel(grpc_address(server)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for path in paths:
            try:
                data = read_file(Path(path))
            except UserError as e:
                results.append(Prediction(file=str(path), error=str(e)))
                continue
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = BYTES_SIGNATURE
            request.inputs[BYTES_INPUT_NAME].CopyFrom(tf.make_tensor_proto([data]))
            try:
                response = stub.Predict(request, timeout=timeout)
            except grpc.RpcError as e:
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise UserError(
                        f"cannot reach {server} ({e.code().name}): start mnist-tf serve or check --server"
                    ) from None
                if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                    raise UserError(f"{server} has no model {model} ({e.details()}): check --server") from None
                results.append(Prediction(file=str(path), error=e.details() or e.code().name))
                continue
            row = {name: tf.make_ndarray(value)[0] for name, value in response.outputs.items()}
            results.append(row_prediction(str(path), row))
    return results
