"""Adaptive batching: concurrent requests for one version share one call of its model process.

A model process answers one call at a time, and a call's cost is mostly fixed (a forest costs
about as much for one row as for fifty), so under concurrency throughput comes from putting
many requests into one call, as MLServer's adaptive batching does. Requests queue while a call
runs; the next call takes every queued request, up to MAX_BATCH_SIZE rows, and waits at most
MAX_BATCH_DELAY_MS for more when there is room (0, the default, adds no wait: batches then form
only from requests that arrived during the previous call). Each caller gets exactly its own
rows back. A batch the model refuses (one bad row) is predicted again request by request, so
only the request with the bad row fails. A batcher belongs to one LoadedModel, so a batch
never mixes versions across a hot swap. A batch computes probabilities when one of its requests
asks for them; the others get none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model_server.request_rows import Rows


class Outputs(Protocol):
    predictions: list[Any]
    probabilities: list[list[float]] | None


@dataclass
class _Pending:
    rows: Rows
    probabilities: bool
    future: asyncio.Future[Any]


class Batcher:
    """Queues predictions for one model and runs them in batches on one thread of its own."""

    def __init__(
        self,
        call: Callable[[Rows, bool], Outputs],
        split: Callable[[Outputs, int, int, bool], Any],
        *,
        max_rows: int,
        max_delay_seconds: float,
        name: str,
    ) -> None:
        self._call = call
        self._split = split
        self._max_rows = max_rows
        self._max_delay = max_delay_seconds
        # One thread: the model process answers one call at a time anyway, and a process this
        # thread (re)starts lives as long as the thread (bubblewrap's --die-with-parent).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    async def predict(self, rows: Rows, probabilities: bool = True) -> Any:
        """This request's share of a batched call (raises what the call raised for it)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(self._queue), name="batcher")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(rows, probabilities, future))
        return await future

    def close(self) -> None:
        """Stop taking work (blocking: waits for the call in progress)."""
        if self._task is not None and not self._task.get_loop().is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._task.get_loop().call_soon_threadsafe(self._task.cancel)
        self._thread.shutdown(wait=True)

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            size = len(batch[0].rows)
            deadline = loop.time() + self._max_delay
            while size < self._max_rows:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if size + len(item.rows) > self._max_rows:
                    queue.put_nowait(item)  # a big request goes first in the next batch
                    # (it waits behind requests queued after it only until this call ends)
                    break
                batch.append(item)
                size += len(item.rows)
            await self._serve(loop, batch)

    async def _serve(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        rows = _joined([item.rows for item in live])
        wanted = any(item.probabilities for item in live)
        try:
            outputs = await loop.run_in_executor(self._thread, self._call, rows, wanted)
        except ValueError as exc:
            if len(live) == 1:
                _fail(live[0], exc)
                return
            for item in live:  # find the request the model refused; the others still answer
                await self._serve(loop, [item])
            return
        except Exception as exc:
            for item in live:
                _fail(item, exc)
            return
        start = 0
        for item in live:
            if not item.future.done():
                item.future.set_result(
                    self._split(outputs, start, start + len(item.rows), item.probabilities)
                )
            start += len(item.rows)


def _joined(parts: list[Rows]) -> Rows:
    """The rows of several requests as one: one matrix when each is a matrix of one width."""
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, np.ndarray) for p in parts) and len({p.shape[1:] for p in parts}) == 1:
        return np.concatenate(parts)
    return [row for part in parts for row in _listed(part)]


def _listed(rows: Rows) -> list[list[Any]]:
    return rows.tolist() if isinstance(rows, np.ndarray) else rows


def _fail(item: _Pending, exc: BaseException) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        item.future.set_exception(exc)
