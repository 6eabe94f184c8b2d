"""TF Serving's gRPC API beside the REST one: PredictionService and ModelService on grpc.aio.

Requests and answers are TF Serving's own protos (tensorflow_serving.apis), tensors TensorProtos,
so TF Serving's clients and generated stubs work unchanged. The servicers run on the REST server's
event loop, against the same ModelHolder, with the same checks, limits, batching and messages
(predict.py); a refused request answers with TF Serving's status code (status.py) and the next one
is served as usual.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from mnist_tf.core.contract import DEFAULT_SIGNATURE
from mnist_tf.core.errors import UserError
from mnist_tf.serve.holder import ModelHolder, dtype_name, model_spec, signature_def_map
from mnist_tf.serve.limits import Limits
from mnist_tf.serve.model_config import model_sources
from mnist_tf.serve.predict import OFF_LOOP_BYTES, OFF_LOOP_VALUES, check_request, predict
from mnist_tf.serve.status import RequestError, invalid, over_limit

log = logging.getLogger("mnist_tf.serve")
PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"


def requested(spec: Any) -> tuple[str, int | None, str | None]:
    """A ModelSpec's model name, version and version label (None where it names none)."""
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    return spec.name, version, spec.version_label if choice == "version_label" else None


def input_shapes(request: Any, limits: Limits) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Each input's dtype and shape, read from its TensorProto's header before any values are."""
    dtypes, shapes = {}, {}
    for name, proto in request.inputs.items():
        if proto.tensor_shape.unknown_rank:
            raise invalid(f"input {name} has no shape: send its TensorProto with tensor_shape set")
        shape = [d.size for d in proto.tensor_shape.dim]
        if any(d < 0 for d in shape):
            raise invalid(f"input {name} has a negative dimension in its shape [{','.join(map(str, shape))}]")
        # A TensorProto may hold fewer values than its shape (TF repeats the last): bound what it expands to.
        if math.prod(shape) > limits.max_body_bytes:
            raise over_limit(
                f"input {name} of shape [{','.join(map(str, shape))}] holds {math.prod(shape):,} values, more than "
                f"a request may (--max-body-bytes {limits.max_body_bytes:,}); send fewer or smaller images per request"
            )
        dtypes[name], shapes[name] = dtype_name(proto.dtype), shape
    return dtypes, shapes


def input_arrays(request: Any) -> dict[str, np.ndarray]:
    """The request's TensorProtos as arrays (strings as bytes objects)."""
    import tensorflow as tf

    arrays = {}
    for name, proto in request.inputs.items():
        shape = [dim.size for dim in proto.tensor_shape.dim]
        if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == math.prod(shape):
            # The usual request (pictures): read directly, without tf.make_ndarray's checks on every call.
            arrays[name] = np.array(list(proto.string_val), dtype=object).reshape(shape)
            continue
        try:
            arrays[name] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as e:
            raise invalid(f"input {name} is not a readable TensorProto: {e}") from None
    return arrays


def output_names(request: Any, available: list[str]) -> list[str]:
    """The outputs to answer with: the request's output_filter, or all of the signature's."""
    chosen = list(request.output_filter) or available
    for i, name in enumerate(chosen):
        if name not in available:
            raise invalid(
                f"output tensor alias not found in signature: {name} Outputs expected to be in the set "
                f"{{{','.join(available)}}}."
            )
        if name in chosen[:i]:
            raise invalid(f"duplicate output tensor alias: {name}")
    return chosen


# An answer's values go in the TensorProto's typed field, as TF Serving writes them (Tensor::AsProtoField),
# not in tensor_content: the dtypes a signature answers with, by numpy kind and size.
_FIELDS = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
    np.dtype(np.uint8): (types_pb2.DT_UINT8, "int_val"),
    np.dtype(np.int8): (types_pb2.DT_INT8, "int_val"),
    np.dtype(np.uint16): (types_pb2.DT_UINT16, "int_val"),
    np.dtype(np.int16): (types_pb2.DT_INT16, "int_val"),
}


def fill_tensor(proto: Any, array: np.ndarray) -> None:
    """`array` written into the TensorProto `proto`. The common dtypes are written directly (a tenth of
    tf.make_tensor_proto's time, which a small answer otherwise spends most of its conversion in); the
    others by tf.make_tensor_proto."""
    if array.dtype == object or array.dtype.kind == "S":  # strings: bytes objects or fixed-width bytes
        dtype, field, values = types_pb2.DT_STRING, "string_val", [bytes(v) for v in array.ravel()]
    elif array.dtype in _FIELDS:
        (dtype, field), values = _FIELDS[array.dtype], array.ravel().tolist()
    else:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    getattr(proto, field).extend(values)


def response_tensors(response: Any, outputs: dict[str, np.ndarray], names: list[str]) -> Any:
    for name in names:
        fill_tensor(response.outputs[name], np.asarray(outputs[name]))
    return response


