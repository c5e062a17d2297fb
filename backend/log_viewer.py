"""Drives one WebSocket viewer of a pipeline's log: history, then live tail, then the outcome.

The viewer is registered with the fan-out *before* the history is read, and every event is sent
only if its seq is above the last one sent: a line published while the history is being read
arrives twice (in the list and live) and is sent once; a gap in the live seqs (lines dropped by
a slow viewer or a Redis reconnect) is filled from the history before going on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Final

from starlette.websockets import WebSocket

from backend.log_fanout import LogSubscription, Resync
from backend.log_history import LogEntry, LogHistory
from mlops_core.log_events import FINISHED_STREAM, HEARTBEAT_STREAM
from mlops_core.states import PipelineStatus

# How long a pipeline the DB calls finished may still deliver its own final event (the worker
# may update the row just before publishing it) before the viewer is closed with the DB's status.
FINISH_GRACE_SECONDS: Final = 2.0


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
            if item is None:
                if finish_at is not None:
                    await self.finish_from_storage()
                    return
                await self._send_heartbeat()
                self.status = await self._history.pipeline_status(self._pipeline_id) or self.status
                if is_finished(self.status):
                    finish_at = loop.time() + FINISH_GRACE_SECONDS
                continue
            if isinstance(item, Resync) or item.seq > self.last_seq + 1:
                await self.catch_up()
            if isinstance(item, LogEntry) and item.seq > self.last_seq:
                await self._send(item)

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
            if not entries:
                return
            for entry in entries:
                if entry.seq > self.last_seq:
                    await self._send(entry)
                if self.done:
                    return

    async def _send(self, entry: LogEntry) -> None:
        await self._ws.send_text(entry.raw)
        self.last_seq = entry.seq
        if entry.final:
            self.done = True
            self.status = entry.status or self.status

    async def _send_heartbeat(self) -> None:
        beat = {"stream": HEARTBEAT_STREAM, "ts": time.time(), "pipeline_id": self._pipeline_id}
        await self._ws.send_text(json.dumps(beat, separators=(",", ":")))
