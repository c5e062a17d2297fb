"""A small REST client for the backend: base URL, bearer token, errors that name the fix.

The one token the client holds goes on every call, reads included: the backend decides which of
its tokens (admin, read) that token is.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

# How a refused call can be fixed from the terminal (the backend's answer names the setting).
HOW_TO_AUTHENTICATE: Final = (
    'pass --token, set $API_TOKEN, or put token = "..." in ~/.config/mlops/config.toml'
)
# How an unreachable backend can be found (mlops_cli/config.py).
HOW_TO_REACH: Final = (
    "is the backend running? Start the local stack with `make up`, or point the CLI at the "
    "backend with --api, $MLOPS_API_URL or api_url in ~/.config/mlops/config.toml"
)


class ApiError(RuntimeError):
    """The backend answered with an error, or could not be reached."""


class NotFound(ApiError):
    """The pipeline, repo or model asked for does not exist."""


class ApiClient:
    """Calls the backend's REST API, turning failures into ApiError with a readable message."""

    def __init__(self, api_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api_url = api_url.rstrip("/")
        self.token = token
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params).json()

    def get_text(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The body as text, for answers that are not JSON (a CSV export)."""
        return self._request("GET", path, params=params).text

    def post_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body).json()

    def patch_json(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("PATCH", path, json=body).json()

    def delete(
        self, path: str, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
    ) -> Any:
        """DELETE (with a JSON body if given); the answer's JSON, or None for an empty answer."""
        response = self._request("DELETE", path, params=params, json=body)
        return response.json() if response.content else None

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiError(
                f"cannot reach the API at {self.api_url} ({exc}): {HOW_TO_REACH}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"the API at {self.api_url} did not answer {method} {path} within "
                f"{self._timeout:g} s: is the backend overloaded or stuck? (`make status`)"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.api_url}: {exc}") from exc
        if response.status_code == 404:
            raise NotFound(_detail(response))
        if response.status_code in (401, 403):
            raise ApiError(
                f"{method} {path} → {response.status_code}: {_detail(response)} "
                f"({HOW_TO_AUTHENTICATE})"
            )
        if response.status_code >= 500:
            raise ApiError(
                f"{method} {path} → {response.status_code}: {_detail(response)} "
                "(the backend could not do it; its log says why: `make logs`)"
            )
        if response.is_error:
            raise ApiError(f"{method} {path} → {response.status_code}: {_detail(response)}")
        return response


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors: each field and its message
        detail = "; ".join(_field_error(item) for item in detail)
    return str(detail or response.text or response.reason_phrase)


def _field_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg')}" if where else str(item.get("msg"))
