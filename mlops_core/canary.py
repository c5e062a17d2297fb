"""Canary and shadow traffic: the names both sides share and the one rule that splits traffic.

A challenger version runs beside the served one (the champion). Where the model servers read it
(they know nothing of the database), in the registry:

- the alias CHALLENGER_ALIAS (default `challenger`) names the challenger version, as
  SERVING_ALIAS names the champion;
- the registered-model tag `canary_tag(CHALLENGER_ALIAS)` holds the rest as one JSON document
  (`CanaryConfig`: version, weight, mode, sticky key, start time, who started it). One tag,
  written in one call, so a replica never reads a weight of one canary with the mode of another.
  It repeats the version: a replica serves a challenger only when tag and alias agree, so a
  reader between the two writes sees the champion alone.

`weight` is the share of requests (percent) the challenger sees: in `split` mode it answers
them; in `shadow` mode the champion answers every request and the challenger gets a copy of
those, off the request's path, its answer only logged.

`choose_version` is pure and deterministic (a keyed hash, not `random` nor Python's salted
`hash`): the same sticky key lands on the same version on every replica and after a restart.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

# The tag's key is derived from the challenger alias, so fleets following different aliases
# (one Redis, one MLflow) keep separate canaries, as they keep separate served versions.
CANARY_TAG_PREFIX = "mlops.canary."
# Request header fields are tokens (RFC 9110); body fields are plain names.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_BUCKETS = 2**64


class DeployStrategy(StrEnum):
    """How a version that passes its gate is served (DEPLOY_STRATEGY, or the config cell's)."""

    DIRECT = "direct"  # it becomes the served version at once
    CANARY = "canary"  # it starts as the challenger, answering CANARY_WEIGHT % of requests
    SHADOW = "shadow"  # it starts as the challenger, seeing a copy of CANARY_WEIGHT %


class CanaryMode(StrEnum):
    """How the challenger takes part: it answers its share (`split`) or only sees a copy."""

    SPLIT = "split"
    SHADOW = "shadow"


def canary_tag(challenger_alias: str) -> str:
    """The registered-model tag holding the canary of the fleet whose challenger alias this is."""
    return f"{CANARY_TAG_PREFIX}{challenger_alias}"


@dataclass(frozen=True)
class StickyKey:
    """Where a request names its user: `header:X-User-Id` or `field:user_id` (a top-level field
    of the JSON body, or of a V2 body's `parameters`)."""

    kind: Literal["header", "field"]
    name: str

    @classmethod
    def parse(cls, text: str) -> StickyKey:
        """Raises ValueError naming what is wrong with `text`."""
        kind, sep, name = text.partition(":")
        if not sep or kind not in ("header", "field"):
            raise ValueError(
                f"sticky_key {text!r} must be 'header:<Header-Name>' or 'field:<body_field>'"
            )
        pattern = _HEADER_NAME if kind == "header" else _FIELD_NAME
        if not pattern.fullmatch(name):
            raise ValueError(f"sticky_key {text!r} names no valid {kind}")
        return cls(kind, name)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def value_of(self, headers: Mapping[str, str], body: Any) -> str | None:
        """The key's value in one request, or None when the request does not carry it.

        `headers` must look names up case-insensitively (Starlette's do). A field's value is
        taken as text (numbers and other JSON values in their JSON form), so `7` and `"7"`
        differ as they would for the caller's own records.
        """
        if self.kind == "header":
            return headers.get(self.name)
        if not isinstance(body, dict):
            return None
        value = body.get(self.name)
        if value is None and isinstance(body.get("parameters"), dict):
            value = body["parameters"].get(self.name)
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class CanaryConfig(BaseModel):
    """A running canary as the registry tag holds it."""

    version: str = Field(min_length=1, max_length=50)
    weight: float = Field(ge=0, le=100)
    mode: CanaryMode = CanaryMode.SPLIT
    sticky_key: str | None = None
    started_at: float = Field(default_factory=time.time)
    actor: str = "system"

    @field_validator("sticky_key")
    @classmethod
    def _sticky(cls, value: str | None) -> str | None:
        return None if value is None else str(StickyKey.parse(value))

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("weight must be a finite percentage")
        return value

    @property
    def sticky(self) -> StickyKey | None:
        return StickyKey.parse(self.sticky_key) if self.sticky_key else None

    def to_tag(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_tag(cls, text: str | None) -> CanaryConfig | None:
        """The canary a tag value holds, or None when absent or unreadable (a hand-edited tag
        must not stop a replica from serving its champion)."""
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except (ValidationError, ValueError):
            return None


def _bucket(challenger: str, key: str) -> float:
    """Where `key` falls in [0, 100) for this challenger: uniform, and the same everywhere.

    Salted with the challenger's version: each new canary draws its own users, while raising
    one canary's weight keeps every user who already had the challenger on it.
    """
    digest = hashlib.blake2b(f"{challenger}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _BUCKETS * 100


def choose_version(
    champion: str, challenger: str, weight: float, sticky_value: str | None, request_id: str
) -> str:
    """The version that sees this request: the challenger for `weight`% of keys.

    The key is the sticky value when the request carries one (one user, one version, on every
    replica), else the request id (a fresh id per request spreads requests evenly; a caller
    retrying with the same X-Request-ID gets the same version).
    """
    if weight <= 0 or challenger == champion:
        return champion
    key = sticky_value if sticky_value is not None else request_id
    return challenger if _bucket(challenger, key) < weight else champion
