"""`mnist-tf serve --model_config_file`: several models, version policies and labels, read again while serving.

The file is TF Serving's text format; a real server process is driven over REST and gRPC while
the file is rewritten under it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from google.protobuf import text_format
from helpers import assert_one_line_error, digit_image
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mnist_tf.cli import main
from mnist_tf.core.errors import UserError
from mnist_tf.export.saved_model import SERVING_BASE_PATH, models_config
from mnist_tf.serve.model_config import ModelSource, read_model_config
from mnist_tf.serve.process import ServerProcess

PIXELS = digit_image()[None]


def write(path: Path, text: str) -> Path:
    """Writes `text` whole, as an editor that saves by renaming does: the server never reads half a file."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text)
    os.replace(staging, path)
    return path


def test_policies_labels_and_relative_paths(tmp_path):
    config = write(
        tmp_path / "models.config",
        """
        model_config_list {
          config { name: "mnist" base_path: "/srv/mnist" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 3 versions: 1 } }
                   version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } }
          config { name: "latest2" base_path: "digits" model_version_policy { latest { num_versions: 2 } } }
          config { name: "every" base_path: "../every" model_version_policy { all {} } }
          config { name: "plain" base_path: "plain" }
        }
        """,
    )
    mnist, latest2, every, plain = read_model_config(config)
    assert mnist == ModelSource("mnist", Path("/srv/mnist"), "specific", 1, (1, 3), (("canary", 3), ("stable", 1)))
    assert mnist.wanted([1, 2, 3, 4]) == [1, 3] and mnist.label("canary") == 3 and mnist.label("beta") is None
    assert latest2.base == tmp_path / "digits" and latest2.wanted([1, 2, 3]) == [2, 3]
    assert every.base == tmp_path / "../every" and every.wanted([1, 5]) == [1, 5]
    assert plain.policy == "latest" and plain.wanted([1, 2, 3]) == [3]


def test_the_config_mnist_tf_export_writes_reads_alike(tmp_path):
    (source,) = read_model_config(write(tmp_path / "models.config", models_config()))
    assert source == ModelSource("mnist", Path(SERVING_BASE_PATH))  # the newest version, as TF Serving reads it


