"""`mnist-tf serve`'s gRPC API, driven with TF Serving's generated stubs against a real server process.

The same server answers REST on another port: both must give the same answers and, for what both
check, the same messages; each error has TF Serving's status code, and the next request is served.
"""

from __future__ import annotations

import base64
import signal
import socket
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from helpers import assert_one_line_error, digit_image, error_line, model_base, png_bytes, run_child, stop_during
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mnist_tf.cli import main
from mnist_tf.serve.process import ServerProcess


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name="mnist", signature="", version=None, label=None, **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        )
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def assert_serves(stub) -> None:
    """A good request after an error: the server still answers it."""
    response = stub.Predict(predict_request(image=digit_image()[None]), timeout=60)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 10)


def test_ready_line_names_both_addresses(server):
    line = "".join(server.stdout)
    assert f"at {server.url}/v1/models/mnist, gRPC at {server.grpc_address}, page at {server.url}/" in line
    assert server.grpc_address.startswith("127.0.0.1:")


def test_model_status_as_rest_answers_it(models, client):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    response = models.GetModelStatus(request, timeout=60)
    [status] = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""
    assert client.get("/v1/models/mnist").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_metadata_lists_the_saved_models_signatures(stub, client):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mnist"
    response = stub.GetModelMetadata(request, timeout=60)
    assert response.model_spec.name == "mnist" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    image = signatures.signature_def["serving_default"].inputs["image"]
    assert image.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 28, 28, 1]
    assert signatures.signature_def["serving_bytes"].inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    rest = client.get("/v1/models/mnist/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert set(rest) == set(signatures.signature_def)
    for key, signature in signatures.signature_def.items():
        assert set(rest[key]["outputs"]) == set(signature.outputs) and set(rest[key]["inputs"]) == set(signature.inputs)


def test_predict_pixels_equals_the_model_and_rest(stub, client, reference):
    images = np.stack([digit_image(0), digit_image(1)])
    response = stub.Predict(predict_request(image=images), timeout=60)
    assert response.model_spec.name == "mnist" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got = outputs(response)
    expected = reference("serving_default", image=images)
    assert set(got) == set(expected)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["class_id"], expected["class_id"])
    rest = client.post("/v1/models/mnist:predict", json={"inputs": images.tolist()}).json()["outputs"]
    np.testing.assert_allclose(got["logits"], rest["logits"], rtol=1e-6, atol=1e-6)
    assert got["class_id"].tolist() == rest["class_id"]
    by_version = stub.Predict(predict_request(version=1, signature="serving_default", image=images), timeout=60)
    np.testing.assert_allclose(outputs(by_version)["probabilities"], got["probabilities"], rtol=1e-6, atol=1e-7)


