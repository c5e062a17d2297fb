"""`mlops pipelines list|show|cancel|retry`, `mlops logs` and `mlops trigger`: runs of notebooks.

Each calls the backend's pipelines routes (backend/routes/pipelines.py, backend/routes/logs.py);
following a log exits with the pipeline's outcome (mlops_cli/exit_codes.py).
"""

from __future__ import annotations

import sys
from typing import Any, Final

import click

from mlops_cli.api_client import ApiClient
from mlops_cli.exit_codes import EXIT_CANCELLED, EXIT_FAILED, EXIT_SUCCESS
from mlops_cli.invocation import (
    api_options,
    invocation,
    json_option,
    print_json,
    print_json_lines,
    print_table,
)
from mlops_cli.log_follow import follow, make_printer, print_stored
from mlops_cli.parameters import NameEqualsValue, collect, parameter_options
from mlops_core.states import PipelineStatus

OUTCOME_EXIT_CODES: Final = {
    PipelineStatus.SUCCESS.value: EXIT_SUCCESS,
    PipelineStatus.FAILED.value: EXIT_FAILED,
    PipelineStatus.CANCELLED.value: EXIT_CANCELLED,
}


def follow_log(client: ApiClient, pipeline_id: int, live: bool) -> int:
    """Print a pipeline's log (live: until it ends, exiting with its outcome)."""
    printer = make_printer(sys.stdout, as_json=invocation().as_json)
    if not live:
        print_stored(client, pipeline_id, printer)
        return EXIT_SUCCESS
    status = follow(client.api_url, pipeline_id, printer, token=client.token)
    return OUTCOME_EXIT_CODES.get(status, EXIT_FAILED)


def _queued(client: ApiClient, answer: dict[str, Any], live: bool, what: str) -> int:
    """Say which pipeline was queued; with --follow, follow it to its end."""
    pipeline_id = int(answer["pipeline_id"])
    if invocation().as_json and not live:
        print_json(answer)
        return EXIT_SUCCESS
    # Following keeps stdout for the log itself (`--json` output stays parseable).
    out = sys.stderr if live else sys.stdout
    click.echo(f"pipeline {pipeline_id} {answer.get('status', 'queued')}{what}", file=out)
    return follow_log(client, pipeline_id, True) if live else EXIT_SUCCESS


# --- mlops logs, mlops trigger --------------------------------------------------------------


@click.command("logs")
@click.argument("pipeline_id", type=int)
@click.option(
    "-f", "--follow", "live", is_flag=True, help="stream the log live and exit with the outcome"
)
@api_options
@json_option
def logs_command(pipeline_id: int, live: bool) -> int:
    """Print a pipeline's log (live with --follow; --json: the events as JSON lines)."""
    client = invocation().client()
    try:
        return follow_log(client, pipeline_id, live)
    finally:
        client.close()


@click.command("trigger")
@click.argument("repo_id", type=int)
@click.option("-f", "--follow", "live", is_flag=True, help="then follow its log to the end")
@click.option("--commit", help="the full sha of the commit to run (default: the branch head)")
@click.option(
    "--notebook",
    "notebook_path",
    metavar="PATH",
    help="which of the repo's notebooks to run (default: its first)",
)
@click.option(
    "--param",
    "pairs",
    type=NameEqualsValue(),
    multiple=True,
    help="a papermill parameter (repeatable); VALUE is read as JSON (300, 0.5, true, [1,2]) "
    "or else taken as a string",
)
@parameter_options
@api_options
@json_option
def trigger_command(
    repo_id: int,
    live: bool,
    commit: str | None,
    notebook_path: str | None,
    pairs: tuple[tuple[str, Any], ...],
    name_values: tuple[tuple[str, str], ...],
) -> int:
    """Run a repo's notebook now: at the branch head or at a commit, with parameters."""
    body: dict[str, Any] = {"parameters": collect(pairs, name_values)}
    if commit:
        body["commit"] = commit
    if notebook_path:
        body["notebook_path"] = notebook_path
    client = invocation().client()
    try:
        answer = client.post_json(f"/repos/{repo_id}/trigger", body)
        return _queued(client, answer, live, "")
    finally:
        client.close()


# --- mlops pipelines ------------------------------------------------------------------------


def _list_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--repo-id", type=int, help="only this repo's"),
            click.option(
                "--status", type=click.Choice([s.value for s in PipelineStatus]), help="only in"
            ),
            click.option("--page", type=click.IntRange(min=1), default=1, show_default=True),
            click.option("--size", type=click.IntRange(1, 100), default=20, show_default=True),
        ]
    ):
        command = option(command)
    return command


