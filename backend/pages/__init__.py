"""The web dashboard: HTML pages under /ui, their static assets under /ui/static."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from backend.pages.views import STATIC_DIR, redirect_to_overview, router


class RevalidatedStaticFiles(StaticFiles):
    """Static files the browser must revalidate (ETag → 304), so a deploy never serves stale JS.

    ES modules import each other by plain relative URLs, which rules out fingerprinted names
    without a build step; revalidation costs one tiny round trip per asset instead.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_pages(app: FastAPI) -> None:
    """Add the dashboard to `app`: pages, static assets and the `/` redirect."""
    app.include_router(router)
    app.mount("/ui/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_api_route("/", redirect_to_overview, methods=["GET"], include_in_schema=False)
