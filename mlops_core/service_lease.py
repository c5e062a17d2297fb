"""One holder at a time for a job every backend runs a loop for, kept in the database.

Posting commit statuses must happen in one place: two backends posting the same pipeline's
statuses could land them on GitHub out of order (an old `pending` after the final `success`),
and GitHub shows the last one it received. Each backend's loop asks `hold` before a pass; the
holder renews its lease every pass, and when it dies the lease expires and another backend's
next pass takes it. Times are the database's clock, as for pipeline heartbeats
(mlops_core/pipeline_lease.py), so hosts whose clocks disagree still agree on expiry.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from mlops_core.database import session_scope
from mlops_core.pipeline_lease import db_now
from mlops_core.schema import ServiceLease


def holder_id() -> str:
    """A name for this process that no other process (here or on another host) has."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def hold(database_url: str, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `seconds`; False while another holder has it."""
    with session_scope(database_url) as session:
        now = db_now(session)
        until = now + timedelta(seconds=seconds)
        renewed = session.execute(
            update(ServiceLease)
            .where(
                ServiceLease.name == name,
                or_(ServiceLease.holder == holder, ServiceLease.expires_at < now),
            )
            .values(holder=holder, expires_at=until)
        )
        if renewed.rowcount:  # type: ignore[attr-defined]
            return True
    try:
        with session_scope(database_url) as session:
            session.add(ServiceLease(name=name, holder=holder, expires_at=until))
    except IntegrityError:  # another holder has it (or took it first)
        return False
    return True
