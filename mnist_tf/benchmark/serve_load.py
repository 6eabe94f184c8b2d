"""The `serve` benchmark part: `mnist-tf serve` under bounded load on loopback, over REST and gRPC.

An async client keeps N requests in flight (N = 1, 8, 32 clients) for a fixed
time, each a single-image PNG request to the `serving_bytes` signature: over
REST as `b64` JSON, as the page and `predict --server http://...` send (aiohttp),
then over gRPC as a TensorProto (grpc.aio, TF Serving's stubs). It reports
requests/s, p50/p99 latency, failed requests (an error status, a timeout or a
wrong answer), the server's peak resident memory, and the same signature called
in-process with no server for comparison. Client and server share the machine's cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core.contract import BYTES_INPUT_NAME, BYTES_SIGNATURE, MODEL_NAME, PROBABILITIES
from mnist_tf.inference.client import request_body

LEVELS = (1, 8, 32)


def latency_summary(latencies: Sequence[float], seconds: float) -> dict[str, float]:
    """Requests/s and p50/p99 milliseconds of `latencies` (seconds) over a run of `seconds`."""
    ms = np.asarray(latencies, np.float64) * 1000
    return {
        "requests_per_second": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
    }


_HEADERS = {"Content-Type": "application/json"}
APIS = ("REST", "gRPC")


@contextlib.asynccontextmanager
async def _rest_clients(url: str, png: bytes, clients: int) -> AsyncIterator[list[Callable[[], Awaitable]]]:
    """A call each for `clients` clients: a `b64` predict request on the client's own connection."""
    import aiohttp

    body = json.dumps(request_body(png)).encode()
    predict = f"{url}/v1/models/{MODEL_NAME}:predict"

    async def call(session: Any) -> str | None:
        try:
            async with session.post(predict, data=body, headers=_HEADERS) as response:
                text = await response.read()
            ok = response.status == 200 and "predictions" in json.loads(text)
            return None if ok else f"HTTP {response.status}: {text[:200]!r}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            return f"{type(e).__name__}: {e}"

    # aiohttp (its HTTP parser is compiled) with a session and connection per client, made before the clock
    # starts: a pure-Python client costs more CPU per request than the server, on the same cores.
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) for _ in range(clients)]
    try:
        yield [functools.partial(call, session) for session in sessions]
    finally:
        for session in sessions:
            await session.close()


@contextlib.asynccontextmanager
async def _grpc_clients(address: str, png: bytes, clients: int) -> AsyncIterator[list[Callable[[], Awaitable]]]:
    """A call each for `clients` clients: a Predict call with a TensorProto of the PNG on the client's own
    channel (and connection)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = BYTES_SIGNATURE
    request.inputs[BYTES_INPUT_NAME].CopyFrom(tf.make_tensor_proto([png]))

    async def call(stub: Any) -> str | None:
        try:
            response = await stub.Predict(request, timeout=30)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}"
        return None if PROBABILITIES in response.outputs else "no probabilities in the answer"

    # Channels to one address share a connection unless each has its own subchannel pool.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(clients)]
    try:
        yield [functools.partial(call, prediction_service_pb2_grpc.PredictionServiceStub(c)) for c in channels]
    finally:
        for channel in channels:
            await channel.close()


async def _client(call: Callable[[], Awaitable], deadline: float, latencies: list, failures: list) -> None:
    """One client: one request at a time until `deadline`."""
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        reason = await call()
        if reason is None:
            latencies.append(time.perf_counter() - start)
        else:
            failures.append(reason)


async def _load(api: str, address: str, png: bytes, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    connect = _rest_clients if api == "REST" else _grpc_clients
    async with connect(address, png, clients) as calls:
        # Connections opened and used once before the clock starts: the figures are for steady state.
        for call in calls:
            await call()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(_client(call, deadline, latencies, failures) for call in calls))
        elapsed = time.perf_counter() - start
    return {
        "api": api,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies) + len(failures),
        "errors": len(failures),
        "first_error": failures[0] if failures else None,
        **latency_summary(latencies, elapsed),
    }


def run_load(api: str, address: str, png: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent request loops of one PNG each to `serving_bytes` for `seconds`: over REST
    (`address` the server's URL) or gRPC (`address` host:port).

    The objects that exist before the load starts (TensorFlow's, in a process that imported it: millions)
    are frozen out of the garbage collector meanwhile: a full collection over them stalls every client for
    a few hundred milliseconds, a pause of the load generator's that would count as the server's latency."""
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(_load(api, address, png, clients, seconds))
    finally:
        gc.unfreeze()


