"""Prints a pipeline's log: live over the backend's WebSocket, or stored over REST.

Following survives a dropped connection (a backend restart, a proxy timeout, Redis failing
over): it reconnects with `?after=<last seq printed>`, so no line is printed twice or skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Final, TextIO
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from mlops_cli.api_client import (
    HOW_TO_AUTHENTICATE,
    HOW_TO_REACH,
    ApiClient,
    ApiError,
    NotFound,
)
from mlops_core.access_tokens import CLOSE_UNAUTHORIZED

CLOSE_NOT_FOUND: Final = 4404
# How long to keep reconnecting, counted from the last message received.
RECONNECT_WINDOW_SECONDS: Final = 60.0


class StreamLost(RuntimeError):
    """The backend could not be reached for longer than the reconnect window."""


Event = dict[str, Any]
Printer = Callable[[Event], None]


def make_printer(out: TextIO, *, as_json: bool) -> Printer:
    """Print events as JSON lines (`--json`) or as a human-readable log."""

    def print_event(event: Event) -> None:
        if as_json:
            out.write(json.dumps(event) + "\n")
        else:
            out.write(render(event) + "\n")
        out.flush()

    return print_event


def render(event: Event) -> str:
    """Cell output as the notebook printed it; platform lines tagged with their phase."""
    text = str(event.get("text", "")).removesuffix("\n")
    stream = event.get("stream")
    if stream in {"stdout", "stderr"}:
        return text
    tag = f"[{event.get('phase') or 'mlops'}]"
    if stream == "error":
        return f"{tag} ERROR {text}"
    return f"{tag} {text}"


def events_of(message: str | bytes) -> list[Event]:
    """The events of one message: the server sends an object, or an array when batching."""
    body = json.loads(message)
    return body if isinstance(body, list) else [body]


def websocket_url(api_url: str, pipeline_id: int, after: int) -> str:
    """ws(s)://host/ws/pipelines/{id}/logs?after=N for an http(s) API URL."""
    parts = urlsplit(api_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/ws/pipelines/{pipeline_id}/logs"
    return urlunsplit((scheme, parts.netloc, path, f"after={after}", ""))


def follow(
    api_url: str, pipeline_id: int, print_event: Printer, *, token: str | None = None
) -> str:
    """Print the log live until the pipeline ends; return its final status.

    Raises NotFound for an unknown pipeline, ApiError when the token is missing or refused, and
    StreamLost when the backend stays unreachable. The token goes in the Authorization header,
    which non-browser clients can send on a WebSocket (so it never appears in a URL).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    last_seq = 0
    last_contact = time.monotonic()
    delay = 0.2
    while True:
        try:
            with connect(
                websocket_url(api_url, pipeline_id, last_seq), additional_headers=headers
            ) as ws:
                for message in ws:
                    last_contact = time.monotonic()
                    delay = 0.2
                    for event in events_of(message):
                        if event.get("stream") == "ping" or event.get("seq", 0) <= last_seq:
                            continue
                        last_seq = int(event["seq"])
                        print_event(event)
                        if event.get("stream") == "status":
                            return str(event["status"])
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_NOT_FOUND:
                raise NotFound(exc.rcvd.reason or f"pipeline {pipeline_id} not found") from exc
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_UNAUTHORIZED:
                # Retrying cannot help: the same token would be refused again.
                raise ApiError(
                    f"the log stream of pipeline {pipeline_id} was refused: "
                    f"{exc.rcvd.reason} ({HOW_TO_AUTHENTICATE})"
                ) from exc
        except InvalidStatus as exc:
            if exc.response.status_code == 404:
                raise NotFound(f"no log endpoint at {api_url}") from exc
        except (OSError, InvalidHandshake, TimeoutError):
            pass
        # Closed without the final event (backend restarting, Redis down): resume after a pause.
        if time.monotonic() - last_contact > RECONNECT_WINDOW_SECONDS:
            raise StreamLost(
                f"lost the log stream of pipeline {pipeline_id} at {api_url} for "
                f"{RECONNECT_WINDOW_SECONDS:g} s: {HOW_TO_REACH}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def print_stored(client: ApiClient, pipeline_id: int, print_event: Printer) -> str:
    """Print every stored line (paging through REST); return the pipeline's status."""
    after = 0
    while True:
        page = client.get_json(
            f"/pipelines/{pipeline_id}/logs", params={"after": after, "limit": 1000}
        )
        for event in page["lines"]:
            print_event(event)
        if not page["lines"]:
            return str(page["status"])
        after = int(page["next_after"])
