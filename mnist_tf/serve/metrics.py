"""The server's metrics in Prometheus' text format, under TF Serving's names, for REST and gRPC alike.

`GET /monitoring/prometheus/metrics` answers what TF Serving's `--monitoring_config_file` with
`prometheus_config { enable: true }` exposes for predict requests:

  :tensorflow:serving:request_count{model_name,status}            counter
  :tensorflow:serving:request_latency{model_name,API,entrypoint}  histogram, microseconds
  :tensorflow:serving:runtime_latency{model_name,API,runtime}     histogram, microseconds
  :tensorflow:serving:request_example_counts{model_name}          histogram, instances per request

and the batcher's own (TF Serving has no such names): `:mnist_tf:serving:batch_queue_depth`, the
requests waiting for a model thread, and `:mnist_tf:serving:batch_size`, the instances per model call.

The values live in prometheus-client's metrics, in a registry of each server's own. The text is written
here, as TF Serving writes it: its counter carries no `_total` suffix and no `_created` series, which
prometheus-client's own writer would add.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Container, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from mnist_tf.serve.status import RequestError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/monitoring/prometheus/metrics"
# TF Serving's buckets: tensorflow::monitoring::Buckets::Exponential(scale, growth, count).
LATENCY_BUCKETS = tuple(10 * 1.8**i for i in range(33))  # 10 us to about 1.5e9 us
COUNT_BUCKETS = tuple(float(2**i) for i in range(15))  # 1 to 16384
UNKNOWN_MODEL = "unknown"  # the model_name label of requests for a model the server does not have


class Metrics:
    """One server's metrics; `known_models()` names the models requests may be counted under."""

    def __init__(self, known_models: Callable[[], Container[str]] = frozenset):
        self.known_models = known_models
        self.registry = CollectorRegistry()
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ["model_name", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.example_counts = Histogram(
            ":tensorflow:serving:request_example_counts",
            "The number of instances per request.",
            ["model_name"],
            buckets=COUNT_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            ":mnist_tf:serving:batch_queue_depth",
            "Requests waiting for a model thread.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            ":mnist_tf:serving:batch_size",
            "Instances per model call, requests that queued together merged.",
            buckets=COUNT_BUCKETS,
            registry=self.registry,
        )

    def model_label(self, name: str) -> str:
        """`name` when the server has that model: a client cannot grow the metrics with made-up names."""
        return name if name in self.known_models() else UNKNOWN_MODEL

    @contextlib.contextmanager
    def request(self, name: str, entrypoint: str, api: str = "predict") -> Iterator[None]:
        """Counts the request the block answers, with its status code, and times it."""
        start, status = time.perf_counter(), "OK"
        try:
            yield
        except RequestError as e:
            status = e.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        except BaseException:  # cancelled: the client went away
            status = "CANCELLED"
            raise
        finally:
            model = self.model_label(name)
            self.request_count.labels(model, status).inc()
            microseconds = (time.perf_counter() - start) * 1e6
            self.request_latency.labels(model, api, entrypoint).observe(microseconds)

    def examples(self, name: str, count: int) -> None:
        self.example_counts.labels(self.model_label(name)).observe(count)

    def model_call(self, names: list[str], instances: int, seconds: float) -> None:
        """One model call that answered a request for each of `names`, with `instances` in all."""
        self.batch_size.observe(instances)
        for name in names:
            self.runtime_latency.labels(self.model_label(name), "predict", "TF2").observe(seconds * 1e6)

    def text(self) -> str:
        """The exposition, in Prometheus' text format."""
        return exposition(self.registry)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def exposition(registry: CollectorRegistry) -> str:
    """Prometheus' text format (0.0.4) of `registry`, as TF Serving writes it: counters without a `_total`
    suffix, no `_created` series."""
    lines = []
    for metric in registry.collect():
        lines.append(f"# HELP {metric.name} {metric.documentation}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            name = metric.name if metric.type == "counter" else sample.name
            lines.append(f"{name}{_labels(sample.labels)} {floatToGoString(sample.value)}")
    return "\n".join(lines) + "\n"
