"""A small REST client for the backend: base URL, bearer token, errors with the server's message.

The one token the client holds goes on every call, reads included: the backend decides which of
its tokens (admin, read) that token is.
"""

from __future__ import annotations

from typing import Any

import httpx

# How a refused call can be fixed from the terminal (the backend's answer names the setting).
HOW_TO_AUTHENTICATE = "pass --token or set $API_TOKEN"


class ApiError(RuntimeError):
    """The backend answered with an error, or could not be reached."""


class NotFound(ApiError):
    """The pipeline, repo or model asked for does not exist."""


class ApiClient:
    """Calls the backend's REST API, turning failures into ApiError with a readable message."""

    def __init__(self, api_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params).json()

    def get_text(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The body as text, for answers that are not JSON (a CSV export)."""
        return self._request("GET", path, params=params).text

    def post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body).json()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self._http.base_url}: {exc}") from exc
        if response.status_code == 404:
            raise NotFound(_detail(response))
        if response.status_code == 401:
            raise ApiError(f"{method} {path} → 401: {_detail(response)} ({HOW_TO_AUTHENTICATE})")
        if response.is_error:
            raise ApiError(f"{method} {path} → {response.status_code}: {_detail(response)}")
        return response


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text or response.reason_phrase)
