"""A FastAPI route that hands the request straight to its endpoint, for the inference routes.

FastAPI validates every declared parameter of every request with pydantic (its dependency
solving): for a one-row prediction that costs more than routing it does. The inference
endpoints take the request and string path parameters only and return a Response, so there is
nothing to validate: this route class calls them with the path parameters as matched, while
FastAPI still documents them (OpenAPI) from the signature. Dependencies, response models and
background tasks do not run for such a route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle
