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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core.contract import DEFAULT_SIGNATURE, MODEL_NAME
from mnist_tf.core.errors import UserError
from mnist_tf.export.saved_model import versions
from mnist_tf.serve.batching import Batcher
from mnist_tf.serve.metrics import Metrics
from mnist_tf.serve.status import CODES, from_tf_code, invalid, not_found

log = logging.getLogger("mnist_tf.serve")


@dataclasses.dataclass(frozen=True)
class Servable:
    """One loaded version: the TF object and its SignatureDefs."""

    version: int
    path: Path
    loaded: Any
    signature_defs: Any  # the MetaGraphDef's map of SignatureDef protos
    name: str = MODEL_NAME  # the model it is a version of

    def input_specs(self, signature: str) -> dict[str, str]:
        """Input name -> TF dtype name ("uint8", "string", ...); INVALID_ARGUMENT for an unknown signature."""
        return {name: dtype_name(info.dtype) for name, info in sorted(self._signature(signature).inputs.items())}

    def output_names(self, signature: str) -> list[str]:
        return sorted(self._signature(signature).outputs)

    def _signature(self, signature: str) -> Any:
        name = signature or DEFAULT_SIGNATURE
        if name not in self.signature_defs or name not in self.loaded.signatures:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return self.signature_defs[name]

    def check_inputs(self, signature: str, dtypes: Mapping[str, str], shapes: Mapping[str, Sequence[int]]) -> None:
        """Refuses inputs the signature does not take: missing or unknown names (in TF Serving's words),
        other dtypes, or shapes it does not accept (in tf.ensure_shape's words)."""
        inputs = self._signature(signature).inputs
        if set(dtypes) != set(inputs):
            extra, missing = sorted(set(dtypes) - set(inputs)), sorted(set(inputs) - set(dtypes))
            raise invalid(
                f"input size does not match signature: {len(dtypes)}!={len(inputs)} "
                f"len({{{','.join(sorted(dtypes))}}}) != len({{{','.join(sorted(inputs))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        for name in sorted(dtypes):
            expected = dtype_name(inputs[name].dtype)
            if dtypes[name] != expected:
                raise invalid(f"Expects input {name} to be {expected} but {dtypes[name]} is provided")
        for name, got in shapes.items():
            shape = inputs[name].tensor_shape
            if shape.unknown_rank:
                continue
            expected = [d.size for d in shape.dim]
            if len(expected) != len(got) or any(e not in (-1, a) for e, a in zip(expected, got)):
                wanted = ",".join("?" if e == -1 else str(e) for e in expected)
                raise invalid(
                    f"Shape of tensor {name} [{','.join(map(str, got))}] is not compatible with expected shape [{wanted}]."
                )

    def run(self, signature: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls the signature (blocking); TF's errors become RequestErrors with their status codes."""
        import tensorflow as tf

        fn = self.loaded.signatures[signature or DEFAULT_SIGNATURE]
        try:
            outputs = fn(**{name: tf.constant(array) for name, array in tensors.items()})
        except tf.errors.OpError as e:
            raise from_tf_code(e.error_code, tf_message(e.message)) from None
        return {name: value.numpy() for name, value in outputs.items()}


def dtype_name(dtype: int) -> str:
    """A DataType enum value as TF's DataTypeString names it: DT_UINT8 -> "uint8"."""
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(dtype)[3:].lower()


def tf_message(message: str) -> str:
    """The part of a TF error message that names the problem, without graph-execution boilerplate."""
    lines = [line.strip() for line in message.split("\n\t")[0].splitlines() if line.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        return lines[-1]
    return " ".join(lines)


def load_servable(path: Path, version: int, name: str = MODEL_NAME) -> Servable:
    """Loads one version folder; raises UserError when it is not a readable SavedModel."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        loaded = tf.saved_model.load(str(path))
        proto = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    except Exception as e:  # noqa: BLE001  (TF raises many types for a broken SavedModel)
        raise UserError(f"{path} is not a readable SavedModel ({type(e).__name__}): export it with mnist-tf export")
    return Servable(version, path, loaded, dict(proto.meta_graphs[0].signature_def), name)


class ModelHolder:
    """The versions of one model: the newest loaded one serves, newer ones are picked up by polling."""

    def __init__(
        self, base: Path, name: str = MODEL_NAME, poll_seconds: float = 1.0, threads: int = 2, max_batch: int = 32
    ):
        self.base = Path(base)
        self.name = name
        self.poll_seconds = poll_seconds
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        self.metrics = Metrics(lambda: {self.name})
        self.batcher = Batcher(self.pool, threads, max_batch, self.metrics)
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
            servable = load_servable(self.base / str(version), version, self.name)
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

    def get(self, name: str, version: int | None, label: str | None = None) -> Servable:
        """The servable for a request, or NOT_FOUND in TF Serving's words."""
        _no_label(label)
        servable = self.current
        if name != self.name or servable is None or (version is not None and version != servable.version):
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {what}")
        return servable

    def status(self, name: str, version: int | None, label: str | None = None) -> Any:
        """A GetModelStatusResponse: the known versions, newest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        _no_label(label)
        if name != self.name or not self.states:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None and version not in self.states:
            raise not_found(f"Could not find version {version} of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in [version] if version is not None else sorted(self.states, reverse=True):
            state, error = self.states[v]
            status = response.model_version_status.add(version=v)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.error_code = CODES.index("UNKNOWN" if error else "OK")
            status.status.error_message = error
        return response

    async def run(self, servable: Servable, signature: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature in the thread pool, off the event loop, batched with requests queued meanwhile."""
        return await self.batcher.run(servable, signature, tensors)


def _no_label(label: str | None) -> None:
    if label is not None:
        raise invalid(f"Unrecognized servable version label: {label}")


def model_spec(name: str, version: int, signature: str | None = None) -> Any:
    """The ModelSpec an answer names: the model, the version that answered, the signature if any."""
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    if signature is not None:
        spec.signature_name = signature
    return spec


def signature_def_map(servable: Servable) -> Any:
    """The servable's SignatureDefs as GetModelMetadata's `signature_def` field holds them."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
        signatures.signature_def[key].CopyFrom(value)
    return signatures


def as_json(message: Any) -> dict[str, Any]:
    """A proto as TF Serving's REST API writes it: field names as in the .proto, default values included."""
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def metadata(servable: Servable, name: str) -> dict[str, Any]:
    """GetModelMetadataResponse as TF Serving's REST API writes it."""
    return {
        "model_spec": as_json(model_spec(name, servable.version)),
        "metadata": {"signature_def": as_json(signature_def_map(servable))},
    }
