"""The `serve` benchmark part: `mnist-tf serve` under bounded load on loopback.

An async HTTP client keeps N requests in flight (N = 1, 8, 32 clients) for a
fixed time, each a single-image `b64` PNG request to the `serving_bytes`
signature, as the page and `predict --server` send. It reports requests/s,
p50/p99 latency, failed requests (an HTTP error, a timeout or a wrong answer),
the server's peak resident memory, and the same signature called in-process
with no HTTP for comparison. Client and server share the machine's cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
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


async def _client(session: Any, url: str, body: bytes, deadline: float, latencies: list, failures: list) -> None:
    """One client: one request at a time on its own connection until `deadline`."""
    import aiohttp

    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=_HEADERS) as response:
                text = await response.read()
            ok = response.status == 200 and "predictions" in json.loads(text)
            reason = None if ok else f"HTTP {response.status}: {text[:200]!r}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            reason = f"{type(e).__name__}: {e}"
        if reason is None:
            latencies.append(time.perf_counter() - start)
        else:
            failures.append(reason)


async def _load(url: str, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    failures: list[str] = []
    # aiohttp (its HTTP parser is compiled) with a session and connection per client, made before the clock
    # starts: a pure-Python client costs more CPU per request than the server, on the same cores.
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) for _ in range(clients)]
    try:
        # Connections opened and used once before the clock starts: the figures are for steady state.
        for session in sessions:
            async with session.post(url, data=body, headers=_HEADERS) as response:
                await response.read()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(_client(s, url, body, deadline, latencies, failures) for s in sessions))
        elapsed = time.perf_counter() - start
    finally:
        for session in sessions:
            await session.close()
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies) + len(failures),
        "errors": len(failures),
        "first_error": failures[0] if failures else None,
        **latency_summary(latencies, elapsed),
    }


def run_load(url: str, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent request loops against `url` for `seconds`."""
    return asyncio.run(_load(url, body, clients, seconds))


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

    body = json.dumps(request_body(png)).encode()
    server = ServerProcess(Path(version_dir).parent, "--poll-seconds", "0", *server_options)
    rows = []
    try:
        url = f"{server.url}/v1/models/{MODEL_NAME}:predict"
        run_load(url, body, max(levels), min(3.0, seconds))  # warm-up, not reported
        for clients in levels:
            progress(f"serve: {clients} concurrent client(s) for {seconds:g} s")
            steal, server_cpu, client_cpu, busy = (
                StealMeter(),
                server.cpu_seconds(),
                time.process_time(),
                busy_seconds(),
            )
            row = run_load(url, body, clients, seconds)
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
    return {
        "model": str(version_dir),
        "request": f"one {len(png)}-byte PNG as b64, signature {BYTES_SIGNATURE}",
        "server_options": list(server_options),
        "rows": rows,
        "server_peak_rss_mib": None if peak is None else round(peak, 1),
        "server_exit_status": status,
        "direct": direct_calls(Path(version_dir), png, seconds),
    }


def table(result: dict[str, Any]) -> str:
    """The serve part as a Markdown table."""
    lines = [
        f"\nServer: {result['request']}; peak RSS {result['server_peak_rss_mib']} MiB.",
        "\n| clients | requests/s | p50 ms | p99 ms | requests | errors | server CPU | client CPU | other CPU | CPU steal |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        steal = "n/a" if r.get("steal_percent") is None else f"{r['steal_percent']:.0f}%"
        lines.append(
            f"| {r['clients']} | {r['requests_per_second']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['requests']:,} | {r['errors']} | {_cpu(r.get('server_cpu_percent'))} | "
            f"{_cpu(r.get('client_cpu_percent'))} | {_cpu(r.get('other_cpu_percent'))} | {steal} |"
        )
    d = result["direct"]
    lines.append(
        f"| in-process, no HTTP | {d['requests_per_second']:,.0f} | {d['p50_ms']} | {d['p99_ms']} | {d['calls']:,} | | | | | |"
    )
    return "\n".join(lines)


def _cpu(percent: float | None) -> str:
    return "n/a" if percent is None else f"{percent:.0f}%"