BAD_CONFIGS = {
    "not text format": ("model_config_list { config { name: ", "not a model config"),
    "unknown field": ('model_config_list { config { nom: "x" } }', "not a model config"),
    "no models": ("", "it lists no models"),
    "no base_path": ('model_config_list { config { name: "x" } }', "every config needs a name and a base_path"),
    "a name twice": (
        'model_config_list { config { name: "x" base_path: "a" } config { name: "x" base_path: "b" } }',
        "model x is named twice",
    ),
    "another platform": (
        'model_config_list { config { name: "x" base_path: "a" model_platform: "onnx" } }',
        'model_platform "onnx"',
    ),
    "specific without versions": (
        'model_config_list { config { name: "x" base_path: "a" model_version_policy { specific {} } } }',
        "specific version policy names no versions",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_a_bad_config_is_one_line_naming_problem_and_fix(tmp_path, case):
    text, words = BAD_CONFIGS[case]
    config = write(tmp_path / "models.config", text)
    with pytest.raises(UserError) as raised:
        read_model_config(config)
    message = str(raised.value)
    assert "\n" not in message and str(config) in message and words in message, message
    assert "write TF Serving's text format" in message
    result = CliRunner().invoke(main, ["serve", "--model_config_file", str(config)])
    assert_one_line_error(result, words)


def test_model_or_config_and_files_that_are_not_there(tmp_path):
    assert_one_line_error(CliRunner().invoke(main, ["serve"]), "pass either --model FOLDER")
    both = CliRunner().invoke(main, ["serve", "--model", str(tmp_path), "--model-config-file", str(tmp_path / "c")])
    assert_one_line_error(both, "pass either --model FOLDER")
    missing = CliRunner().invoke(main, ["serve", "--model_config_file", str(tmp_path / "nothing.config")])
    assert_one_line_error(missing, "no such file")
    exported = write(tmp_path / "models.config", models_config())  # base_path is TF Serving's container path
    result = CliRunner().invoke(main, ["serve", "--model_config_file", str(exported)])
    assert_one_line_error(result, f"no SavedModel versions (folders 1, 2, ...) in {SERVING_BASE_PATH} for model mnist")


def request_for(name, version=None, label=None, images=PIXELS) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    return request


def predict(stub, name, version=None, label=None):
    return stub.Predict(request_for(name, version, label), timeout=60)


def statuses(client, name) -> dict[str, str]:
    response = client.get(f"/v1/models/{name}")
    if response.status_code == 404:
        return {}
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


def wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


CONFIG = """
model_config_list {
  config { name: "mnist" base_path: "mnist" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 versions: 3 } }
           version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } }
  config { name: "digits" base_path: "digits" model_version_policy { latest { num_versions: 2 } } }
}
"""

CHANGED = """
model_config_list {
  config { name: "mnist" base_path: "mnist" model_version_policy { specific { versions: 1 versions: 3 } }
           version_labels { key: "stable" value: 3 } }
  config { name: "other" base_path: "digits" }
}
"""


@pytest.mark.slow
def test_several_models_versions_and_labels_changed_while_serving(tiny_saved_model, tmp_path):
    for name, count in (("mnist", 3), ("digits", 3)):
        for version in range(1, count + 1):
            shutil.copytree(tiny_saved_model, tmp_path / name / str(version))
    config = write(tmp_path / "models.config", CONFIG)
    server = ServerProcess(
        None, "--model_config_file", str(config), "--model_config_file_poll_wait_seconds", "0.2", "--poll-seconds", "0"
    )
    try:
        assert "mnist (1 3), digits (2 3)" in "".join(server.stdout)
        with httpx.Client(base_url=server.url, timeout=60) as client, grpc.insecure_channel(server.grpc_address) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            assert statuses(client, "mnist") == {"3": "AVAILABLE", "1": "AVAILABLE"}  # 2 is not in the policy
            assert statuses(client, "digits") == {"3": "AVAILABLE", "2": "AVAILABLE"}
            body = {"instances": PIXELS.tolist()}
            for path, status in (
                ("mnist", 200),
                ("mnist/versions/1", 200),
                ("mnist/versions/2", 404),
                ("mnist/labels/stable", 200),
                ("mnist/labels/canary", 200),
                ("mnist/labels/beta", 400),
                ("digits/versions/2", 200),
                ("digits/versions/1", 404),
            ):
                assert client.post(f"/v1/models/{path}:predict", json=body).status_code == status, path
            labelled = client.get("/v1/models/mnist/labels/canary").json()["model_version_status"]
            assert [s["version"] for s in labelled] == ["3"]
            assert predict(stub, "mnist").model_spec.version.value == 3  # the newest serves by default
            assert predict(stub, "mnist", label="stable").model_spec.version.value == 1
            assert predict(stub, "mnist", label="canary").model_spec.version.value == 3
            assert predict(stub, "digits", version=2).model_spec.version.value == 2
            with pytest.raises(grpc.RpcError) as raised:
                predict(stub, "mnist", label="beta")
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as raised:
                predict(stub, "mnist", version=2)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND

            # digits removed while a large request to it is in flight, other added, stable relabelled.
            big = request_for("digits", images=np.repeat(PIXELS, 256, axis=0))
            in_flight = stub.Predict.future(big, timeout=60)
            write(config, CHANGED)
            wait_for(lambda: statuses(client, "other") == {"3": "AVAILABLE"}, "model other was not added")
            wait_for(lambda: statuses(client, "digits") == {}, "model digits was not removed")
            assert tf.make_ndarray(in_flight.result().outputs["class_id"]).shape == (256,)
            assert predict(stub, "mnist", label="stable").model_spec.version.value == 3
            assert client.post("/v1/models/mnist/labels/canary:predict", json=body).status_code == 400
            assert client.post("/v1/models/digits:predict", json=body).status_code == 404

            # A broken file keeps the models as they are.
            write(config, "model_config_list { config { name: ")
            time.sleep(1)
            assert statuses(client, "other") == {"3": "AVAILABLE"}
            assert predict(stub, "mnist", label="stable").model_spec.version.value == 3
            assert "model config not reloaded" in server.log()

            # ModelService.HandleReloadConfigRequest: another config at once, kept until the file changes.
            reload = model_management_pb2.ReloadConfigRequest()
            text_format.Parse(CONFIG, reload.config)
            relative = reload.config.model_config_list.config[1]
            relative.base_path = str(tmp_path / relative.base_path)
            model_service_pb2_grpc.ModelServiceStub(ch).HandleReloadConfigRequest(reload, timeout=60)
            assert statuses(client, "digits") == {"3": "AVAILABLE", "2": "AVAILABLE"}
            assert statuses(client, "other") == {}
            time.sleep(1)
            assert predict(stub, "mnist", label="stable").model_spec.version.value == 1
    finally:
        assert server.stop() == 0, server.log()
