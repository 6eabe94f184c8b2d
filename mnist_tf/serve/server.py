"""Runs the app on uvicorn and the gRPC services beside it: a one-line access log, clean shutdown on Ctrl-C and SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnist_tf.core.errors import UserError
from mnist_tf.serve.limits import Limits
from mnist_tf.serve.model_config import ModelSource


def is_loopback(host: str) -> bool:
    """Whether `host` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessLog:
    """ASGI middleware: one line per request on stderr, after the response is sent.

    client "METHOD path HTTP/version" status bytes milliseconds
    """

    def __init__(self, app: Any, stream: Any = None):
        self.app = app
        self.stream = stream or sys.stderr

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        sent = {"status": 500, "bytes": 0}

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = scope.get("client") or ("-", 0)
            self.stream.write(
                f'{client[0]} "{scope["method"]} {scope["path"]} HTTP/{scope["http_version"]}" '
                f"{sent['status']} {sent['bytes']} {(time.perf_counter() - start) * 1000:.1f}ms\n"
            )
            self.stream.flush()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or UserError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a response written in two parts (head, then body)
    # waits for the client's delayed ACK, 40 ms on Linux, on every request of a kept-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): pass another --port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# How long in-flight requests may take to finish once the server is told to stop.
GRACE_SECONDS = 30


class _Stopped(Exception):
    """SIGTERM, after uvicorn's graceful shutdown."""


def _stop(*_: Any) -> None:
    raise _Stopped


def serve(
    models: Sequence[ModelSource],
    host: str = "127.0.0.1",
    port: int = 8501,
    limits: Limits | None = None,
    poll_seconds: float = 1.0,
    threads: int = 2,
    max_batch: int = 32,
    ready: Callable[[str, str | None, dict[str, list[int]]], None] = lambda url, grpc_address, served: None,
    grpc_port: int | None = 8500,
    config_file: Path | None = None,
    config_poll_seconds: float = 0.0,
) -> None:
    """Serves `models` (`model_config.single_model(base)` or `read_model_config(file)`) until Ctrl-C or
    SIGTERM: REST on `port`, gRPC on `grpc_port` (None: no gRPC), one process, one model holder.
    `config_file`, the file `models` came from, is read again every `config_poll_seconds` (0: never).

    `ready(url, grpc_address, served)` is called once the models are loaded and both servers listen;
    `served` holds each model's versions. In-flight requests on either finish before it returns (up to 30 s).
    """
    import uvicorn

    from mnist_tf.serve.app import create_app
    from mnist_tf.serve.holder import ModelHolder

    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    limits = limits or Limits()
    holder = ModelHolder(models, poll_seconds, threads, max_batch, config_file, config_poll_seconds)
    holder.start()
    sock = listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        AccessLog(create_app(holder, limits)),
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=GRACE_SECONDS,
        lifespan="off",
    )

    class Servers(uvicorn.Server):
        """uvicorn, with the gRPC server started and stopped on its event loop beside it."""

        grpc: Any = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            grpc_address = None
            if grpc_port is not None:
                from mnist_tf.serve.grpc_api import start_grpc

                self.grpc, bound = await start_grpc(holder, limits, host, grpc_port)
                grpc_address = f"{shown}:{bound}"
            await super().startup(sockets)
            ready(f"http://{shown}:{sock.getsockname()[1]}", grpc_address, holder.served())

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            stopping = [super().shutdown(sockets)]
            if self.grpc is not None:  # refuses new calls at once, lets those in flight finish
                stopping.append(self.grpc.stop(GRACE_SECONDS))
            await asyncio.gather(*stopping)

    # uvicorn finishes the requests in flight on Ctrl-C or SIGTERM, then raises the signal again: return then.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        Servers(config).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        holder.stop()
        sock.close()
