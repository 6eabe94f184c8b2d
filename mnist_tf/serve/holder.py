"""The models behind the server: versions loaded as TF Serving loads them.

`ModelHolder` serves one model (`--model`: the highest version under a base
folder such as OUT/saved_model/mnist) or those of a model config file, each
with its version policy and labels (model_config.py). It polls the folders and
loads a new version the policy wants, then unloads the ones it no longer
wants once one it wants serves (TF Serving's default: the newest replaces the
old); it polls the config file too, for models added, removed or relabelled.
Signatures run in a thread pool so the event loop never waits on TensorFlow,
merging requests that queue meanwhile into one call (batching.py).
Which signatures, inputs and outputs exist is read from each SavedModel.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
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
from mnist_tf.serve.model_config import ModelSource, read_model_config
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


class Model:
    """One model of the server: where its versions are, which of them serve (its source's version policy),
    its version labels, and each version's state."""

    def __init__(self, source: ModelSource):
        self.source = source
        self.available: dict[int, Servable] = {}
        self.states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)

    def check(self) -> None:
        """UserError when the source's folder holds no numbered versions."""
        base = self.source.base
        if (base / "saved_model.pb").is_file():
            raise UserError(
                f"{base} is one version folder: pass the folder that holds the numbered versions, {base.parent}"
            )
        if not versions(base):
            raise UserError(
                f"no SavedModel versions (folders 1, 2, ...) in {base} for model {self.source.name}: "
                "run mnist-tf export first and pass OUT/saved_model/mnist (as --model, or a config's base_path)"
            )

    def refresh(self, fail: bool = False) -> None:
        """Loads the versions on disk that the policy wants and has not loaded, then unloads the ones it
        no longer wants, once one it wants serves (TF Serving's availability-preserving policy).
        A version that failed to load is not tried again. `fail`: raise that version's UserError."""
        wanted = self.source.wanted(versions(self.source.base))
        for version in wanted:
            if version not in self.available and not self.states.get(version, ("", ""))[1]:
                self._load(version, fail)
        if any(v in self.available for v in wanted):
            for version in [v for v in self.available if v not in wanted]:
                self.available = {v: s for v, s in self.available.items() if v != version}
                self.states[version] = ("END", "")
                log.warning("unloaded %s version %d", self.source.name, version)

    def _load(self, version: int, fail: bool) -> None:
        self.states[version] = ("LOADING", "")
        try:
            servable = load_servable(self.source.base / str(version), version, self.source.name)
        except UserError as e:
            self.states[version] = ("END", str(e))
            if fail:
                raise
            log.error("%s version %d not loaded: %s", self.source.name, version, e)
            return
        self.available = {**self.available, version: servable}
        self.states[version] = ("AVAILABLE", "")
        log.warning("serving %s version %d from %s", self.source.name, version, servable.path)

    def version(self, version: int | None, label: str | None) -> int | None:
        """The version a request names, by number or by label (INVALID_ARGUMENT for an unknown label)."""
        if label is None:
            return version
        labelled = self.source.label(label)
        if labelled is None:
            raise invalid(f"Unrecognized servable version label: {label}")
        return labelled


class ModelHolder:
    """The models the server serves, each as its source says; versions and the model config file
    (`config_file`, when the models came from one) are polled for changes."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        poll_seconds: float = 1.0,
        threads: int = 2,
        max_batch: int = 32,
        config_file: Path | None = None,
        config_poll_seconds: float = 0.0,
    ):
        self.models = {source.name: Model(source) for source in sources}
        self.poll_seconds = poll_seconds
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds if config_file is not None else 0.0
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        self.metrics = Metrics(lambda: self.models)
        self.batcher = Batcher(self.pool, threads, max_batch, self.metrics)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._changing = threading.Lock()  # one thread at a time loads, unloads or replaces models
        self._file_sources = list(sources) if config_file is not None else None

    def start(self) -> dict[str, list[int]]:
        """Loads every model's versions now (UserError when one has none, or its newest does not load),
        starts polling, and returns the versions each model serves."""
        for model in self.models.values():
            model.check()
        for model in self.models.values():
            model.refresh(fail=True)
        if self.poll_seconds > 0 or self.config_poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._poller.start()
        return self.served()

    def served(self) -> dict[str, list[int]]:
        return {name: sorted(model.available) for name, model in self.models.items()}

    def stop(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=True)

    def _poll(self) -> None:
        intervals = [s for s in (self.poll_seconds, self.config_poll_seconds) if s > 0]
        next_versions = next_config = time.monotonic()
        while not self._stop.wait(min(intervals)):
            now = time.monotonic()
            if self.config_poll_seconds > 0 and now >= next_config:
                next_config = now + self.config_poll_seconds
                self._reload_config()
            if self.poll_seconds > 0 and now >= next_versions:
                next_versions = now + self.poll_seconds
                with self._changing:
                    for model in self.models.values():
                        model.refresh()

    def _reload_config(self) -> None:
        """Applies the config file when it has changed since it was last read. A file that does not read
        keeps the models as they are."""
        try:
            sources = read_model_config(self.config_file)
        except UserError as e:
            log.error("model config not reloaded, still serving %s: %s", ", ".join(self.models), e)
            return
        if sources != self._file_sources:
            self._file_sources = sources
            self.apply(sources)

    def apply(self, sources: Sequence[ModelSource]) -> None:
        """Serves `sources` from now on: models added are loaded, models removed dropped, the others take
        their new folder, policy and labels. Requests in flight keep the servable they got, so they finish."""
        with self._changing:
            models = {}
            for source in sources:
                model = self.models.get(source.name) or Model(source)
                model.source = source
                try:
                    model.check()
                except UserError as e:
                    log.error("model %s not served: %s", source.name, e)
                models[source.name] = model
            self.models = models
            for model in models.values():
                model.refresh()
        log.warning("model config applied: serving %s", ", ".join(models))

    def _model(self, name: str) -> Model | None:
        return self.models.get(name)

    def get(self, name: str, version: int | None, label: str | None = None) -> Servable:
        """The servable for a request, or NOT_FOUND in TF Serving's words."""
        model = self._model(name)
        if model is not None:
            version = model.version(version, label)
            available = model.available
            chosen = available.get(version) if version is not None else available.get(max(available, default=0))
            if chosen is not None:
                return chosen
        what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        raise not_found(f"Servable not found for request: {what}")

    def status(self, name: str, version: int | None, label: str | None = None) -> Any:
        """A GetModelStatusResponse: the known versions, newest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        model = self._model(name)
        if model is None or not model.states:
            raise not_found(f"Could not find any versions of model {name}")
        version = model.version(version, label)
        states = dict(model.states)
        if version is not None and version not in states:
            raise not_found(f"Could not find version {version} of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in [version] if version is not None else sorted(states, reverse=True):
            state, error = states[v]
            status = response.model_version_status.add(version=v)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            status.status.error_code = CODES.index("UNKNOWN" if error else "OK")
            status.status.error_message = error
        return response

    async def run(self, servable: Servable, signature: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature in the thread pool, off the event loop, batched with requests queued meanwhile."""
        return await self.batcher.run(servable, signature, tensors)


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
