"""`mnist-tf serve`: TF Serving's REST API from a real server process, and `predict --server`.

Every error answers with TF Serving's status code and `{"error": ...}` body, and
the next request is served normally. Expected messages are TF Serving's own
(tensorflow_serving/util/json_tensor.cc, http_rest_api_handler.cc).
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import time

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import digit_image, model_base, png_bytes, stop_during

from mnist_tf.cli import main
from mnist_tf.core.types import SURE
from mnist_tf.serve.process import ServerProcess
from mnist_tf.serve.rest import format_float
from mnist_tf.serve.server import is_loopback


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def assert_serves(client) -> None:
    """A good request after an error: the server still answers it."""
    response = client.post("/v1/models/mnist:predict", json={"instances": [digit_image().tolist()]})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_model_status_as_tf_serving_writes_it(client):
    expected = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert client.get("/v1/models/mnist").json() == {"model_version_status": [expected]}
    assert client.get("/v1/models/mnist/versions/1").json() == {"model_version_status": [expected]}


def test_metadata_lists_the_saved_models_signatures(client):
    for path in ("/v1/models/mnist/metadata", "/v1/models/mnist/versions/1/metadata"):
        body = client.get(path).json()
        assert body["model_spec"] == {"name": "mnist", "version": "1", "signature_name": ""}
        signatures = body["metadata"]["signature_def"]["signature_def"]
        assert signatures["serving_default"]["inputs"]["image"]["dtype"] == "DT_UINT8"
        assert [d["size"] for d in signatures["serving_default"]["inputs"]["image"]["tensor_shape"]["dim"]] == [
            "-1",
            "28",
            "28",
            "1",
        ]
        assert signatures["serving_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
        assert signatures["serving_bytes"]["method_name"] == "tensorflow/serving/predict"
        assert {"probabilities", "class_id", "logits"} <= set(signatures["serving_bytes"]["outputs"])


def test_predict_row_format_equals_the_model(client, reference):
    images = np.stack([digit_image(0), digit_image(1)])
    response = client.post("/v1/models/mnist:predict", json={"instances": images.tolist()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    rows = response.json()["predictions"]
    expected = reference("serving_default", image=images)
    assert len(rows) == 2 and set(rows[0]) == set(expected)
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], rtol=1e-6, atol=1e-7)
        assert row["class_id"] == expected["class_id"][i]
    named = client.post("/v1/models/mnist/versions/1:predict", json={"instances": [{"image": images[0].tolist()}]})
    named_row = named.json()["predictions"][0]  # batch 1, rounded differently from batch 2 by oneDNN
    np.testing.assert_allclose(named_row["probabilities"], rows[0]["probabilities"], rtol=1e-5)


def test_predict_columnar_format_equals_the_model(client, reference):
    images = np.stack([digit_image(2), digit_image(3)])
    for inputs in (images.tolist(), {"image": images.tolist()}):
        response = client.post("/v1/models/mnist:predict", json={"signature_name": "serving_default", "inputs": inputs})
        outputs = response.json()["outputs"]
        expected = reference("serving_default", image=images)
        assert set(outputs) == set(expected)
        np.testing.assert_allclose(outputs["logits"], expected["logits"], rtol=1e-5, atol=1e-6)
        assert outputs["class_id"] == expected["class_id"].tolist()


def test_predict_b64_png_through_serving_bytes(client, reference):
    data = [png_bytes(digit_image(4)), png_bytes(digit_image(5))]
    response = client.post(
        "/v1/models/mnist:predict", json={"signature_name": "serving_bytes", "instances": [b64(d) for d in data]}
    )
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    expected = reference("serving_bytes", image_bytes=np.array(data, object))
    assert set(rows[0]) == set(expected)  # whatever the signature returns, `image` and `blank` included
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i], rtol=1e-6, atol=1e-7)
    columnar = client.post(
        "/v1/models/mnist:predict", json={"signature_name": "serving_bytes", "inputs": {"image_bytes": [b64(data[0])]}}
    )
    assert columnar.json()["outputs"]["class_id"] == [rows[0]["class_id"]]


def test_floats_written_as_tf_serving_writes_them():
    assert format_float(float(np.float32(0.1)), np.float32) == "0.1"
    assert format_float(1.0, np.float32) == "1.0"
    assert format_float(float(np.float32(1 / 3)), np.float32) == "0.333333343"
    assert format_float(3e-05, np.float32) == "3e-05"
    assert format_float(float("nan"), np.float32) == "NaN"


def test_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Draw a digit" in page.text and "/static/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "http" not in client.get("/static/app.js").text.split("\n", 3)[3]  # no CDN: everything from here


PREDICT = "/v1/models/mnist:predict"


PIXELS = digit_image().tolist()


ERRORS = {
    "malformed JSON": (PREDICT, b'{"instances": [1,', 400, "JSON Parse error: "),
    "empty body": (PREDICT, b"", 400, "JSON Parse error: The document is empty"),
    "not an object": (PREDICT, b"[1]", 400, "JSON Value: [1] Is not object"),
    "no instances or inputs": (PREDICT, {"signature_name": ""}, 400, "Missing 'inputs' or 'instances' key"),
    "both keys": (PREDICT, {"instances": [1], "inputs": [1]}, 400, "expecting only one of 'inputs' or 'instances'"),
    "instances not a list": (PREDICT, {"instances": 1}, 400, "Expecting 'instances' to be an list/array"),
    "no instances": (PREDICT, {"instances": []}, 400, "No values in 'instances' array"),
    "signature_name not a string": (
        PREDICT,
        {"signature_name": 1, "instances": [1]},
        400,
        "'signature_name' key must be a string value",
    ),
    "float for uint8": (
        PREDICT,
        {"instances": [[[[1.5]] * 28] * 28]},
        400,
        "JSON Value: 1.5 Type: Number is not of expected type: uint8",
    ),
    "string for uint8": (
        PREDICT,
        {"inputs": [[["a"]]]},
        400,
        'JSON Value: "a" Type: String is not of expected type: uint8',
    ),
    "b64 for uint8": (PREDICT, {"instances": [{"b64": "AA=="}]}, 400, "Type: Object is not of expected type: uint8"),
    "uint8 out of range": (
        PREDICT,
        {"instances": [[[[300]] * 28] * 28]},
        400,
        "JSON Value: 300 Type: Number is not of expected type: uint8",
    ),
    "wrong shape": (
        PREDICT,
        {"instances": [[[0] * 28] * 28]},
        400,
        "Shape of tensor image [1,28,28] is not compatible with expected shape [?,28,28,1].",
    ),
    "ragged list": (
        PREDICT,
        {"inputs": [[1, 2], [3]]},
        400,
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
    ),
    "instances of two shapes": (
        PREDICT,
        {"instances": [[1, 2], [3]]},
        400,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1",
    ),
    "object among lists": (
        PREDICT,
        {"instances": [[1], {"image": [1]}]},
        400,
        "Expecting value/list but got object at item 1 of input list",
    ),
    "unknown input name": (
        PREDICT,
        {"instances": [{"pixels": [1]}]},
        400,
        "JSON object: does not have named input: pixels",
    ),
    "bad base64": (
        PREDICT,
        {"signature_name": "serving_bytes", "instances": [{"b64": "@@@@"}]},
        400,
        "Unable to base64 decode",
    ),
    "bytes that are no image": (
        PREDICT,
        {"signature_name": "serving_bytes", "instances": [b64(b"hello")]},
        400,
        "Unknown image file format",
    ),
    "too many instances": (
        PREDICT,
        {"instances": [PIXELS] * 5},
        400,
        "too many instances: 5 in one request, the limit is 4",
    ),
    "oversized body": (PREDICT, b'{"instances": [' + b"0," * 120_000 + b"0]}", 413, "request body too large"),
    "too many pixels": (
        PREDICT,
        {"signature_name": "serving_bytes", "instances": [b64(png_bytes(np.zeros((101, 100), np.uint8)))]},
        400,
        "image too large: 100x101 pixels in item 0, the limit is 10,000 pixels",
    ),
    "unknown signature": (
        PREDICT,
        {"signature_name": "nope", "instances": [1]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    "unknown model": (
        "/v1/models/mnist2:predict",
        {"instances": [PIXELS]},
        404,
        "Servable not found for request: Latest(mnist2)",
    ),
    "unknown version": (
        "/v1/models/mnist/versions/9:predict",
        {"instances": [PIXELS]},
        404,
        "Servable not found for request: Specific(mnist, 9)",
    ),
    "classify": (
        "/v1/models/mnist:classify",
        {"examples": []},
        400,
        "Expected classify signature method_name to be tensorflow/serving/classify",
    ),
    "status of unknown model": ("/v1/models/mnist2", None, 404, "Could not find any versions of model mnist2"),
    "status of unknown version": ("/v1/models/mnist/versions/9", None, 404, "Could not find version 9 of model mnist"),
    "metadata of unknown version": (
        "/v1/models/mnist/versions/9/metadata",
        None,
        404,
        "Servable not found for request: Specific(mnist, 9)",
    ),
    "no model name": ("/v1/models", None, 400, "Missing model name in request."),
    "malformed path": ("/v1/nothing/here", None, 400, "Malformed request: GET /v1/nothing/here"),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_error_answers_like_tf_serving_then_serves(client, case):
    path, body, status, message = ERRORS[case]
    if body is None:
        response = client.get(path)
    else:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and message in error["error"], error
    assert_serves(client)


def test_every_request_is_logged_in_one_line(client, server):
    client.post(PREDICT, content=b"{")

    def lines():
        return [line for line in server.log().splitlines() if '"POST /v1/models/mnist:predict HTTP/1.1" 400' in line]

    deadline = time.monotonic() + 10  # The line is written once the answer is sent, so it may come just after it.
    while not lines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines() and lines()[-1].startswith("127.0.0.1 ") and lines()[-1].endswith("ms")


@pytest.mark.parametrize("api", ["REST", "gRPC"])
def test_predict_through_the_server(server, reference, tmp_path, api):
    url = server.url + "/" if api == "REST" else f"grpc://{server.grpc_address}"
    good = tmp_path / "digit.png"
    good.write_bytes(png_bytes(digit_image(6)))
    (tmp_path / "notes.txt").write_text("not an image")
    expected = reference("serving_bytes", image_bytes=np.array([good.read_bytes()], object))
    digit = int(expected["class_id"][0])
    result = CliRunner().invoke(
        main,
        [
            "predict",
            "--server",
            url,
            str(good),
            str(tmp_path / "missing.png"),
            str(tmp_path / "notes.txt"),
        ],
    )
    assert result.exit_code == 1, result.output
    probability = float(expected["probabilities"][0][digit])
    flag = "" if probability >= SURE else ", not sure"  # the untrained model here is rarely sure
    assert f"{good}: {digit} ({probability:.1%}{flag})" in result.output
    assert f"{tmp_path / 'missing.png'}: error: no such file" in result.output
    assert f"{tmp_path / 'notes.txt'}: error: Unknown image file format" in result.output
    as_json = CliRunner().invoke(main, ["predict", "--server", url, "--json", str(good)])
    assert as_json.exit_code == 0 and json.loads(as_json.output)[0]["digit"] == digit
    shown = CliRunner().invoke(main, ["predict", "--server", url, "--show", str(tmp_path / "saw.png"), str(good)])
    assert shown.exit_code == 0 and (tmp_path / "saw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_through_the_server_says_when_no_digit_is_found(server, tmp_path):
    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.zeros((28, 28), np.uint8)))
    result = CliRunner().invoke(main, ["predict", "--server", server.url, str(blank)])
    assert result.exit_code == 1 and f"{blank}: error: no digit found" in result.output


def test_predict_needs_model_or_server_and_a_reachable_server(tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(png_bytes(digit_image()))
    neither = CliRunner().invoke(main, ["predict", str(image)])
    assert neither.exit_code == 2 and "Error: pass either --model PATH or --server URL" in neither.output
    down = CliRunner().invoke(main, ["predict", "--server", "http://127.0.0.1:9", str(image)])
    assert down.exit_code == 2 and "Error: cannot reach http://127.0.0.1:9" in down.output, down.output


def test_serve_refuses_what_it_cannot_serve(tmp_path, tiny_saved_model):
    empty = CliRunner().invoke(main, ["serve", "--model", str(tmp_path)])
    assert empty.exit_code == 2 and "Error: no SavedModel versions" in empty.output
    one = CliRunner().invoke(main, ["serve", "--model", str(tiny_saved_model)])
    assert one.exit_code == 2 and "is one version folder" in one.output
    exposed = CliRunner().invoke(main, ["serve", "--model", str(tmp_path), "--host", "0.0.0.0"])
    assert "warning: listening on 0.0.0.0: other machines can reach this server" in exposed.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


AVAILABLE_2 = {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def test_picks_up_a_new_version_and_stops_cleanly_on_sigterm(tiny_saved_model, tmp_path):
    base = model_base(tiny_saved_model, tmp_path)
    server = ServerProcess(base, "--poll-seconds", "0.2")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            shutil.copytree(base / "1", tmp_path / "staging")
            (tmp_path / "staging").rename(base / "2")  # as mnist-tf export does: renamed into place
            # Version 2 loads first and version 1 unloads after it: wait for both, as a client would.
            deadline = time.monotonic() + 60
            while (status := client.get("/v1/models/mnist").json()["model_version_status"])[0] != AVAILABLE_2 or (
                {s["version"]: s["state"] for s in status} != {"2": "AVAILABLE", "1": "END"}
            ):
                assert time.monotonic() < deadline, f"version 2 was not picked up, or 1 not unloaded: {status}"
                time.sleep(0.2)
            assert client.post("/v1/models/mnist/versions/2:predict", json={"instances": [PIXELS]}).status_code == 200
            assert client.post("/v1/models/mnist/versions/1:predict", json={"instances": [PIXELS]}).status_code == 404
            # SIGTERM while a large request is in flight on this kept-alive connection: it is answered.
            big = json.dumps({"instances": [PIXELS] * 256})
            code, answer = stop_during(server, lambda: client.post(PREDICT, content=big))
    finally:
        server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 256
    assert "stopped" in "".join(server.stdout)


def test_concurrent_requests_each_get_their_own_answer(client, server, reference):
    """Requests that arrive together may run as one batch: each still gets its own answer or error."""
    import asyncio

    data = [png_bytes(digit_image(seed)) for seed in range(8)]
    bodies = [
        {"signature_name": "serving_bytes", "instances": [b64(d if i % 3 else b"no image")]} for i, d in enumerate(data)
    ]

    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            return await asyncio.gather(*(http.post(PREDICT, json=body) for body in bodies * 3))

    responses = asyncio.run(send_all())
    expected = reference("serving_bytes", image_bytes=np.array(data, object))
    for i, response in enumerate(responses):
        if i % len(data) % 3 == 0:
            assert response.status_code == 400 and "Unknown image file format" in response.json()["error"]
            continue
        assert response.status_code == 200, response.text
        row = response.json()["predictions"][0]
        np.testing.assert_allclose(row["probabilities"], expected["probabilities"][i % len(data)], rtol=1e-4, atol=1e-6)
    assert_serves(client)


def test_batcher_merges_what_queues_and_isolates_a_bad_request(tiny_saved_model, reference):
    """With one model thread busy, the requests that queue meanwhile run as one call; a bad one fails alone."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from mnist_tf.serve.batching import Batcher
    from mnist_tf.serve.holder import load_servable
    from mnist_tf.serve.status import RequestError

    servable = load_servable(tiny_saved_model, 1)
    calls = []

    class Counting:  # the real servable, counting the batch size of each call
        def run(self, signature, tensors):
            calls.append(len(tensors["image_bytes"]))
            return servable.run(signature, tensors)

    data = [png_bytes(digit_image(seed)) for seed in range(6)]
    inputs = [np.array([d], object) for d in data] + [np.array([b"no image"], object)]

    async def send_all():
        batcher = Batcher(ThreadPoolExecutor(1), workers=1, max_batch=32)
        counting = Counting()
        return await asyncio.gather(
            *(batcher.run(counting, "serving_bytes", {"image_bytes": x}) for x in inputs), return_exceptions=True
        )

    results = asyncio.run(send_all())
    assert calls[:2] == [1, 6]  # the first alone, the six queued behind it together (bad one included) ...
    assert calls[2:] == [1] * 6  # ... which failed, so they ran again one by one
    expected = reference("serving_bytes", image_bytes=np.array(data, object))
    for i in range(6):
        np.testing.assert_allclose(results[i]["probabilities"][0], expected["probabilities"][i], rtol=1e-4, atol=1e-6)
    assert isinstance(results[6], RequestError) and results[6].code == "INVALID_ARGUMENT"


def test_batcher_shares_what_queues_evenly_among_the_model_threads():
    """A thread that comes free takes its share of what is queued and running, not the whole queue, so the
    requests of one burst wait about as long as each other: with two threads busy on one request each and
    eight queued, the first to finish takes five ((1 + 8) / 2, rounded up), not all eight; the last three
    follow in calls of at most three (how they split depends on which call ends first)."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from mnist_tf.serve.batching import Batcher

    release, calls = threading.Event(), []

    class Held:  # a model whose calls wait until released, counting the instances of each
        def run(self, signature, tensors):
            calls.append(len(tensors["x"]))
            release.wait(10)
            return {"y": tensors["x"] * 2}

    async def send():
        batcher, held = Batcher(ThreadPoolExecutor(2), workers=2, max_batch=32), Held()
        asyncio.get_running_loop().call_later(0.3, release.set)
        return await asyncio.gather(*(batcher.run(held, "s", {"x": np.array([i])}) for i in range(10)))

    results = asyncio.run(send())
    assert calls[:3] == [1, 1, 5]
    assert sum(calls) == 10 and max(calls[3:]) <= 3
    assert [int(r["y"][0]) for r in results] == [2 * i for i in range(10)]
