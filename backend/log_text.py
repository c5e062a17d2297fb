"""A pipeline's stored log as plain text, for the "Download" button and for `curl > file`.

One line per line of output, each prefixed with when, which phase, which cell (numbered from 1,
as every message of the platform numbers cells) and which stream, so the file reads on its own
and `grep`s well. A chunk of cell output holding several lines (a printed table) gives each of
its lines the same prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any


def _prefix(event: dict[str, Any]) -> str:
    ts = event.get("ts")
    when = (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        if isinstance(ts, int | float)
        else "-"
    )
    phase = event.get("phase") or "pipeline"
    cell = event.get("cell")
    where = f"cell {cell + 1}" if isinstance(cell, int) else "-"
    return f"{when} {phase:<11} {where:<8} {event.get('stream') or 'system':<6} "


def text_lines(raw_events: Iterable[str]) -> Iterator[str]:
    """The text lines (newline-terminated) of stored events given as their JSON."""
    for raw in raw_events:
        event = json.loads(raw)
        prefix = _prefix(event)
        for line in str(event.get("text", "")).removesuffix("\n").split("\n"):
            yield f"{prefix}{line}\n"
