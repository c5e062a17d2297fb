"""The dashboard's HTML pages, served under /ui so they never shadow the JSON API.

GET /models and GET /pipelines/{id} already answer JSON for the CLI and scripts; a separate
prefix keeps one URL = one representation (no content negotiation that would make `curl`
and a browser see different things at the same address, or confuse caches). Each page is a
small server-rendered shell; vanilla JS modules fill it from the same REST API any client
uses, so the pages never reach around the API's validation and auth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from backend.api_params import RowId
from backend.auth import page_tokens_required
from backend.dependencies import SessionDep, SettingsDep
from mlops_core.schema import Pipeline, Repo
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus, Trigger

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# Everything a page loads comes from this origin: the policy makes a stray CDN reference or an
# injected inline script fail loudly instead of working by accident.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

templates = Jinja2Templates(directory=TEMPLATES_DIR)
router = APIRouter(prefix="/ui", include_in_schema=False)


def _render(
    request: Request,
    template: str,
    settings: Settings,
    *,
    page: str,
    title: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        template,
        {
            "page": page,
            "title": title,
            "mlflow_ui": settings.mlflow_ui,
            "auth_required": page_tokens_required(settings),
            **context,
        },
        status_code=status_code,
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@router.get("/", response_class=HTMLResponse, name="ui_overview")
def overview(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(request, "overview.html", settings, page="overview", title="Overview")


@router.get("/repos/new", response_class=HTMLResponse, name="ui_repo_new")
def add_repo(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(request, "repo_new.html", settings, page="repos", title="Add repository")


@router.get("/pipelines", response_class=HTMLResponse, name="ui_pipelines")
def pipelines_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(
        request,
        "pipelines.html",
        settings,
        page="pipelines",
        title="Pipelines",
        # The filters offer exactly what GET /pipelines accepts.
        statuses=[state.value for state in PipelineStatus],
        triggers=[trigger.value for trigger in Trigger],
    )


@router.get("/repos/{repo_id}", response_class=HTMLResponse, name="ui_repo")
def repo_page(
    repo_id: RowId, request: Request, settings: SettingsDep, session: SessionDep
) -> HTMLResponse:
    if session.get(Repo, repo_id) is None:
        return _render(
            request,
            "not_found.html",
            settings,
            page="overview",
            title="Repository not found",
            status_code=404,
            message=f"There is no repository #{repo_id}.",
        )
    return _render(request, "repo.html", settings, page="repo", title="Repository", repo_id=repo_id)


@router.get("/pipelines/{pipeline_id}", response_class=HTMLResponse, name="ui_pipeline")
def pipeline_page(
    pipeline_id: RowId,
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
) -> HTMLResponse:
    if session.get(Pipeline, pipeline_id) is None:
        return _render(
            request,
            "not_found.html",
            settings,
            page="pipelines",
            title="Pipeline not found",
            status_code=404,
            message=f"There is no pipeline #{pipeline_id}.",
        )
    return _render(
        request,
        "pipeline.html",
        settings,
        page="pipelines",
        title=f"Pipeline #{pipeline_id}",
        pipeline_id=pipeline_id,
    )


@router.get("/models", response_class=HTMLResponse, name="ui_models")
def models_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(request, "models.html", settings, page="models", title="Models")


@router.get("/models/{name}", response_class=HTMLResponse, name="ui_model")
def model_page(name: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    return _render(
        request,
        "model.html",
        settings,
        page="models",
        title=f"Model {name}",
        model_name=name,
        serving_alias=settings.serving_alias,
    )


def redirect_to_overview() -> RedirectResponse:
    """`/` is where people type the backend's address: send them to the dashboard."""
    return RedirectResponse("/ui/", status_code=307)
