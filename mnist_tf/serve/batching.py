"""Micro-batching: requests that arrive while the model is busy run together, as one batch.

Like TF Serving's `--enable_batching`, but with no timeout to wait for a batch
to fill: a request that finds a free model thread runs at once, so a lone
client sees no added latency; under load, the requests that queued while both
threads were busy run as one call, which costs far less CPU per image than a
call each (one image per call spends most of its time on per-call overhead).
A call takes at most an even share among the threads of
what is queued and running, so the threads' calls stay about the same size and
no request waits behind a call much longer than the others. Requests are merged only
with others for the same version and signature whose inputs have the same dtypes
and per-instance shapes. A batch that fails runs
again request by request, so one bad image fails only its own request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

Tensors = dict[str, np.ndarray]


def _key(servable: Any, signature: str, tensors: Tensors) -> tuple:
    return (id(servable), signature, tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in tensors.items())))


def _size(tensors: Tensors) -> int:
    return max((a.shape[0] for a in tensors.values() if a.ndim), default=1)


def run_batch(servable: Any, signature: str, requests: Sequence[Tensors]) -> list[Any]:
    """Each request's outputs (or the exception it raised), from one call where that works."""
    if len(requests) > 1:
        sizes = [_size(t) for t in requests]
        merged = {name: np.concatenate([t[name] for t in requests]) for name in requests[0]}
        try:
            outputs = servable.run(signature, merged)
        except Exception:  # noqa: BLE001  (one bad request fails the call: find which, below)
            outputs = None
        if outputs is not None and all(v.ndim and v.shape[0] == sum(sizes) for v in outputs.values()):
            bounds = np.cumsum(sizes)[:-1]
            parts = {name: np.split(value, bounds) for name, value in outputs.items()}
            return [{name: parts[name][i] for name in outputs} for i in range(len(requests))]
    results = []
    for tensors in requests:
        try:
            results.append(servable.run(signature, tensors))
        except Exception as e:  # noqa: BLE001  (handed to that request's caller)
            results.append(e)
    return results


class Batcher:
    """Runs signature calls on `workers` threads of `pool`, merging what queues meanwhile (up to `max_batch`).

    `metrics` (a `metrics.Metrics`), when given, sees the queue's depth and each model call.
    """

    def __init__(self, pool: Executor, workers: int, max_batch: int, metrics: Any = None):
        self.pool = pool
        self.workers = workers
        self.free = workers
        self.max_batch = max_batch
        self.running = 0  # instances in the model calls under way
        self.metrics = metrics
        self.queue: deque = deque()  # (key, servable, signature, tensors, future)

    async def run(self, servable: Any, signature: str, tensors: Tensors) -> Tensors:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((_key(servable, signature, tensors), servable, signature, tensors, future))
        self._dispatch()
        return await future

    def _share(self) -> int:
        """The most instances one call takes: an even share among the workers of all that is queued or running.

        A thread that comes free with the whole queue would leave the other thread's next call small and its own
        large, and the requests in the large one would wait longest, every time: the tail latency."""
        outstanding = self.running + sum(_size(item[3]) for item in self.queue)
        return max(1, min(self.max_batch, -(-outstanding // self.workers)))

    def _take(self) -> tuple[list, int]:
        """The first queued request and those after it that can join its batch, and their instances."""
        limit = self._share()
        first = self.queue.popleft()
        batch, size, kept = [first], _size(first[3]), deque()
        while self.queue:
            item = self.queue.popleft()
            if item[0] == first[0] and size + _size(item[3]) <= limit:
                batch.append(item)
                size += _size(item[3])
            else:
                kept.append(item)
        self.queue = kept
        return batch, size

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self.free and self.queue:
            batch, size = self._take()
            self.free -= 1
            self.running += size
            _, servable, signature, _, _ = batch[0]
            start = time.perf_counter()
            done = loop.run_in_executor(self.pool, run_batch, servable, signature, [item[3] for item in batch])
            done.add_done_callback(lambda f, batch=batch, size=size, start=start: self._finish(f, batch, size, start))
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self.queue))

    def _finish(self, done: asyncio.Future, batch: list, size: int, start: float) -> None:
        self.free += 1
        self.running -= size
        if self.metrics is not None:
            names = [item[1].name for item in batch]
            self.metrics.model_call(names, size, time.perf_counter() - start)
        results = done.result() if done.exception() is None else [done.exception()] * len(batch)
        for item, result in zip(batch, results):
            if item[4].done():  # The client went away.
                continue
            if isinstance(result, BaseException):
                item[4].set_exception(result)
            else:
                item[4].set_result(result)
        self._dispatch()