def test_predict_encoded_pictures_through_serving_bytes(stub, client, reference):
    data = [png_bytes(digit_image(4)), png_bytes(digit_image(5))]
    response = stub.Predict(predict_request(signature="serving_bytes", image_bytes=np.array(data, object)), timeout=60)
    got = outputs(response)
    expected = reference("serving_bytes", image_bytes=np.array(data, object))
    assert set(got) == set(expected)  # image and blank included
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["image"], expected["image"])
    assert got["blank"].dtype == np.bool_ and not got["blank"].any()
    rest = client.post(
        "/v1/models/mnist:predict",
        json={"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(d).decode()} for d in data]},
    ).json()["predictions"]
    for i, row in enumerate(rest):
        np.testing.assert_allclose(got["probabilities"][i], row["probabilities"], rtol=1e-6, atol=1e-7)
        assert got["class_id"][i] == row["class_id"]
    # As TF Serving writes an answer (Tensor::AsProtoField): values in the dtype's own field, no tensor_content.
    fields = {"float_val", "double_val", "int_val", "int64_val", "bool_val", "string_val"}
    for name, tensor in response.outputs.items():
        assert not tensor.tensor_content, name
        filled = [field.name for field, _ in tensor.ListFields() if field.name in fields]
        assert len(filled) == 1 and len(getattr(tensor, filled[0])) == got[name].size, (name, filled)


def test_output_filter_answers_only_the_outputs_asked_for(stub):
    request = predict_request(image=digit_image()[None])
    request.output_filter.append("class_id")
    assert set(stub.Predict(request, timeout=60).outputs) == {"class_id"}


PIXELS = digit_image()[None]


def over_pixels():
    return np.array([png_bytes(np.zeros((101, 100), np.uint8))], object)


def with_filter(request, *names):
    request.output_filter.extend(names)
    return request


def metadata_request(name="mnist", fields=("signature_def",), version=None):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def status_request(name="mnist", version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


# case: (service, method, request, code, words in the message)
ERRORS = {
    "unknown model": (
        "predict",
        "Predict",
        lambda: predict_request(name="mnist2", image=PIXELS),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(mnist2)",
    ),
    "unknown version": (
        "predict",
        "Predict",
        lambda: predict_request(version=9, image=PIXELS),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(mnist, 9)",
    ),
    "unknown label": (
        "predict",
        "Predict",
        lambda: predict_request(label="canary", image=PIXELS),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: canary",
    ),
    "unknown signature": (
        "predict",
        "Predict",
        lambda: predict_request(signature="nope", image=PIXELS),
        grpc.StatusCode.INVALID_ARGUMENT,
        'Serving signature name: "nope" not found in signature def',
    ),
    "unknown input name": (
        "predict",
        "Predict",
        lambda: predict_request(pixels=PIXELS),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Sent extra: {pixels}. Missing but required: {image}.",
    ),
    "no inputs": (
        "predict",
        "Predict",
        lambda: predict_request(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1",
    ),
    "float for uint8": (
        "predict",
        "Predict",
        lambda: predict_request(image=PIXELS.astype(np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects input image to be uint8 but float is provided",
    ),
    "strings for uint8": (
        "predict",
        "Predict",
        lambda: predict_request(image=np.array([b"x"], object)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects input image to be uint8 but string is provided",
    ),
    "wrong shape": (
        "predict",
        "Predict",
        lambda: predict_request(image=PIXELS[..., 0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Shape of tensor image [1,28,28] is not compatible with expected shape [?,28,28,1].",
    ),
    "bytes that are no image": (
        "predict",
        "Predict",
        lambda: predict_request(signature="serving_bytes", image_bytes=np.array([b"hello"], object)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unknown image file format",
    ),
    "unknown output": (
        "predict",
        "Predict",
        lambda: with_filter(predict_request(image=PIXELS), "scores"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: scores",
    ),
    "too many instances": (
        "predict",
        "Predict",
        lambda: predict_request(image=np.repeat(PIXELS, 5, axis=0)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many instances: 5 in one request, the limit is 4 (--max-instances)",
    ),
    "too many pixels": (
        "predict",
        "Predict",
        lambda: predict_request(signature="serving_bytes", image_bytes=over_pixels()),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "image too large: 100x101 pixels in item 0, the limit is 10,000 pixels (--max-image-pixels)",
    ),
    "message too large": (
        "predict",
        "Predict",
        lambda: predict_request(signature="serving_bytes", image_bytes=np.array([b"\0" * 300_000], object)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    "a small message that expands": (
        "predict",
        "Predict",
        lambda: predict_request(
            image=tf.make_tensor_proto(np.zeros(1, np.uint8), shape=[4, 280000, 28, 1], verify_shape=False)
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "holds 31,360,000 values, more than a request may (--max-body-bytes 200,000)",
    ),
    "metadata of unknown version": (
        "predict",
        "GetModelMetadata",
        lambda: metadata_request(version=9),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(mnist, 9)",
    ),
    "metadata without a field": (
        "predict",
        "GetModelMetadata",
        lambda: metadata_request(fields=()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must specify at least one metadata_field",
    ),
    "status of unknown model": (
        "models",
        "GetModelStatus",
        lambda: status_request(name="mnist2"),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model mnist2",
    ),
    "status of unknown version": (
        "models",
        "GetModelStatus",
        lambda: status_request(version=9),
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 9 of model mnist",
    ),
    "classify": (
        "predict",
        "Classify",
        classification_pb2.ClassificationRequest,
        grpc.StatusCode.UNIMPLEMENTED,
        "Classify is not implemented",
    ),
    "regress": (
        "predict",
        "Regress",
        regression_pb2.RegressionRequest,
        grpc.StatusCode.UNIMPLEMENTED,
        "Regress is not implemented",
    ),
    "multi-inference": (
        "predict",
        "MultiInference",
        inference_pb2.MultiInferenceRequest,
        grpc.StatusCode.UNIMPLEMENTED,
        "MultiInference is not implemented",
    ),
    "reload an empty config": (
        "models",
        "HandleReloadConfigRequest",
        model_management_pb2.ReloadConfigRequest,
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a model config: it lists no models",
    ),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_error_has_tf_servings_status_code_then_serves(stub, models, case):
    service, method, request, code, words = ERRORS[case]
    call = getattr(stub if service == "predict" else models, method)
    with pytest.raises(grpc.RpcError) as raised:
        call(request(), timeout=60)
    assert raised.value.code() == code, raised.value.details()
    assert words in raised.value.details()
    assert_serves(stub)


# The same mistake sent to both APIs: the same message.
SAME_MESSAGES = {
    "unknown model": ("mnist2", "", {"image": PIXELS}),
    "unknown version": ("mnist/versions/9", "", {"image": PIXELS}),
    "unknown signature": ("mnist", "nope", {"image": PIXELS}),
    "wrong shape": ("mnist", "", {"image": PIXELS[..., 0]}),
    "too many instances": ("mnist", "", {"image": np.repeat(PIXELS, 5, axis=0)}),
    "too many pixels": ("mnist", "serving_bytes", {"image_bytes": over_pixels()}),
    "bytes that are no image": ("mnist", "serving_bytes", {"image_bytes": np.array([b"hello"], object)}),
}


@pytest.mark.parametrize("case", SAME_MESSAGES, ids=list(SAME_MESSAGES))
def test_rest_and_grpc_refuse_alike(stub, client, case):
    path, signature, inputs = SAME_MESSAGES[case]
    name, _, version = path.partition("/versions/")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(name, signature, int(version) if version else None, **inputs), timeout=60)

    def as_json(array):
        return [{"b64": base64.b64encode(v).decode()} for v in array] if array.dtype == object else array.tolist()

    body = {"signature_name": signature, "inputs": {k: as_json(v) for k, v in inputs.items()}}
    rest = client.post(f"/v1/models/{path}:predict", json=body)
    assert rest.status_code in (400, 404) and rest.json()["error"] == raised.value.details()


def test_every_call_is_logged_in_one_line(stub, server):
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request(name="mnist2", image=PIXELS), timeout=60)

    def lines():
        return [
            line for line in server.log().splitlines() if "PredictionService/Predict" in line and "NOT_FOUND" in line
        ]

    deadline = time.monotonic() + 10
    while not lines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines() and lines()[-1].startswith('127.0.0.1 "gRPC /tensorflow.serving.PredictionService/Predict" ')


def test_concurrent_calls_each_get_their_own_answer(server, stub, reference):
    """Calls that arrive together may run as one batch with REST's: each still gets its own answer or error."""
    data = [png_bytes(digit_image(seed)) for seed in range(8)]
    with grpc.insecure_channel(server.grpc_address) as channel:
        futures = []
        async_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            for i, d in enumerate(data):
                value = np.array([d if i % 3 else b"no image"], object)
                request = predict_request(signature="serving_bytes", image_bytes=value)
                futures.append(async_stub.Predict.future(request, timeout=60))
        expected = reference("serving_bytes", image_bytes=np.array(data, object))
        for n, future in enumerate(futures):
            i = n % len(data)
            if i % 3 == 0:
                assert future.exception().code() == grpc.StatusCode.INVALID_ARGUMENT
                continue
            got = tf.make_ndarray(future.result().outputs["probabilities"])[0]
            np.testing.assert_allclose(got, expected["probabilities"][i], rtol=1e-4, atol=1e-6)
    assert_serves(stub)


def test_sigterm_finishes_calls_in_flight_and_stops_both(tiny_saved_model, tmp_path):
    base = model_base(tiny_saved_model, tmp_path)
    server = ServerProcess(base, "--poll-seconds", "0")
    try:
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert_serves(stub)
            big = predict_request(image=np.repeat(PIXELS, 256, axis=0))
            code, answer = stop_during(server, lambda: stub.Predict(big, timeout=60))
    finally:
        server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    assert tf.make_ndarray(answer.outputs["class_id"]).shape == (256,)
    assert "stopped" in "".join(server.stdout)
    host, port = server.grpc_address.rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()


def test_no_grpc_serves_rest_only(tiny_saved_model, tmp_path):
    base = model_base(tiny_saved_model, tmp_path)
    server = ServerProcess(base, "--poll-seconds", "0", "--no-grpc")
    try:
        assert server.grpc_address is None and "gRPC" not in "".join(server.stdout)
        assert httpx.get(server.url + "/v1/models/mnist", timeout=60).status_code == 200
    finally:
        assert server.stop() == 0


def test_grpc_options_refused_in_one_line(tiny_saved_model, tmp_path):
    both = CliRunner().invoke(main, ["serve", "--model", str(tmp_path), "--grpc-port", "9000", "--no-grpc"])
    assert_one_line_error(both, "--grpc-port and --no-grpc")
    base = model_base(tiny_saved_model, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_child(["serve", "--model", base, "--port", "0", "--grpc-port", port])
    line = error_line(busy)
    assert f"cannot listen on 127.0.0.1:{port} for gRPC" in line and "--grpc-port" in line, line


def test_predict_over_grpc_says_what_is_wrong_in_one_line(server, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(png_bytes(digit_image()))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens there
    for url, words in (
        (f"grpc://127.0.0.1:{port}", "cannot reach"),
        ("grpc://", "is not a grpc://HOST:PORT URL"),
        ("ftp://127.0.0.1:8500", "is not an http(s):// or grpc:// URL"),
    ):
        assert_one_line_error(CliRunner().invoke(main, ["predict", "--server", url, str(image)]), words)