def direct_calls(version_dir: Path, png: bytes, seconds: float) -> dict[str, Any]:
    """The `serving_bytes` signature called in this process, one image per call, for `seconds`."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures[BYTES_SIGNATURE]
    images = tf.constant([png])
    for _ in range(5):  # warm-up: tracing and the first oneDNN kernels
        signature(**{BYTES_INPUT_NAME: images})
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        signature(**{BYTES_INPUT_NAME: images})[PROBABILITIES].numpy()
        latencies.append(time.perf_counter() - t0)
    return {"calls": len(latencies), **latency_summary(latencies, time.perf_counter() - start)}


STAGE_PICTURES = ("photo", "ruled")  # Besides the request's own PNG: the same digit as people photograph it.


def stage_costs(png: bytes, seconds: float = 0.2, repeats: int = 7) -> list[dict[str, Any]]:
    """The preprocessing's cost stage by stage (`mnist_form.STEPS`), in this process, for the request's PNG and
    for its digit photographed (`STAGE_PICTURES`, drawn as `evaluate --person-made` draws them).

    Each stage's function also runs the stages before it: a stage costs its median time (over `repeats`
    timings of about `seconds` each) less the one before (the first, less an empty graph call's). A row per
    picture: its size and each stage's milliseconds."""
    import io

    import tensorflow as tf
    from PIL import Image

    from mnist_tf.data.person_made import render
    from mnist_tf.imaging.decode import pillow_pixels
    from mnist_tf.imaging.mnist_form import stage_functions

    def pixels(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as image:
            return pillow_pixels(image)

    digit = pixels(png)[..., 0] * 255
    pictures = [("the request's PNG", pixels(png))] + [
        (kind, pixels(render(digit.astype(np.uint8), kind, np.random.RandomState(0))[0])) for kind in STAGE_PICTURES
    ]
    empty = tf.function(tf.identity, input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    functions = [("a graph call, empty", empty), *stage_functions()]
    # Each stage's function is traced once, but they share their Python code, which TensorFlow's check for a
    # function traced again and again in a loop counts as one function: its warning would be a false alarm.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        for _, fn in functions:
            fn(tf.zeros([1, 1, 1]))
    finally:
        logger.setLevel(level)
    rows = []
    for picture, array in pictures:
        x = tf.constant(array)
        times: dict[str, list[float]] = {name: [] for name, _ in functions}
        for name, fn in functions:  # warmed up
            for _ in range(3):
                fn(x)
        calls = max(1, int(seconds / max(_seconds(functions[-1][1], x), 1e-6)))
        for _ in range(repeats):  # the stages in turn, so that a drift of the machine's speed reaches all alike
            for name, fn in functions:
                times[name].append(_seconds(fn, x, calls))
        medians = [float(np.median(times[name])) * 1000 for name, _ in functions]
        stages = {name: round(max(0.0, b - a), 3) for (name, _), a, b in zip(functions[1:], medians, medians[1:])}
        rows.append(
            {
                "picture": picture,
                "size": list(array.shape[:2]),
                "whole_ms": round(medians[-1] - medians[0], 3),
                "stages_ms": stages,
            }
        )
    return rows


def _seconds(fn: Callable, x: Any, calls: int = 1) -> float:
    """Seconds per call of `fn(x)` over `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - start) / calls


def _percent(end: float | None, start: float | None, seconds: float) -> float | None:
    """CPU time between two readings as a percentage of one core over `seconds`."""
    return None if end is None or start is None else round(100 * (end - start) / seconds, 1)


def benchmark(
    version_dir: Path,
    png: bytes,
    seconds: float = 20.0,
    levels: Sequence[int] = LEVELS,
    progress: Callable[[str], None] = print,
    server_options: Sequence[str] = (),
) -> dict[str, Any]:
    """Serves `version_dir` in a child process, loads it at each level of clients, then calls it directly."""
    from mnist_tf.benchmark.measurements import StealMeter, busy_seconds
    from mnist_tf.serve.process import ServerProcess

    server = ServerProcess(Path(version_dir).parent, "--poll-seconds", "0", *server_options)
    rows = []
    try:
        for api in APIS:
            address = server.url if api == "REST" else server.grpc_address
            run_load(api, address, png, max(levels), min(3.0, seconds))  # warm-up, not reported
            for clients in levels:
                progress(f"serve: {api}, {clients} concurrent client(s) for {seconds:g} s")
                steal, server_cpu, client_cpu, busy = (
                    StealMeter(),
                    server.cpu_seconds(),
                    time.process_time(),
                    busy_seconds(),
                )
                row = run_load(api, address, png, clients, seconds)
                row["server_cpu_percent"] = _percent(server.cpu_seconds(), server_cpu, row["seconds"])
                row["client_cpu_percent"] = _percent(time.process_time(), client_cpu, row["seconds"])
                # Whatever else ran meanwhile: the figures hold only where this is near 0.
                ours = (
                    _percent(busy_seconds(), busy, row["seconds"]),
                    row["server_cpu_percent"],
                    row["client_cpu_percent"],
                )
                row["other_cpu_percent"] = None if None in ours else round(max(0.0, ours[0] - ours[1] - ours[2]), 1)
                rows.append({**row, "steal_percent": steal.stop()})
        peak = server.peak_rss_mib()
    finally:
        status = server.stop()
    progress(f"serve: the same signature called in-process for {seconds:g} s")
    direct = direct_calls(Path(version_dir), png, seconds)
    progress("serve: the preprocessing's cost stage by stage, in-process")
    return {
        "model": str(version_dir),
        "request": f"one {len(png)}-byte PNG (REST: as b64; gRPC: a TensorProto), signature {BYTES_SIGNATURE}",
        "server_options": list(server_options),
        "rows": rows,
        "server_peak_rss_mib": None if peak is None else round(peak, 1),
        "server_exit_status": status,
        "direct": direct,
        "preprocessing_stages": stage_costs(png, seconds / 100),
    }


def table(result: dict[str, Any]) -> str:
    """The serve part as a Markdown table."""
    lines = [
        f"\nServer: {result['request']}; peak RSS {result['server_peak_rss_mib']} MiB.",
        "\n| API | clients | requests/s | p50 ms | p99 ms | requests | errors | server CPU | client CPU | other CPU | CPU steal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        steal = "n/a" if r.get("steal_percent") is None else f"{r['steal_percent']:.0f}%"
        lines.append(
            f"| {r.get('api', 'REST')} | {r['clients']} | {r['requests_per_second']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['requests']:,} | {r['errors']} | {_cpu(r.get('server_cpu_percent'))} | "
            f"{_cpu(r.get('client_cpu_percent'))} | {_cpu(r.get('other_cpu_percent'))} | {steal} |"
        )
    d = result["direct"]
    lines.append(
        f"| in-process | no server | {d['requests_per_second']:,.0f} | {d['p50_ms']} | {d['p99_ms']} | {d['calls']:,} "
        "| | | | | |"
    )
    stages = result.get("preprocessing_stages")
    if stages:
        lines += [
            "\nThe preprocessing stage by stage, in-process, ms (each stage's time less the stages before it):",
            "\n| stage | " + " | ".join(f"{r['picture']} ({r['size'][1]}x{r['size'][0]})" for r in stages) + " |",
            "| --- |" + " ---: |" * len(stages),
        ]
        for name in stages[0]["stages_ms"]:
            lines.append(f"| {name} | " + " | ".join(f"{r['stages_ms'][name]:.2f}" for r in stages) + " |")
        lines.append("| the whole preprocessing | " + " | ".join(f"{r['whole_ms']:.2f}" for r in stages) + " |")
    return "\n".join(lines)


def _cpu(percent: float | None) -> str:
    return "n/a" if percent is None else f"{percent:.0f}%"
