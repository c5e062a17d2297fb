"""`mlops repos add|list|show|schedule|remove`: the git repositories whose pushes run a notebook.

Each calls the backend's repos routes (backend/routes/repos.py). Secrets (the repo's GitHub
token, a webhook secret of your choosing) are read from a file or standard input, never taken
as arguments: a command line is visible to every user of the machine (`ps`) and kept in the
shell's history.
"""

from __future__ import annotations

from typing import Any, TextIO

import click

from mlops_cli.bad_input import BadInput
from mlops_cli.exit_codes import EXIT_SUCCESS
from mlops_cli.invocation import (
    api_options,
    confirm,
    invocation,
    json_option,
    print_json,
    print_json_lines,
    print_table,
    yes_option,
)


def _secret(source: TextIO | None, what: str) -> str | None:
    if source is None:
        return None
    value = source.read().strip()
    if not value:
        raise BadInput(f"{what}: {getattr(source, 'name', 'the file')} is empty")
    return value


@click.group("repos")
def repos_group() -> None:
    """Registered repositories: add, list, show, schedule, remove."""


@repos_group.command("add")
@click.argument("url")
@click.option("--branch", default="main", show_default=True, help="the branch whose pushes run")
@click.option(
    "--notebook",
    "notebook_paths",
    multiple=True,
    metavar="PATH",
    help="a notebook's path inside the repository (repeatable: each gets its own pipelines "
    "and models; default: notebooks/train.ipynb)",
)
@click.option(
    "--watch",
    "watch_paths",
    multiple=True,
    metavar="GLOB",
    help="a path whose change retrains (repeatable; default: the notebook, its "
    "requirements.txt and its folder); with several --notebook, each notebook's",
)
@click.option(
    "--schedule",
    metavar="CRON",
    help='also run the branch head on this cron schedule, in UTC ("0 3 * * *": daily at '
    "03:00); with several --notebook, each notebook's",
)
@click.option(
    "--github-token-file",
    type=click.File("r"),
    help="a file holding the repo's GitHub token (- : standard input)",
)
@click.option(
    "--webhook-secret-file",
    type=click.File("r"),
    help="a file holding the webhook secret to use (default: the backend makes one)",
)
@click.option(
    "--no-webhook",
    is_flag=True,
    help="do not create the push webhook through GitHub's API (add it by hand)",
)
@api_options
@json_option
def add_command(
    url: str,
    branch: str,
    notebook_paths: tuple[str, ...],
    watch_paths: tuple[str, ...],
    schedule: str | None,
    github_token_file: TextIO | None,
    webhook_secret_file: TextIO | None,
    no_webhook: bool,
) -> int:
    """Register a repository: its pushes to BRANCH run each NOTEBOOK (and so does its
    schedule)."""
    body: dict[str, Any] = {
        "github_url": url,
        "branch": branch,
        "create_webhook": not no_webhook,
    }
    notebook: dict[str, Any] = {}
    if watch_paths:
        notebook["watch_paths"] = list(watch_paths)
    if schedule:
        notebook["schedule"] = schedule
    if len(notebook_paths) > 1:
        body["notebooks"] = [{"notebook_path": path, **notebook} for path in notebook_paths]
    else:
        body.update(notebook, notebook_path=(notebook_paths or ("notebooks/train.ipynb",))[0])
    token = _secret(github_token_file, "--github-token-file")
    if token:
        body["github_token"] = token
    secret = _secret(webhook_secret_file, "--webhook-secret-file")
    if secret:
        body["webhook_secret"] = secret
    client = invocation().client()
    try:
        repo = client.post_json("/repos", body)
    finally:
        client.close()
    if invocation().as_json:
        print_json(repo)
        return EXIT_SUCCESS
    click.echo(f"repo {repo['id']} registered: {repo['github_url']} ({repo['branch']})")
    for registered in repo["notebooks"]:
        click.echo(f"  notebook:        {registered['notebook_path']}{_when(registered)}")
    click.echo(f"  webhook URL:     {repo['webhook_url']}")
    if repo.get("webhook_secret"):
        click.echo(f"  webhook secret:  {repo['webhook_secret']}  (shown only now)")
    else:
        click.echo(f"  webhook secret:  {repo['webhook_secret_source']}")
    webhook = repo.get("webhook") or {}
    if webhook.get("created"):
        click.echo(f"  push webhook:    created on GitHub (id {webhook.get('id')})")
    else:
        click.echo(
            f"  push webhook:    not created ({webhook.get('reason')}): add it in the "
            "repository's settings with the URL and secret above"
        )
    return EXIT_SUCCESS


