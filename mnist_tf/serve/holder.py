"""The model behind the server: versions loaded as TF Serving loads them.

`ModelHolder` serves the highest version under a base folder
(OUT/saved_model/mnist), polls the folder and switches to a newer version once
it has loaded (the old one is then unloaded, TF Serving's default policy), and
runs signatures in a thread pool so the event loop never waits on TensorFlow,
merging requests that queue meanwhile into one call (batching.py).
Which signatures, inputs and outputs exist is read from each SavedModel.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core.contract import DEFAULT_SIGNATURE, MODEL_NAME
from mnist_tf.core.errors import UserError
from mnist_tf.export.saved_model import versions
from mnist_tf.serve.batching import Batcher
from mnist_tf.serve.rest import RestError, invalid

log = logging.getLogger("mnist_tf.serve")


@dataclasses.dataclass(frozen=True)
class Servable:
    """One loaded version: the TF object and its SignatureDefs."""

    version: int
    path: Path
    loaded: Any
    signature_defs: Any  # the MetaGraphDef's map of SignatureDef protos

    def input_specs(self, signature: str) -> dict[str, str]:
        """Input name -> TF dtype name ("uint8", "string", ...), or RestError 400 for an unknown signature."""
        from tensorflow.core.framework import types_pb2

        name = signature or DEFAULT_SIGNATURE
        if name not in self.signature_defs or name not in self.loaded.signatures:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        inputs = self.signature_defs[name].inputs
        return {k: types_pb2.DataType.Name(inputs[k].dtype)[3:].lower() for k in sorted(inputs)}

    def check_shapes(self, signature: str, tensors: dict[str, np.ndarray]) -> None:
        """Refuses inputs whose shape the signature does not accept, in tf.ensure_shape's words."""
        inputs = self.signature_defs[signature or DEFAULT_SIGNATURE].inputs
        for name, array in tensors.items():
            shape = inputs[name].tensor_shape
            if shape.unknown_rank:
                continue
            expected = [d.size for d in shape.dim]
            if len(expected) != array.ndim or any(e not in (-1, a) for e, a in zip(expected, array.shape)):
                wanted = ",".join("?" if e == -1 else str(e) for e in expected)
                got = ",".join(str(d) for d in array.shape)
                raise invalid(f"Shape of tensor {name} [{got}] is not compatible with expected shape [{wanted}].")

    def run(self, signature: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls the signature (blocking); TF's errors become RestErrors with TF Serving's status codes."""
        import tensorflow as tf

        fn = self.loaded.signatures[signature or DEFAULT_SIGNATURE]
        try:
            outputs = fn(**{name: tf.constant(array) for name, array in tensors.items()})
        except tf.errors.OpError as e:
            raise RestError(_HTTP_STATUS.get(e.error_code, 500), tf_message(e.message)) from None
        return {name: value.numpy() for name, value in outputs.items()}


# TF status code -> HTTP status, as tensorflow_serving/model_servers/http_server.cc maps them.
_HTTP_STATUS = {
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}


def tf_message(message: str) -> str:
    """The part of a TF error message that names the problem, without graph-execution boilerplate."""
    lines = [line.strip() for line in message.split("\n\t")[0].splitlines() if line.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        return lines[-1]
    return " ".join(lines)


def load_servable(path: Path, version: int) -> Servable:
    """Loads one version folder; raises UserError when it is not a readable SavedModel."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        loaded = tf.saved_model.load(str(path))
        proto = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    except Exception as e:  # noqa: BLE001  (TF raises many types for a broken SavedModel)
        raise UserError(f"{path} is not a readable SavedModel ({type(e).__name__}): export it with mnist-tf export")
    return Servable(version, path, loaded, dict(proto.meta_graphs[0].signature_def))


class ModelHolder:
    """The versions of one model: the newest loaded one serves, newer ones are picked up by polling."""

    def __init__(
        self, base: Path, name: str = MODEL_NAME, poll_seconds: float = 1.0, threads: int = 2, max_batch: int = 32
    ):
        self.base = Path(base)
        self.name = name
        self.poll_seconds = poll_seconds
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        self.batcher = Batcher(self.pool, threads, max_batch)
        self.current: Servable | None = None
        self.states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> Servable:
        """Loads the newest version now (UserError when there is none) and starts polling for newer ones."""
        if (self.base / "saved_model.pb").is_file():
            raise UserError(
                f"{self.base} is one version folder: pass the folder that holds the numbered versions, {self.base.parent}"
            )
        found = versions(self.base)
        if not found:
            raise UserError(
                f"no SavedModel versions (folders 1, 2, ...) in {self.base}: run mnist-tf export first "
                "and pass OUT/saved_model/mnist"
            )
        self._load(found[-1], fail=True)
        if self.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
            self._poller.start()
        return self.current

    def stop(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True)

    def _load(self, version: int, fail: bool = False) -> None:
        self.states[version] = ("LOADING", "")
        try:
            servable = load_servable(self.base / str(version), version)
        except UserError as e:
            self.states[version] = ("END", str(e))
            if fail:
                raise
            log.error("version %d not loaded: %s", version, e)
            return
        old, self.current = self.current, servable
        self.states[version] = ("AVAILABLE", "")
        if old is not None:
            self.states[old.version] = ("END", "")
        log.warning("serving %s version %d from %s", self.name, version, servable.path)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            newest = max(versions(self.base), default=0)
            if self.current is not None and newest > self.current.version and newest not in self.states:
                self._load(newest)

    def get(self, name: str, version: int | None) -> Servable:
        """The servable for a request, or RestError 404 in TF Serving's words."""
        servable = self.current
        if name != self.name or servable is None or (version is not None and version != servable.version):
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise RestError(404, f"Servable not found for request: {what}")
        return servable

    def status(self, name: str, version: int | None) -> dict[str, Any]:
        """GetModelStatusResponse as JSON: the known versions, newest first."""
        if name != self.name or not self.states:
            raise RestError(404, f"Could not find any versions of model {name}")
        if version is not None and version not in self.states:
            raise RestError(404, f"Could not find version {version} of model {name}")
        chosen = [version] if version is not None else sorted(self.states, reverse=True)
        return {
            "model_version_status": [
                {
                    "version": str(v),
                    "state": self.states[v][0],
                    "status": {
                        "error_code": "UNKNOWN" if self.states[v][1] else "OK",
                        "error_message": self.states[v][1],
                    },
                }
                for v in chosen
            ]
        }

    async def run(self, servable: Servable, signature: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature in the thread pool, off the event loop, batched with requests queued meanwhile."""
        return await self.batcher.run(servable, signature, tensors)


def metadata(servable: Servable, name: str) -> dict[str, Any]:
    """GetModelMetadataResponse as TF Serving's REST API writes it."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = servable.version
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
        signatures.signature_def[key].CopyFrom(value)
    options = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    return {
        "model_spec": json_format.MessageToDict(spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signatures, **options)},
    }
