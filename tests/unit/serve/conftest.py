"""What the server tests share: a real server process per test module, a REST client of it, and the
exported model called in the test's own process."""

from __future__ import annotations

import httpx
import pytest
from helpers import model_base

from mnist_tf.serve.process import ServerProcess

# Small limits, so that the tests can pass them: --max-instances, --max-body-bytes, --max-image-pixels.
LIMITS = ("--max-instances", "4", "--max-body-bytes", "200000", "--max-image-pixels", "10000")


@pytest.fixture(scope="module")
def server(tiny_saved_model, tmp_path_factory):
    """`mnist-tf serve` in a child process, REST and gRPC on free loopback ports, with `LIMITS`."""
    base = model_base(tiny_saved_model, tmp_path_factory.mktemp("serve"))
    process = ServerProcess(base, *LIMITS, "--poll-seconds", "0")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_saved_model):
    """The SavedModel called in this process: what every answer must equal."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tiny_saved_model))

    def call(signature: str, **inputs):
        return {k: v.numpy() for k, v in loaded.signatures[signature](**inputs).items()}

    return call
