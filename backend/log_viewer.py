"""Drives one WebSocket viewer of a pipeline's log: history, then live tail, then the outcome.

The viewer is registered with the fan-out *before* the history is read, and every event is sent
only if its seq is above the last one sent: a line published while the history is being read
arrives twice (in the list and live) and is sent once; a gap in the live seqs (lines dropped by
a slow viewer or a Redis reconnect) is filled from the history before going on.

Events that are ready together (a history page, a burst of output, a backlog built up while
the process was busy with other viewers) go out as one JSON array per WebSocket message: the
per-message cost, not the bytes, is what limits how many viewers one process can feed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from typing import Final

from starlette.websockets import WebSocket

from backend.log_fanout import LiveItem, LogSubscription, Resync
from backend.log_history import LogEntry, LogHistory
from mlops_core.log_events import FINISHED_STREAM, HEARTBEAT_STREAM
from mlops_core.states import PipelineStatus

# How long a pipeline the DB calls finished may still deliver its own final event (the worker
# may update the row just before publishing it) before the viewer is closed with the DB's status.
FINISH_GRACE_SECONDS: Final = 2.0
# Upper bound of one batched message, well under common client limits (websockets: 1 MiB).
MAX_MESSAGE_BYTES: Final = 256 * 1024


def is_finished(status: str | None) -> bool:
    return status is not None and PipelineStatus(status).finished


class LogViewer:
    """Sends one pipeline's events, each exactly once and in seq order, to one WebSocket."""

    def __init__(
        self,
        websocket: WebSocket,
        history: LogHistory,
        pipeline_id: int,
        *,
        after: int,
        status: str,
        ping_interval: float,
    ) -> None:
        self._ws = websocket
        self._history = history
        self._pipeline_id = pipeline_id
        self._ping_interval = ping_interval
        self.last_seq = after
        self.status = status
        self.done = False

    async def follow(self, live: LogSubscription) -> None:
        """History, then live events until the final one (or the DB says it is over)."""
        await self.catch_up()
        loop = asyncio.get_running_loop()
        finish_at = loop.time() + FINISH_GRACE_SECONDS if is_finished(self.status) else None
        while not self.done:
            wait = self._ping_interval if finish_at is None else max(0.0, finish_at - loop.time())
            item = await live.next(wait)
            if item is not None:
                await self._deliver([item, *live.ready()])
                continue
            if finish_at is not None:
                await self.finish_from_storage()
                return
            await self._send_heartbeat()
            self.status = await self._history.pipeline_status(self._pipeline_id) or self.status
            if is_finished(self.status):
                finish_at = loop.time() + FINISH_GRACE_SECONDS

    async def finish_from_storage(self) -> None:
        """Send what storage still has, then a final event with the DB's status if none came."""
        await self.catch_up()
        if not self.done:
            final = {
                "seq": self.last_seq + 1,
                "ts": time.time(),
                "pipeline_id": self._pipeline_id,
                "phase": None,
                "cell": None,
                "stream": FINISHED_STREAM,
                "text": f"pipeline {self.status}",
                "status": self.status,
            }
            await self._ws.send_text(json.dumps(final, separators=(",", ":")))
            self.done = True

    async def catch_up(self) -> None:
        """Send every stored event after the last one sent."""
        while not self.done:
            entries = await self._history.read(self._pipeline_id, self.last_seq, status=self.status)
            fresh = list(_until_final(entry for entry in entries if entry.seq > self.last_seq))
            if not fresh:
                return
            await self._send(fresh)

    async def _deliver(self, items: Sequence[LiveItem]) -> None:
        """Send live items in one go, first filling any gap before them from the history."""
        batch: list[LogEntry] = []
        for item in items:
            head = batch[-1].seq if batch else self.last_seq
            if isinstance(item, Resync) or item.seq > head + 1:
                await self._send(batch)
                batch = []
                await self.catch_up()
                head = self.last_seq
            if self.done:
                return
            if isinstance(item, LogEntry) and item.seq > head:
                batch.append(item)
                if item.final:
                    break
        await self._send(batch)

    async def _send(self, entries: Sequence[LogEntry]) -> None:
        for chunk in _chunks(entries):
            text = chunk[0].raw if len(chunk) == 1 else f"[{','.join(e.raw for e in chunk)}]"
            await self._ws.send_text(text)
            self.last_seq = chunk[-1].seq
        if entries and entries[-1].final:
            self.done = True
            self.status = entries[-1].status or self.status

    async def _send_heartbeat(self) -> None:
        beat = {"stream": HEARTBEAT_STREAM, "ts": time.time(), "pipeline_id": self._pipeline_id}
        await self._ws.send_text(json.dumps(beat, separators=(",", ":")))


def _until_final(entries: Iterator[LogEntry]) -> Iterator[LogEntry]:
    """Entries up to and including the final event (nothing after it is ever sent)."""
    for entry in entries:
        yield entry
        if entry.final:
            return


def _chunks(entries: Sequence[LogEntry]) -> Iterator[Sequence[LogEntry]]:
    start, size = 0, 0
    for i, entry in enumerate(entries):
        if i > start and size + len(entry.raw) > MAX_MESSAGE_BYTES:
            yield entries[start:i]
            start, size = i, 0
        size += len(entry.raw) + 1
    if start < len(entries):
        yield entries[start:]
