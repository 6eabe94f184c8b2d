"""`GET /monitoring/prometheus/metrics`: TF Serving's metric names, moved by exactly the requests sent.

Scraped from a real server process before and after known REST and gRPC traffic, and read with
prometheus-client's parser of the text format, as a Prometheus scraper reads it.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from helpers import digit_image
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mnist_tf.serve.metrics import Metrics, exposition
from mnist_tf.serve.status import invalid

METRICS = "/monitoring/prometheus/metrics"


def scrape(http) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition: (sample name, sorted labels) -> value."""
    response = http.get(METRICS)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:  # the parser calls a counter's samples NAME_total: the text says NAME
            name = family.name if family.type == "counter" else sample.name
            samples[name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def grpc_predict(stub, images: np.ndarray, name: str = "mnist") -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    stub.Predict(request, timeout=60)


def test_counts_move_by_exactly_the_requests_sent(server, client):
    image = digit_image()[None]
    http = client
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        grpc_predict(stub, image)  # the first call of each kind warms up; counted in neither scrape's difference
        before = scrape(http)
        for _ in range(3):  # REST: 3 good requests of 2 images
            assert http.post("/v1/models/mnist:predict", json={"instances": [image[0].tolist()] * 2}).status_code == 200
        for _ in range(2):  # gRPC: 2 good requests of 1 image
            grpc_predict(stub, image)
        assert http.post("/v1/models/mnist:predict", json={"instances": [[1]]}).status_code == 400  # wrong shape
        assert http.post("/v1/models/mnist:predict", json={"instances": [image[0].tolist()] * 5}).status_code == 400
        for bad in (image[..., 0], np.repeat(image, 5, axis=0)):  # wrong shape, too many instances
            with pytest.raises(grpc.RpcError):
                grpc_predict(stub, bad)
        with pytest.raises(grpc.RpcError):
            grpc_predict(stub, image, name="made-up")
        after = scrape(http)

    count = ":tensorflow:serving:request_count"
    assert moved(before, after, count, model_name="mnist", status="OK") == 5
    assert moved(before, after, count, model_name="mnist", status="INVALID_ARGUMENT") == 2
    assert moved(before, after, count, model_name="mnist", status="RESOURCE_EXHAUSTED") == 2
    assert moved(before, after, count, model_name="unknown", status="NOT_FOUND") == 1  # not the made-up name
    latency = ":tensorflow:serving:request_latency_count"
    assert moved(before, after, latency, model_name="mnist", API="predict", entrypoint="REST") == 5
    assert moved(before, after, latency, model_name="mnist", API="predict", entrypoint="GRPC") == 4
    inf = {"model_name": "mnist", "API": "predict", "entrypoint": "REST", "le": "+Inf"}
    assert moved(before, after, ":tensorflow:serving:request_latency_bucket", **inf) == 5
    assert moved(before, after, ":tensorflow:serving:request_latency_sum", **{k: inf[k] for k in list(inf)[:3]}) > 0
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert moved(before, after, runtime, model_name="mnist", API="predict", runtime="TF2") == 5  # the good ones
    examples = ":tensorflow:serving:request_example_counts"
    assert moved(before, after, examples + "_count", model_name="mnist") == 5
    assert moved(before, after, examples + "_sum", model_name="mnist") == 3 * 2 + 2 * 1
    assert moved(before, after, ":mnist_tf:serving:batch_size_sum") == 8  # every image, in one call or merged
    assert 1 <= moved(before, after, ":mnist_tf:serving:batch_size_count") <= 5
    assert after[":mnist_tf:serving:batch_queue_depth", ()] == 0


def test_text_is_tf_servings(client):
    answer = client.post("/v1/models/mnist:predict", json={"instances": [digit_image().tolist()]})
    assert answer.status_code == 200, answer.text
    text = client.get(METRICS).text
    assert "# TYPE :tensorflow:serving:request_count counter\n" in text
    assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"} ' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram\n" in text
    assert "_total" not in text and "_created" not in text  # as TF Serving writes them


def test_each_server_counts_its_own_and_labels_are_escaped():
    first, second = Metrics({"mnist"}.copy), Metrics({'a"b\\c'}.copy)
    with pytest.raises(type(invalid(""))), first.request("mnist", "REST"):
        raise invalid("bad")
    with second.request('a"b\\c', "GRPC"):
        pass
    assert ':tensorflow:serving:request_count{model_name="mnist",status="INVALID_ARGUMENT"} 1.0' in first.text()
    assert "GRPC" not in first.text()
    assert ':tensorflow:serving:request_count{model_name="a\\"b\\\\c",status="OK"} 1.0' in exposition(second.registry)
    parsed = {f.name: f for f in text_string_to_metric_families(second.text())}
    [sample] = parsed[":tensorflow:serving:request_count"].samples
    assert sample.labels["model_name"] == 'a"b\\c'
