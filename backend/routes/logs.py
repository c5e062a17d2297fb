"""Pipeline logs: live over a WebSocket, stored over REST (JSON pages, or the whole log as text).

`WS /ws/pipelines/{id}/logs?after=SEQ` sends JSON text messages. A message is one event object,
or a JSON array of events when several were ready at once (history replay, bursts of output);
the events, in seq order, are:
- a log event `{seq, ts, pipeline_id, phase, cell, stream, text}` (history first, then live),
  `stream` being stdout, stderr, system or error;
- the final event, `stream: "status"` with `status` (success | failed | cancelled), after which
  the server closes with 1000;
- a keep-alive `{stream: "ping", ts, pipeline_id}` (no seq) after WS_PING_INTERVAL_SECONDS of
  silence, so that proxies keep idle connections open and clients can tell a stalled stream.
Close codes: 4401 missing or wrong read token (API_READ_TOKEN or API_TOKEN, when API_READ_TOKEN is
set: browsers offer the subprotocols ["bearer", <token>] and get "bearer" back; other clients
send `Authorization: Bearer <token>`; `?token=<token>` is the last resort and is redacted from
the access log); 4404 unknown pipeline; 1013 the live stream (Redis) is unavailable, retry later.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from backend.api_params import RowId
from backend.auth import accept_reader, require_read_token
from backend.dependencies import FanoutDep, SettingsDep
from backend.log_fanout import LogFanout, LogStreamUnavailable
from backend.log_history import MAX_READ, MAX_SEQ, LogHistory
from backend.log_text import text_lines
from backend.log_viewer import LogViewer, is_finished
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["logs"])

CLOSE_NOT_FOUND = 4404
CLOSE_TRY_AGAIN_LATER = 1013


def _history(fanout: LogFanout, settings: Settings) -> LogHistory:
    return LogHistory(fanout.client, settings.database_url)


@router.websocket("/ws/pipelines/{pipeline_id}/logs")
async def pipeline_log_socket(
    websocket: WebSocket,
    pipeline_id: RowId,
    fanout: FanoutDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
) -> None:
    """History then live tail of a pipeline's log; closes once the pipeline has finished."""
    history = _history(fanout, settings)
    if not await accept_reader(websocket):
        return
    status = await history.pipeline_status(pipeline_id)
    if status is None:
        await websocket.close(CLOSE_NOT_FOUND, f"pipeline {pipeline_id} not found")
        return
    viewer = LogViewer(
        websocket,
        history,
        pipeline_id,
        after=after,
        status=status,
        ping_interval=settings.ws_ping_interval_seconds,
    )
    streaming = asyncio.create_task(_stream(viewer, fanout, pipeline_id))
    disconnected = asyncio.create_task(_client_gone(websocket))
    try:
        await asyncio.wait({streaming, disconnected}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (streaming, disconnected):
            task.cancel()
        await asyncio.gather(streaming, disconnected, return_exceptions=True)
    if streaming.cancelled():
        return  # the client left first
    error = streaming.exception()
    if isinstance(error, WebSocketDisconnect | OSError):
        return  # the client left while we were sending
    if isinstance(error, LogStreamUnavailable):
        await websocket.close(CLOSE_TRY_AGAIN_LATER, str(error))
    elif error is not None:
        logger.error("log stream of pipeline %s failed", pipeline_id, exc_info=error)
        await websocket.close(1011, "internal error")
    else:
        await websocket.close(1000)


async def _stream(viewer: LogViewer, fanout: LogFanout, pipeline_id: int) -> None:
    try:
        async with fanout.subscribe(pipeline_id) as live:
            await viewer.follow(live)
    except LogStreamUnavailable:
        # Without Redis a finished pipeline is still whole in the DB archive.
        if not is_finished(viewer.status):
            raise
        await viewer.finish_from_storage()


async def _client_gone(websocket: WebSocket) -> None:
    """Return when the client disconnects (viewers send nothing else worth reading)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@router.get("/pipelines/{pipeline_id}/logs", dependencies=[Depends(require_read_token)])
async def pipeline_log(
    pipeline_id: RowId,
    fanout: FanoutDep,
    settings: SettingsDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Return lines with a seq above this one.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_READ)] = MAX_READ,
) -> Response:
    """Stored lines of a pipeline's log: Redis while recent, the DB archive once Redis lost them.

    `next_after` is the seq to pass as `after` for the next page; `finished` tells whether more
    lines can still come.
    """
    history = _history(fanout, settings)
    status = await history.pipeline_status(pipeline_id)
    if status is None:
        raise HTTPException(404, f"pipeline {pipeline_id} not found")
    entries = await history.read(pipeline_id, after, limit, status=status)
    next_after = entries[-1].seq if entries else after
    # The events are already JSON: splice them in rather than parse and re-encode each one.
    body = (
        f'{{"pipeline_id":{pipeline_id},"status":{json.dumps(status)},'
        f'"finished":{"true" if is_finished(status) else "false"},'
        f'"next_after":{next_after},"lines":[{",".join(entry.raw for entry in entries)}]}}'
    )
    return Response(body, media_type="application/json")


@router.get(
    "/pipelines/{pipeline_id}/logs.txt",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "the whole stored log"}},
    dependencies=[Depends(require_read_token)],
)
async def pipeline_log_text(
    pipeline_id: RowId, fanout: FanoutDep, settings: SettingsDep
) -> StreamingResponse:
    """The whole stored log as plain text (backend/log_text.py), as a file to save: what the
    pipeline page's "Download" gives."""
    history = _history(fanout, settings)
    status = await history.pipeline_status(pipeline_id)
    if status is None:
        raise HTTPException(404, f"pipeline {pipeline_id} not found")

    async def pages() -> AsyncIterator[str]:
        after = 0
        while entries := await history.read(pipeline_id, after, MAX_READ, status=status):
            yield "".join(text_lines(entry.raw for entry in entries))
            after = entries[-1].seq

    return StreamingResponse(
        pages(),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="pipeline-{pipeline_id}.log"'},
    )
