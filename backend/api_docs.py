"""The API's documentation pages (/docs, /redoc) held to this server alone.

fastapi-offline serves Swagger UI's and ReDoc's files from the backend, so the pages load on a
site with no route to a CDN. ReDoc still shows one image from its maker's CDN in its sidebar (a
credit logo it hides when it fails to load): a Content-Security-Policy that allows only this
origin keeps the browser from asking another host at all, for that image and for anything a
later version adds. Both pages carry an inline script or style of their own, hence
'unsafe-inline' on these two pages only (the dashboard's own policy allows none).
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATHS: Final = frozenset({"/docs", "/redoc"})
DOCS_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)


class DocsPolicy:
    """ASGI middleware: the documentation pages' responses get DOCS_CONTENT_SECURITY_POLICY."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOCS_PATHS:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Content-Security-Policy"] = (
                    DOCS_CONTENT_SECURITY_POLICY
                )
            await send(message)

        await self.app(scope, receive, send_with_policy)
