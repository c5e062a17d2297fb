"""The dashboard's addresses: pages under /ui beside the JSON API, never in its place."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from backend.app import create_app
from mlops_core.settings import Settings


def test_pages_live_under_ui_and_the_api_keeps_its_paths(
    base_env: dict[str, str],
    database_url: str,
    settings_from_env: Callable[[dict[str, str]], Settings],
) -> None:
    settings = settings_from_env({**base_env, "DATABASE_URL": database_url})
    client = TestClient(create_app(settings))  # no lifespan: only routing and rendering here

    home = client.get("/", follow_redirects=False)
    assert home.status_code == 307
    assert home.headers["location"] == "/ui/"

    overview = client.get("/ui/")
    assert overview.status_code == 200
    assert overview.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in overview.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', overview.text)
    assert any(path.endswith(".js") for path in assets)
    assert any(path.endswith(".css") for path in assets)
    for path in assets:
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["cache-control"] == "no-cache"

    missing = client.get("/ui/pipelines/424242")
    assert missing.status_code == 404
    assert "There is no pipeline #424242." in missing.text

    api = client.get("/pipelines/424242")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/json"


def test_an_app_used_without_its_lifespan_says_it_is_not_started(
    base_env: dict[str, str],
    database_url: str,
    settings_from_env: Callable[[dict[str, str]], Settings],
) -> None:
    """Its services are built only by the lifespan (backend/services.py): a clear 503, not a 500."""
    settings = settings_from_env({**base_env, "DATABASE_URL": database_url})
    client = TestClient(create_app(settings))

    answer = client.get("/models")
    assert answer.status_code == 503
    assert answer.json()["detail"] == "the backend is not started: its services are not running"