@click.group("pipelines", invoke_without_command=True)
@_list_options
@api_options
@json_option
@click.pass_context
def pipelines_group(
    ctx: click.Context, repo_id: int | None, status: str | None, page: int, size: int
) -> int:
    """Pipelines: list (the default), show, cancel, retry."""
    if ctx.invoked_subcommand is not None:
        return EXIT_SUCCESS
    return _list(repo_id, status, page, size)


@pipelines_group.command("list")
@_list_options
@api_options
@json_option
def list_command(repo_id: int | None, status: str | None, page: int, size: int) -> int:
    """Pipelines, newest first."""
    return _list(repo_id, status, page, size)


def _list(repo_id: int | None, status: str | None, page: int, size: int) -> int:
    params: dict[str, Any] = {"page": page, "size": size}
    if repo_id is not None:
        params["repo_id"] = repo_id
    if status:
        params["status"] = status
    answer = invocation().get_json("/pipelines", params=params)
    if invocation().as_json:
        print_json_lines(answer["items"])
        return EXIT_SUCCESS
    print_table(
        ["ID", "STATUS", "TRIGGER", "COMMIT", "MODEL", "CREATED"],
        [
            [
                item["id"],
                item["status"],
                item.get("trigger"),
                (item.get("commit_sha") or "-")[:10],
                f"{item.get('model_name') or '-'}:{item.get('model_version') or '-'}",
                item.get("created_at"),
            ]
            for item in answer["items"]
        ],
    )
    pages = max(1, -(-answer["total"] // answer["size"]))
    click.echo(f"page {answer['page']} of {pages}, {answer['total']} in all")
    return EXIT_SUCCESS


@pipelines_group.command("show")
@click.argument("pipeline_id", type=int)
@api_options
@json_option
def show_command(pipeline_id: int) -> int:
    """One pipeline: its repo, commit, parameters, phases, metrics and model version."""
    item = invocation().get_json(f"/pipelines/{pipeline_id}")
    if invocation().as_json:
        print_json(item)
        return EXIT_SUCCESS
    model = item.get("model_name")
    version = item.get("model_version")
    served = " (served)" if item.get("deployed") else ""
    fields = [
        ("pipeline", f"{item['id']} {item['status']}"),
        ("repo", f"{item.get('repo_id') or '-'} {item['repo_url']} ({item['branch']})"),
        ("notebook", item["notebook_path"]),
        ("commit", item.get("commit_sha") or "the branch head"),
        (
            "trigger",
            item["trigger"] + (f": {item['trigger_detail']}" if item.get("trigger_detail") else ""),
        ),
        ("parameters", item.get("parameters") or None),
        ("model", f"{model} version {version}{served}" if model and version else model),
        ("metrics", item.get("metrics") or None),
        ("error", item.get("error")),
        ("created", item.get("created_at")),
        ("duration", f"{item['duration_seconds']:.1f} s" if item.get("duration_seconds") else None),
    ]
    for label, value in fields:
        if value is not None:
            click.echo(f"{label + ':':<12}{value if isinstance(value, str) else _inline(value)}")
    click.echo()
    print_table(
        ["PHASE", "STATUS", "SECONDS", "ERROR"],
        [
            [
                phase["name"],
                phase["status"],
                f"{phase['duration_seconds']:.2f}" if phase.get("duration_seconds") else "-",
                phase.get("error"),
            ]
            for phase in item.get("phases", [])
        ],
    )
    return EXIT_SUCCESS


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(
            f"{key}={val!r}" if isinstance(val, str) else f"{key}={val}"
            for key, val in value.items()
        )
    return str(value)


@pipelines_group.command("cancel")
@click.argument("pipeline_id", type=int)
@api_options
@json_option
def cancel_command(pipeline_id: int) -> int:
    """Stop a queued or running pipeline (a finished one: exit status 4)."""
    client = invocation().client()
    try:
        answer = client.post_json(f"/pipelines/{pipeline_id}/cancel")
    finally:
        client.close()
    if invocation().as_json:
        print_json(answer)
    elif answer["status"] == PipelineStatus.CANCELLED:
        click.echo(f"pipeline {pipeline_id} cancelled")
    else:
        click.echo(f"pipeline {pipeline_id} is running: its worker has been asked to stop it")
    return EXIT_SUCCESS


@pipelines_group.command("retry")
@click.argument("pipeline_id", type=int)
@click.option("-f", "--follow", "live", is_flag=True, help="then follow its log to the end")
@api_options
@json_option
def retry_command(pipeline_id: int, live: bool) -> int:
    """Run a finished pipeline again, at the same commit with the same parameters."""
    client = invocation().client()
    try:
        answer = client.post_json(f"/pipelines/{pipeline_id}/retry")
        return _queued(client, answer, live, f" (a retry of pipeline {pipeline_id})")
    finally:
        client.close()
