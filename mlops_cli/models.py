"""`mlops models list|show|deploy|rollback|delete|history`: what is registered and what is served.

Each calls the backend's models routes (backend/routes/models.py). The registry's serving alias
is the truth for what is served; deploy, rollback and delete move it, and every model-server
replica follows at once.
"""

from __future__ import annotations

from typing import Any

import click

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
from mlops_cli.monitoring import model_path


def _metrics(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "-"
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in sorted(metrics.items())
    )


def _gate(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "-"
    op = ">=" if gate.get("direction") == "max" else "<="
    return f"{gate.get('metric')} {op} {gate.get('threshold')}"


@click.group("models")
def models_group() -> None:
    """Registered models: list, show, deploy, rollback, delete, history."""


@models_group.command("list")
@api_options
@json_option
def list_command() -> int:
    """Every registered model with its served and latest version."""
    client = invocation().client()
    try:
        models = client.get_json("/models")
    finally:
        client.close()
    if invocation().as_json:
        print_json_lines(models)
        return EXIT_SUCCESS
    print_table(
        ["NAME", "SERVED", "LATEST", "VERSIONS", "GATE"],
        [
            [
                model["name"],
                model.get("served_version") or "none",
                model.get("latest_version"),
                len(model.get("versions", [])),
                _gate(model.get("gate")),
            ]
            for model in models
        ],
    )
    return EXIT_SUCCESS


@models_group.command("show")
@click.argument("name")
@api_options
@json_option
def show_command(name: str) -> int:
    """One model: what is served, by which replicas, every version with its metrics and commit."""
    client = invocation().client()
    try:
        model = client.get_json(model_path(name))
    finally:
        client.close()
    if invocation().as_json:
        print_json(model)
        return EXIT_SUCCESS
    owner = model.get("owner")
    replicas = model.get("replicas")
    features = model.get("feature_names")
    for label, value in [
        ("model", model["name"]),
        (
            "served",
            f"version {model['served_version']} (alias {model['alias']!r})"
            if model.get("served_version")
            else "nothing",
        ),
        (
            "replicas",
            ", ".join(f"{r} has {v}" for r, v in replicas.items())
            if replicas
            else "none report (is a model server running?)"
            if replicas is not None
            else "unknown (Redis unreachable)",
        ),
        ("gate", _gate(model.get("gate"))),
        ("features", ", ".join(features) if features else model.get("n_features") or "unknown"),
        (
            "owner",
            f"repo {owner['repo_id']} {owner['repo_url']} {owner['notebook_path']}"
            if owner
            else "none",
        ),
    ]:
        click.echo(f"{label + ':':<12}{value}")
    click.echo()
    print_table(
        ["VERSION", "SERVED", "METRICS", "COMMIT", "PIPELINE", "CREATED", "VERDICT"],
        [
            [
                version["version"],
                "yes" if version.get("served") else "",
                _metrics(version.get("metrics")),
                (version.get("commit") or "-")[:10],
                version.get("pipeline_id"),
                version.get("created_at"),
                (version.get("verdict") or {}).get("reason"),
            ]
            for version in model.get("versions", [])
        ],
    )
    return EXIT_SUCCESS


def _changed(answer: dict[str, Any]) -> int:
    if invocation().as_json:
        print_json(answer)
        return EXIT_SUCCESS
    served = answer.get("served_version")
    previous = answer.get("previous_version") or "none"
    now = f"version {served} is served" if served else "nothing is served"
    click.echo(f"{answer['name']}: {now} (was {previous})")
    if not answer.get("announced", True):
        click.echo(
            "  the change is in the registry but was not announced (Redis unreachable): model "
            "servers pick it up at their next sync with the registry",
            err=True,
        )
    return EXIT_SUCCESS


@models_group.command("deploy")
@click.argument("name")
@click.argument("version")
@api_options
@json_option
def deploy_command(name: str, version: str) -> int:
    """Serve VERSION of the model (any registered version)."""
    client = invocation().client()
    try:
        return _changed(client.post_json(model_path(name, "deploy"), {"version": version}))
    finally:
        client.close()


@models_group.command("rollback")
@click.argument("name")
@click.argument("version", required=False)
@api_options
@json_option
def rollback_command(name: str, version: str | None) -> int:
    """Serve VERSION again, or without one the version served before the current one."""
    body = {"version": version} if version else None
    client = invocation().client()
    try:
        return _changed(client.post_json(model_path(name, "rollback"), body))
    finally:
        client.close()


@models_group.command("delete")
@click.argument("name")
@click.option("--purge", is_flag=True, help="also delete the registered model and its versions")
@yes_option
@api_options
@json_option
def delete_command(name: str, purge: bool, yes: bool) -> int:
    """Stop serving the model (with --purge, also remove it from the registry)."""
    what = "stop serving it and delete every version" if purge else "stop serving it"
    confirm(f"{name}: {what}?", yes)
    client = invocation().client()
    try:
        answer = client.delete(model_path(name), params={"purge": "true"} if purge else None)
    finally:
        client.close()
    if invocation().as_json:
        print_json(answer)
        return EXIT_SUCCESS
    purged = "; its versions were deleted from the registry" if answer.get("purged") else ""
    click.echo(
        f"{name}: not served any more (was {answer.get('previous_version') or 'none'}){purged}"
    )
    return EXIT_SUCCESS


@models_group.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@api_options
@json_option
def history_command(name: str, limit: int) -> int:
    """Every change of the served version, newest first: who, when, from which to which."""
    client = invocation().client()
    try:
        rows = client.get_json(model_path(name, "history"), params={"limit": limit})
    finally:
        client.close()
    if invocation().as_json:
        print_json_lines(rows)
        return EXIT_SUCCESS
    print_table(
        ["AT", "ACTION", "VERSION", "FROM", "BY", "PIPELINE"],
        [
            [
                row["created_at"],
                row["action"],
                row.get("version") or "none",
                row.get("previous_version") or "none",
                row.get("actor"),
                row.get("pipeline_id"),
            ]
            for row in rows
        ],
    )
    return EXIT_SUCCESS