class _Service:
    """What both services share: answers or TF Serving's status codes, and a line in the access log."""

    def __init__(self, stream: TextIO | None):
        self.stream = stream or sys.stderr

    async def answer(self, context: grpc.aio.ServicerContext, method: str, work: Awaitable[Any]) -> Any:
        start, code = time.perf_counter(), "OK"
        try:
            return await work
        except RequestError as e:
            code = e.code
            await context.abort(grpc.StatusCode[e.code], e.message)
        except asyncio.CancelledError:  # The client went away.
            code = "CANCELLED"
            raise
        except Exception as e:  # A bug, not the client's fault: say so, keep serving.
            code = "INTERNAL"
            log.exception("error in gRPC %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(e).__name__}): see the server's log")
        finally:
            peer = context.peer() or "-"
            client = peer.split(":", 1)[1].rsplit(":", 1)[0].strip("[]") if ":" in peer else peer
            self.stream.write(f'{client} "gRPC {method}" {code} {(time.perf_counter() - start) * 1000:.1f}ms\n')
            self.stream.flush()

    async def unimplemented(self, context: grpc.aio.ServicerContext, method: str, instead: str) -> Any:
        async def refuse() -> None:
            raise RequestError(
                "UNIMPLEMENTED", f"{method.rsplit('/', 1)[1]} is not implemented by this server: {instead}"
            )

        return await self.answer(context, method, refuse())


class PredictionService(_Service, prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def __init__(self, holder: ModelHolder, limits: Limits, stream: TextIO | None = None):
        super().__init__(stream)
        self.holder = holder
        self.limits = limits

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.answer(context, PREDICTION_SERVICE + "Predict", self._predict(request))

    async def _predict(self, request: Any) -> Any:
        with self.holder.metrics.request(request.model_spec.name, "GRPC"):
            name, version, label = requested(request.model_spec)
            servable = self.holder.get(name, version, label)
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            names = output_names(request, servable.output_names(signature))
            dtypes, shapes = input_shapes(request, self.limits)
            check_request(servable, signature, self.limits, dtypes, shapes)
            if request.ByteSize() > OFF_LOOP_BYTES:  # Converting a large request would hold up other requests' I/O.
                tensors = await asyncio.to_thread(input_arrays, request)
            else:
                tensors = input_arrays(request)
            outputs = await predict(self.holder, servable, signature, tensors, self.limits)
            response = predict_pb2.PredictResponse(model_spec=model_spec(name, servable.version, signature))
            if sum(outputs[n].size for n in names) > OFF_LOOP_VALUES:
                return await asyncio.to_thread(response_tensors, response, outputs, names)
            return response_tensors(response, outputs, names)

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.answer(context, PREDICTION_SERVICE + "GetModelMetadata", self._metadata(request))

    async def _metadata(self, request: Any) -> Any:
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        name, version, label = requested(request.model_spec)
        servable = self.holder.get(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_spec(name, servable.version))
        response.metadata["signature_def"].Pack(signature_def_map(servable))
        return response

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unimplemented(context, PREDICTION_SERVICE + "Classify", "call Predict")

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unimplemented(context, PREDICTION_SERVICE + "Regress", "call Predict")

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.unimplemented(context, PREDICTION_SERVICE + "MultiInference", "call Predict")


class ModelService(_Service, model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, and HandleReloadConfigRequest: another set of models, without a restart."""

    def __init__(self, holder: ModelHolder, stream: TextIO | None = None):
        super().__init__(stream)
        self.holder = holder

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def status() -> Any:
            return self.holder.status(*requested(request.model_spec))

        return await self.answer(context, MODEL_SERVICE + "GetModelStatus", status())

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.answer(context, MODEL_SERVICE + "HandleReloadConfigRequest", self._reload(request))

    async def _reload(self, request: Any) -> Any:
        """Serves the models of the request's config from now on (a polled config file, once it changes,
        again those of the file). Relative base_paths are read from the config file's folder, if any."""
        config_file = self.holder.config_file
        try:
            sources = model_sources(request.config, config_file.parent if config_file else Path.cwd())
        except ValueError as e:
            raise invalid(f"not a model config: {e}") from None
        await asyncio.to_thread(self.holder.apply, sources)
        return model_management_pb2.ReloadConfigResponse()


async def start_grpc(
    holder: ModelHolder, limits: Limits, host: str, port: int, stream: TextIO | None = None
) -> tuple[grpc.aio.Server, int]:
    """Both services listening on `host:port` (0: any free port), on the running event loop; and the port.

    Messages over `limits.max_body_bytes` are refused by gRPC itself (RESOURCE_EXHAUSTED).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port another server holds is an error, not shared
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(holder, limits, stream), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(holder, stream), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(f"cannot listen on {address} for gRPC: pass another --grpc-port, or --no-grpc")
    await server.start()
    return server, bound
