"""`mlops models list|show|deploy|rollback|delete|history|canary|promote|abort`: what is
registered and what is served.

Each calls the backend's models routes (backend/routes/models.py, backend/routes/canary.py). The
registry's serving alias is the truth for what is served; deploy, rollback and delete move it,
and every model-server replica follows at once. `canary` runs a challenger beside the served
version for a share of requests (or a shadow copy of them); `promote` and `abort` end it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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

F = TypeVar("F", bound=Callable[..., Any])


def reason_option(command: F) -> F:
    """--reason: why, kept in the deployment history beside who did it."""
    return click.option(
        "--reason", metavar="TEXT", help="why (kept in the deployment history: `models history`)"
    )(command)


def _reason(reason: str | None) -> dict[str, Any]:
    return {"reason": reason} if reason else {}


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
    """Registered models: list, show, deploy, rollback, delete, history, canary."""


@models_group.command("list")
@api_options
@json_option
def list_command() -> int:
    """Every registered model with its served and latest version."""
    models = invocation().get_json("/models")
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
    model = invocation().get_json(model_path(name))
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
@reason_option
@click.option(
    "--force",
    is_flag=True,
    help="serve a version that failed its deploy gate (needs --reason)",
)
@api_options
@json_option
def deploy_command(name: str, version: str, reason: str | None, force: bool) -> int:
    """Serve VERSION of the model (any registered version; one below its gate with --force)."""
    if force and not (reason or "").strip():
        raise click.UsageError(
            '--force needs --reason "why": serving a version below its gate is kept in the '
            "deployment history with the reason"
        )
    body: dict[str, Any] = {"version": version, **_reason(reason)}
    if force:
        body["force"] = True
    client = invocation().client()
    try:
        return _changed(client.post_json(model_path(name, "deploy"), body))
    finally:
        client.close()


@models_group.command("rollback")
@click.argument("name")
@click.argument("version", required=False)
@reason_option
@api_options
@json_option
def rollback_command(name: str, version: str | None, reason: str | None) -> int:
    """Serve VERSION again, or without one the version served before the current one."""
    body = {**({"version": version} if version else {}), **_reason(reason)} or None
    client = invocation().client()
    try:
        return _changed(client.post_json(model_path(name, "rollback"), body))
    finally:
        client.close()


@models_group.command("delete")
@click.argument("name")
@click.option("--purge", is_flag=True, help="also delete the registered model and its versions")
@reason_option
@yes_option
@api_options
@json_option
def delete_command(name: str, purge: bool, reason: str | None, yes: bool) -> int:
    """Stop serving the model (with --purge, also remove it from the registry)."""
    what = "stop serving it and delete every version" if purge else "stop serving it"
    confirm(f"{name}: {what}?", yes)
    client = invocation().client()
    try:
        answer = client.delete(
            model_path(name),
            params={"purge": "true"} if purge else None,
            body=_reason(reason) or None,
        )
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
    """Every change of the served version, newest first: who, when, from which to which, why."""
    rows = invocation().get_json(model_path(name, "history"), params={"limit": limit})
    if invocation().as_json:
        print_json_lines(rows)
        return EXIT_SUCCESS
    print_table(
        ["AT", "ACTION", "VERSION", "FROM", "BY", "PIPELINE", "REASON"],
        [
            [
                row["created_at"],
                row["action"],
                row.get("version") or "none",
                row.get("previous_version") or "none",
                row.get("actor"),
                row.get("pipeline_id"),
                row.get("reason") or "",
            ]
            for row in rows
        ],
    )
    return EXIT_SUCCESS


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _canary(status: dict[str, Any]) -> int:
    if invocation().as_json:
        print_json(status)
        return EXIT_SUCCESS
    name = status["name"]
    if not status.get("active"):
        served = status.get("champion")
        click.echo(
            f"{name}: no challenger runs beside version {served}"
            if served
            else f"{name}: nothing is served"
        )
        return EXIT_SUCCESS
    mode = status["mode"]
    share = f"{status['weight']:g}% of requests"
    what = f"gets a copy of {share}" if mode == "shadow" else f"answers {share}"
    sticky = f", one version per {status['sticky_key']}" if status.get("sticky_key") else ""
    policy = status.get("policy") or {}
    for label, value in [
        ("model", name),
        (
            "challenger",
            f"version {status['challenger']} {what} beside version {status['champion']} "
            f"({mode}{sticky})",
        ),
        ("started", f"{status['started_at']} by {status['started_by']}"),
        ("policy", f"{policy.get('verdict')}: {policy.get('reason')}"),
    ]:
        click.echo(f"{label + ':':<12}{value}")
    click.echo()
    champion, challenger = status["versions"]
    checks = {check["name"]: check["outcome"] for check in policy.get("checks", [])}

    def quality(v: dict[str, Any]) -> str:
        if v.get("quality") is None:
            return "-"
        return f"{v['quality_metric']}={v['quality']:.4g} ({v['quality_rows']})"

    print_table(
        ["FIGURE", f"SERVED v{status['champion']}", f"CHALLENGER v{status['challenger']}", "CHECK"],
        [
            ["requests", champion["requests"], challenger["requests"], ""],
            [
                "error rate",
                _share(champion["error_rate"]),
                _share(challenger["error_rate"]),
                checks.get("error_rate", ""),
            ],
            ["p50 ms", _ms(champion["p50_ms"]), _ms(challenger["p50_ms"]), ""],
            [
                "p95 ms",
                _ms(champion["p95_ms"]),
                _ms(challenger["p95_ms"]),
                checks.get("p95_latency", ""),
            ],
            [
                "live quality",
                quality(champion),
                quality(challenger),
                checks.get("live_quality", ""),
            ],
            [
                "drift",
                _share(champion["drift_share"]),
                _share(challenger["drift_share"]),
                checks.get("drift", ""),
            ],
            *(
                [["agreement", _share(status.get("agreement")), f"{status['compared']} rows", ""]]
                if mode == "shadow"
                else []
            ),
        ],
    )
    return EXIT_SUCCESS


@models_group.command("canary")
@click.argument("name")
@click.option(
    "--version",
    "version",
    help="run this registered version as the challenger (without it: show the running canary)",
)
@click.option(
    "--weight",
    type=click.FloatRange(0, 100, min_open=True),
    help="share of requests, in percent, it answers (or, with --shadow, gets a copy of); "
    "default: the backend's CANARY_WEIGHT",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="the served version answers every request; the challenger's answers are only logged",
)
@click.option("--sticky-key", help="header:X-User-Id or field:user_id: one user, one version")
@api_options
@json_option
def canary_command(
    name: str, version: str | None, weight: float | None, shadow: bool, sticky_key: str | None
) -> int:
    """Run VERSION as the challenger beside the served version, or show the running canary
    with both versions' live figures and what the promotion policy would decide."""
    if version is None and (weight is not None or shadow or sticky_key):
        raise click.UsageError("--weight, --shadow and --sticky-key go with --version")
    client = invocation().client()
    try:
        if version is None:
            return _canary(client.get_json(model_path(name, "canary")))
        body: dict[str, Any] = {"version": version, "mode": "shadow" if shadow else "split"}
        if weight is not None:
            body["weight"] = weight
        if sticky_key:
            body["sticky_key"] = sticky_key
        return _canary(client.post_json(model_path(name, "canary"), body))
    finally:
        client.close()


def _ended(answer: dict[str, Any]) -> int:
    if invocation().as_json:
        print_json(answer)
        return EXIT_SUCCESS
    name, challenger = answer["name"], answer["challenger"]
    if answer["action"] == "promote":
        click.echo(f"{name}: version {challenger} is served (was {answer['previous_version']})")
    else:
        click.echo(
            f"{name}: canary of version {challenger} aborted; version "
            f"{answer['served_version']} answers every request"
        )
    return EXIT_SUCCESS


@models_group.command("promote")
@click.argument("name")
@api_options
@json_option
def promote_command(name: str) -> int:
    """Serve the running challenger to everyone: it becomes the served version."""
    client = invocation().client()
    try:
        return _ended(client.post_json(model_path(name, "canary/promote")))
    finally:
        client.close()


@models_group.command("abort")
@click.argument("name")
@api_options
@json_option
def abort_command(name: str) -> int:
    """Stop the running challenger: the served version answers every request again."""
    client = invocation().client()
    try:
        return _ended(client.post_json(model_path(name, "canary/abort")))
    finally:
        client.close()