@repos_group.command("list")
@api_options
@json_option
def list_command() -> int:
    """Registered repositories, oldest first, with each one's latest pipeline."""
    repos = invocation().get_json("/repos")
    if invocation().as_json:
        print_json_lines(repos)
        return EXIT_SUCCESS
    print_table(
        ["ID", "URL", "BRANCH", "NOTEBOOK", "LAST PIPELINE"],
        [
            [repo["id"], repo["github_url"], repo["branch"], repo["notebook_path"], _last(repo)]
            for repo in repos
        ],
    )
    return EXIT_SUCCESS


def _schedule(notebook: dict[str, Any]) -> str | None:
    """A notebook's schedule as the CLI shows it, None when it has none."""
    if not notebook.get("schedule"):
        return None
    return f"{notebook['schedule']} UTC, next run {notebook.get('next_run_at')}"


def _when(notebook: dict[str, Any]) -> str:
    """A notebook's schedule after its path, or nothing when it has none."""
    schedule = _schedule(notebook)
    return f" (schedule {schedule})" if schedule else ""


def _last(repo: dict[str, Any]) -> str:
    last = repo.get("last_pipeline")
    return f"{last['id']} {last['status']}" if last else "-"


@repos_group.command("show")
@click.argument("repo_id", type=int)
@api_options
@json_option
def show_command(repo_id: int) -> int:
    """One repository: branch, notebook, watched paths, webhook, latest pipeline."""
    repo = invocation().get_json(f"/repos/{repo_id}")
    if invocation().as_json:
        print_json(repo)
        return EXIT_SUCCESS
    webhook = (
        f"created on GitHub (id {repo['webhook_id']})" if repo.get("webhook_id") else "by hand"
    )
    for label, value in [
        ("repo", f"{repo['id']} {repo['github_url']}"),
        ("branch", repo["branch"]),
        ("notebook", repo["notebook_path"]),
        ("watches", ", ".join(repo["watch_paths"])),
        ("schedule", _schedule(repo) or "none"),
        *[("notebook", f"{n['notebook_path']}{_when(n)}") for n in repo["notebooks"][1:]],
        ("token", "its own GitHub token" if repo.get("has_token") else "none of its own"),
        ("webhook", f"{repo['webhook_url']} ({webhook})"),
        ("last run", _last(repo)),
        ("registered", repo["created_at"]),
    ]:
        click.echo(f"{label + ':':<12}{value}")
    return EXIT_SUCCESS


@repos_group.command("schedule")
@click.argument("repo_id", type=int)
@click.argument("cron", required=False)
@click.option("--off", is_flag=True, help="stop the scheduled runs")
@api_options
@json_option
def schedule_command(repo_id: int, cron: str | None, off: bool) -> int:
    """Run the repo's (first) notebook on the cron schedule CRON, in UTC, or --off."""
    if (cron is None) == (not off):
        raise click.UsageError('give a cron expression such as "0 3 * * *", or --off')
    client = invocation().client()
    try:
        repo = client.patch_json(f"/repos/{repo_id}", {"schedule": None if off else cron})
    finally:
        client.close()
    if invocation().as_json:
        print_json(repo)
    elif repo.get("schedule"):
        click.echo(f"repo {repo_id} {repo['notebook_path']}: schedule {_schedule(repo)}")
    else:
        click.echo(f"repo {repo_id} {repo['notebook_path']}: no scheduled runs")
    return EXIT_SUCCESS


@repos_group.command("remove")
@click.argument("repo_id", type=int)
@yes_option
@api_options
@json_option
def remove_command(repo_id: int, yes: bool) -> int:
    """Forget a repository (its pipelines stay as history; its model names stay reserved)."""
    confirm(f"Remove repo {repo_id} and the push webhook the platform created for it?", yes)
    client = invocation().client()
    try:
        client.delete(f"/repos/{repo_id}")
    finally:
        client.close()
    if invocation().as_json:
        print_json({"id": repo_id, "removed": True})
    else:
        click.echo(f"repo {repo_id} removed")
    return EXIT_SUCCESS
