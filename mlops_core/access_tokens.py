"""Scoped bearer tokens: which token opens which kind of call.

Four settings rather than users and roles, since one team runs the platform. API_TOKEN is the
admin token and opens every guard. API_READ_TOKEN opens reads, so a dashboard viewer or a
monitor can see pipelines without being able to change what is served. PREDICT_TOKEN opens
predictions and is given to the applications that call a model, which need nothing else.
METRICS_TOKEN opens /metrics for a Prometheus scraper. A guard whose own token is unset stays
open, so a stack with no token set works as before; each deployable says at start what is open.

Tokens with names (API_TOKENS, `name:token` pairs separated by commas) are admin tokens too;
a change of the served version records the name of the token that asked for it as its actor
(API_TOKEN's is "api", as is that of a call made while the admin guard is open), so the history
says who deployed or rolled back.

The rules live here, free of any web framework, so that the backend, the model server and the
command-line client share them without the client importing a server stack.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mlops_core.settings import Settings

# A WebSocket closed with this code was refused for want of a valid token (4000-4999 are the
# application's own codes; 4401 mirrors HTTP 401).
CLOSE_UNAUTHORIZED: Final = 4401
# Browsers cannot set headers on a WebSocket: they offer the subprotocols ["bearer", <token>]
# (or one item "bearer.<token>") and the server answers with "bearer" alone, never the token.
BEARER_PROTOCOL: Final = "bearer"
# The last resort for a WebSocket client that can do neither (redacted from the access log).
TOKEN_QUERY_PARAM: Final = "token"  # noqa: S105 (the parameter's name, not a token)
CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}
# The actor of a change asked for with API_TOKEN, or while the admin guard is open.
API_TOKEN_ACTOR: Final = "api"  # noqa: S105 (a name shown in the history, not a token)
# What a token's name in API_TOKENS may be: it is shown in the deployment history.
TOKEN_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class Guard:
    """A kind of call, the setting holding the token that opens it, and what it covers."""

    setting: str
    kind: str
    covers: str


ADMIN: Final = Guard("API_TOKEN", "API", "state changes (repos, pipelines, served models)")
READ: Final = Guard(
    "API_READ_TOKEN", "read", "reads (repos, pipelines, logs, models, the dashboard's data)"
)
PREDICT: Final = Guard("PREDICT_TOKEN", "predict", "predictions and model metadata")
METRICS: Final = Guard("METRICS_TOKEN", "metrics", "/metrics")


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused; the texts name the setting, never a token."""

    guard: Guard
    problem: str  # "missing" or "invalid"

    @property
    def summary(self) -> str:
        return f"{self.problem} {self.guard.kind} token"

    @property
    def http_detail(self) -> str:
        """The 401 body: what to send instead."""
        admin = "" if self.guard is ADMIN else f" ({ADMIN.setting} works too)"
        return f"{self.summary}: send 'Authorization: Bearer <{self.guard.setting}>'{admin}"

    @property
    def websocket_reason(self) -> str:
        """The close reason (at most 123 bytes, so shorter than the HTTP detail)."""
        return (
            f"{self.summary}: offer the subprotocols '{BEARER_PROTOCOL}', '<{self.guard.setting}>'"
        )


def parse_named_tokens(text: str) -> dict[str, str]:
    """API_TOKENS as name → token: `name:token` pairs separated by commas.

    Raises ValueError naming the faulty pair by position and name, never by its token.
    """
    named: dict[str, str] = {}
    for position, pair in enumerate((p.strip() for p in text.split(",")), start=1):
        if not pair:
            continue
        name, colon, token = (part.strip() for part in pair.partition(":"))
        if not colon or not token:
            raise ValueError(f"API_TOKENS pair {position} is not `name:token`")
        if not TOKEN_NAME.match(name):
            raise ValueError(
                f"API_TOKENS pair {position}: the name must be 1-64 letters, digits or ._@- "
                "(it is shown in the deployment history)"
            )
        if name in named:
            raise ValueError(f"API_TOKENS names {name!r} twice")
        named[name] = token
    return named


def admin_tokens(settings: Settings) -> dict[str, str]:
    """Every admin token by its name: API_TOKEN as "api", then API_TOKENS."""
    tokens: dict[str, str] = {}
    api = configured(settings, ADMIN)
    if api is not None:
        tokens[API_TOKEN_ACTOR] = api
    if settings.api_tokens is not None:
        tokens.update(parse_named_tokens(settings.api_tokens.get_secret_value()))
    return tokens


def guard_tokens(settings: Settings, guard: Guard) -> list[str]:
    """The tokens the guard asks for itself (the admin guard: every admin token); empty when
    it is open."""
    if guard is ADMIN:
        return list(admin_tokens(settings).values())
    own = configured(settings, guard)
    return [own] if own is not None else []


def actor(settings: Settings, presented: str | None) -> str:
    """Whom the history names for a change asked for with `presented`: the name of the admin
    token it matches (compared in constant time, all of them), else "api"."""
    given = (presented or "").encode()
    found = API_TOKEN_ACTOR
    for name, token in admin_tokens(settings).items():
        if hmac.compare_digest(given, token.encode()):
            found = name
    return found


def configured(settings: Settings, guard: Guard) -> str | None:
    """The guard's own token, or None when unset or empty (an empty token would guard nothing)."""
    secret = getattr(settings, guard.setting.lower())
    if secret is None:
        return None
    return secret.get_secret_value() or None


def refusal(settings: Settings, guard: Guard, presented: str | None) -> Refusal | None:
    """None when `presented` opens the guard (or the guard is open), else why not.

    Every accepted token is compared in constant time, and all of them always are, so the time
    taken tells nothing about which one came close.
    """
    own = guard_tokens(settings, guard)
    if not own:
        return None
    if presented is None:
        return Refusal(guard, "missing")
    accepted = own if guard is ADMIN else [*own, *guard_tokens(settings, ADMIN)]
    given = presented.encode()
    matches = [hmac.compare_digest(given, token.encode()) for token in accepted]
    return None if any(matches) else Refusal(guard, "invalid")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None without the header.

    Any other form (another scheme, no token) gives "", which no token matches: the caller is
    told its token is invalid rather than missing.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == BEARER_PROTOCOL else ""


def subprotocol_token(protocols: Sequence[str]) -> str | None:
    """The token offered as WebSocket subprotocols: an item "bearer.<token>", else the item
    after "bearer" (so ["bearer", "bearer.<token>"] is read as the former)."""
    prefix = f"{BEARER_PROTOCOL}."
    for item in protocols:
        if item.startswith(prefix):
            return item.removeprefix(prefix)
    if BEARER_PROTOCOL in protocols:
        following = list(protocols).index(BEARER_PROTOCOL) + 1
        if following < len(protocols):
            return protocols[following]
    return None


def open_warning(settings: Settings, guards: Sequence[Guard], where: str) -> str | None:
    """The start-up warning naming what `where` leaves open to anyone, or None if nothing."""
    open_ = [guard for guard in guards if not guard_tokens(settings, guard)]
    if not open_:
        return None
    parts = "; ".join(f"{guard.covers} ({guard.setting} is not set)" for guard in open_)
    return (
        f"open to anyone who can reach {where}: {parts}. Set those tokens to require "
        "'Authorization: Bearer <token>' (API_TOKEN, the admin token, and each named admin "
        "token of API_TOKENS open every guard)."
    )
