"""The Starlette app: TF Serving's REST API for one model, and the draw-a-digit page at `/`.

Paths are matched with TF Serving's own regular expressions
(tensorflow_serving/model_servers/http_rest_api_util.cc), so the same URLs,
status codes and `{"error": ...}` bodies come back as from TF Serving.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mnist_tf.serve import rest
from mnist_tf.serve.holder import ModelHolder, as_json, metadata
from mnist_tf.serve.limits import Limits, read_body
from mnist_tf.serve.metrics import CONTENT_TYPE
from mnist_tf.serve.metrics import PATH as METRICS_PATH
from mnist_tf.serve.predict import OFF_LOOP_BYTES, OFF_LOOP_VALUES, check_request
from mnist_tf.serve.predict import predict as run_predict
from mnist_tf.serve.status import RequestError, invalid

log = logging.getLogger("mnist_tf.serve")
STATIC = Path(__file__).parent / "static"
PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:\/(metadata))?")


def json_response(text: str, status: int = 200) -> Response:
    return Response(text, status, media_type="application/json")


def error_response(error: RequestError) -> Response:
    return json_response(rest.error_json(error.message), error.http_status)


def _version(number: str | None) -> int | None:
    return int(number) if number else None


async def model_status(request: Request, match: re.Match) -> Response:
    name, number, label, subresource = match.groups()
    if not name:
        raise invalid("Missing model name in request.")
    holder: ModelHolder = request.app.state.holder
    if subresource:
        return JSONResponse(metadata(holder.get(name, _version(number), label), name))
    return JSONResponse(as_json(holder.status(name, _version(number), label)))


async def predict(request: Request, match: re.Match) -> Response:
    name, number, label, method = match.groups()
    holder: ModelHolder = request.app.state.holder
    with holder.metrics.request(name, "REST", method.lower()):
        limits: Limits = request.app.state.limits
        body = await read_body(request.stream(), request.headers.get("content-length"), limits.max_body_bytes)
        doc = rest.parse_body(body)
        servable = holder.get(name, _version(number), label)
        signature = doc.get("signature_name", "")
        specs = servable.input_specs(signature)
        if method.lower() != "predict":
            raise invalid(
                f"Expected {method.lower()} signature method_name to be tensorflow/serving/{method.lower()}. "
                "Was: tensorflow/serving/predict"
            )
        if len(body) > OFF_LOOP_BYTES:  # Converting a large body takes long enough to hold up other requests' I/O.
            tensors, row = await run_in_threadpool(rest.request_tensors, doc, specs)
        else:
            tensors, row = rest.request_tensors(doc, specs)
        check_request(
            servable, signature, limits, {n: specs[n] for n in tensors}, {n: a.shape for n, a in tensors.items()}
        )
        outputs = await run_predict(holder, servable, signature, tensors, limits)
        if sum(a.size for a in outputs.values()) > OFF_LOOP_VALUES:
            return json_response(await run_in_threadpool(rest.response_json, outputs, row))
        return json_response(rest.response_json(outputs, row))


async def rest_api(request: Request) -> Response:
    """Every /v1/ path, dispatched as TF Serving's HttpRestApiHandler does."""
    path = request.url.path
    try:
        if request.method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            return await predict(request, match)
        if request.method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            return await model_status(request, match)
        raise invalid(f"Malformed request: {request.method} {path}")
    except RequestError as e:
        return error_response(e)
    except Exception as e:  # A bug, not the client's fault: say so, keep serving.
        log.exception("error in %s %s", request.method, path)
        return error_response(RequestError("INTERNAL", f"internal error ({type(e).__name__}): see the server's log"))


async def metrics(request: Request) -> Response:
    """The server's metrics in Prometheus' text format, under TF Serving's names."""
    return Response(request.app.state.holder.metrics.text(), media_type=CONTENT_TYPE)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(holder: ModelHolder, limits: Limits | None = None) -> Starlette:
    """The ASGI app serving `holder`'s model; the holder must be started."""
    app = Starlette(
        routes=[
            Route("/", index),
            Route(METRICS_PATH, metrics),
            Route("/v1/{path:path}", rest_api, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.state.holder = holder
    app.state.limits = limits or Limits()
    return app
