"""Cron schedules of notebooks: which expressions are accepted, and when a slot fires.

Pure functions of the expression and an injected "now" (UTC), so the rules are tested without
waiting for a clock; backend/schedule_runner.py applies them to the database on the backend's
periodic loop.

A notebook's `schedule_next_at` is the next slot to fire. Once "now" reaches it, the notebook
fires once for the latest slot that has passed, however many passed while no backend ran (a
backend down for a night runs a nightly schedule once when it comes back, not once per missed
slot), and the next slot to fire becomes the first one after "now".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from croniter import CroniterBadDateError, croniter

MAX_SCHEDULE_LENGTH: Final = 100
# Slots counted when saying how many were missed; past this the count says "at least".
MAX_COUNTED_MISSES: Final = 1000
HOW: Final = (
    "5 fields (minute hour day-of-month month day-of-week, UTC), e.g. '0 3 * * *' for 03:00 "
    "every day, or @hourly, @daily, @weekly, @monthly"
)
_ALIASES: Final = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"})


def validate_schedule(value: str) -> str:
    """A cron expression with 5 fields (or an @alias) that fires at some time; else ValueError."""
    text = " ".join(value.split())
    if not text:
        raise ValueError(f"schedule must not be empty (null: no schedule); give {HOW}")
    if len(text) > MAX_SCHEDULE_LENGTH:
        raise ValueError(f"schedule must be at most {MAX_SCHEDULE_LENGTH} characters")
    alias = text.startswith("@")
    if (alias and text.lower() not in _ALIASES) or (not alias and len(text.split()) != 5):
        raise ValueError(f"schedule {text!r} is not a cron expression: give {HOW}")
    if not croniter.is_valid(text):
        raise ValueError(f"schedule {text!r} is not a valid cron expression: give {HOW}")
    try:
        next_slot(text, datetime.now(UTC))
    except CroniterBadDateError:
        raise ValueError(f"schedule {text!r} never fires (no such date)") from None
    return text


def next_slot(schedule: str, after: datetime) -> datetime:
    """The first slot strictly after `after` (UTC)."""
    return _utc(croniter(schedule, _utc(after)).get_next(datetime))


def latest_slot(schedule: str, now: datetime) -> datetime:
    """The latest slot at or before `now` (UTC)."""
    start = _utc(now).replace(microsecond=0) + timedelta(seconds=1)
    return _utc(croniter(schedule, start).get_prev(datetime))


@dataclass(frozen=True)
class Firing:
    """What a pass does for one notebook: fire `slot` (None: nothing is due) and wait for
    `next_at`; `missed` earlier slots passed unfired (no backend ran then)."""

    slot: datetime | None
    next_at: datetime
    missed: int = 0


def plan(schedule: str, next_at: datetime | None, now: datetime) -> Firing:
    """What is due at `now` for a notebook whose next slot to fire is `next_at`.

    `next_at` None (a schedule just set, or set by a migration): nothing fires, the next slot
    after `now` is the first to.
    """
    now = _utc(now)
    if next_at is None:
        return Firing(None, next_slot(schedule, now))
    next_at = _utc(next_at)
    if next_at > now:
        return Firing(None, next_at)
    slot = latest_slot(schedule, now)
    return Firing(slot, next_slot(schedule, now), _count_between(schedule, next_at, slot))


def describe(firing: Firing, schedule: str) -> str:
    """The pipeline's trigger detail: the expression, the slot, and what was missed."""
    assert firing.slot is not None
    text = f"{schedule} (UTC): slot {firing.slot:%Y-%m-%d %H:%M}"
    if firing.missed:
        more = "+" if firing.missed >= MAX_COUNTED_MISSES else ""
        plural = "s" if firing.missed != 1 else ""
        text += f"; {firing.missed}{more} earlier slot{plural} passed while no backend ran"
    return text


def _count_between(schedule: str, first: datetime, before: datetime) -> int:
    """How many slots fall in [first, before)."""
    slots = croniter(schedule, first - timedelta(seconds=1))
    count = 0
    while count < MAX_COUNTED_MISSES and _utc(slots.get_next(datetime)) < before:
        count += 1
    return count


def _utc(value: datetime) -> datetime:
    """Aware UTC (SQLite hands back naive datetimes, which hold UTC here)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
