"""A repo's notebooks: registering them, changing their watched paths and schedules, showing them.

A repository registers once and runs one notebook or several; each has its own pipelines and
model (its MODEL_NAME), watched paths and cron schedule. `Repo.notebook_path` names the first,
which the single-notebook API (`POST /repos {notebook_path}`, `PATCH /repos/{id}`) shows and
changes, as before notebooks were listed. Setting a schedule sets its next slot from the
database's clock, the one the schedule runner compares it with (backend/schedule_runner.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from backend.api_models import NotebookOut, NotebookSpec, NotebookUpdate, as_utc
from backend.schedules import next_slot
from backend.watch_paths import effective_watch_paths
from mlops_core.pipeline_lease import db_now
from mlops_core.schema import Notebook, Repo


def new_notebook(spec: NotebookSpec, now: datetime) -> Notebook:
    """A notebook row for `spec` (not yet attached to a repo)."""
    notebook = Notebook(notebook_path=spec.notebook_path, watch_paths=spec.watch_paths)
    set_schedule(notebook, spec.schedule, now)
    return notebook


def set_schedule(notebook: Notebook, schedule: str | None, now: datetime) -> None:
    """Schedule the notebook (None: no scheduled runs); its first run is the next slot after
    `now`, so setting a schedule never fires a run at once."""
    notebook.schedule = schedule
    notebook.schedule_next_at = next_slot(schedule, now) if schedule else None


def update_notebook(session: Session, notebook: Notebook, update: NotebookUpdate) -> None:
    """Change the fields `update` gives; a schedule given again unchanged keeps its next slot."""
    given = update.model_fields_set
    if "watch_paths" in given:
        notebook.watch_paths = update.watch_paths
    if "schedule" in given and update.schedule != notebook.schedule:
        set_schedule(notebook, update.schedule, db_now(session))


def first_notebook(repo: Repo) -> Notebook | None:
    """The repo's own notebook (`Repo.notebook_path`), the one the single-notebook API shows;
    None only for a repo row written around the API (the API keeps at least one)."""
    for notebook in repo.notebooks:
        if notebook.notebook_path == repo.notebook_path:
            return notebook
    return repo.notebooks[0] if repo.notebooks else None


def own_notebook(repo: Repo) -> Notebook:
    """The repo's first notebook, registered now if a row written around the API lacks it."""
    notebook = first_notebook(repo)
    if notebook is None:
        notebook = Notebook(notebook_path=repo.notebook_path)
        repo.notebooks.append(notebook)
    return notebook


def find_notebook(repo: Repo, notebook_path: str) -> Notebook | None:
    """The repo's notebook at that path, if registered."""
    return next((n for n in repo.notebooks if n.notebook_path == notebook_path), None)


def notebook_out(notebook: Notebook) -> NotebookOut:
    """The API's view of a notebook: its effective watched paths and its next scheduled run."""
    return NotebookOut(
        id=notebook.id,
        notebook_path=notebook.notebook_path,
        watch_paths=effective_watch_paths(notebook.notebook_path, notebook.watch_paths),
        schedule=notebook.schedule,
        next_run_at=as_utc(notebook.schedule_next_at) if notebook.schedule else None,
    )


def own_notebook_out(repo: Repo) -> NotebookOut:
    """The API's view of the repo's first notebook (defaults for a row without one)."""
    notebook = first_notebook(repo)
    if notebook is None:
        return NotebookOut(
            id=0,
            notebook_path=repo.notebook_path,
            watch_paths=effective_watch_paths(repo.notebook_path, None),
        )
    return notebook_out(notebook)
