"""`mlops`: the platform from a terminal (Click; `mlops COMMAND --help` for each command).

    mlops repos add|list|show|schedule|remove     registered repositories
    mlops pipelines [list]|show|cancel|retry      runs of notebooks
    mlops logs ID [--follow]                      a pipeline's log, live with --follow
    mlops trigger REPO_ID [--notebook PATH] [--commit SHA] [-p NAME VALUE]... [--follow]
    mlops models list|show|deploy|rollback|delete|history   (--reason TEXT on the changes)
    mlops models canary NAME [--version N --weight 10 [--shadow]] | promote NAME | abort NAME
    mlops predict NAME --row 5.1,3.5,1.4,0.2 | --file rows.csv
    mlops predictions|drift|feedback NAME         watching a served model
    mlops check NOTEBOOK...                       the contract check, before the push
    mlops tag NOTEBOOK --model-name NAME --training 5 ...  tags and contract cells for a notebook
    mlops run NOTEBOOK [-p NAME VALUE]...         the pipeline's run, here, before the push
    mlops config                                  which backend and token the CLI uses

Every command takes --json. The backend's URL and token come from --api/--token, else
$MLOPS_API_URL/$API_TOKEN, else the config file (mlops_cli/config.py).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Final

import click

from mlops_cli import (
    models,
    monitoring,
    notebook_check,
    notebook_tag,
    pipelines,
    predict,
    repos,
)
from mlops_cli.api_client import ApiError, NotFound
from mlops_cli.bad_input import BadInput
from mlops_cli.config import ConfigError
from mlops_cli.exit_codes import (
    EXIT_API_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_SUCCESS,
    EXIT_USAGE,
)
from mlops_cli.invocation import Invocation, api_options, invocation, json_option, print_json
from mlops_cli.log_follow import StreamLost

EXIT_STATUS_HELP = """\b
Exit status:
  0   success (`drift`: no drift, or too few rows to tell yet)
  1   the followed pipeline failed; `drift`: some feature drifted; `feedback`: some label
      was not stored; `check`: a notebook breaks the contract; `run`: the run failed
  2   the followed pipeline was cancelled
  3   no such pipeline, repo, model or notebook file
  4   the API or MLflow could not be reached, or answered with an error
  5   `run`: the notebook ran but fails its deploy gate
  64  bad usage, or an input file that cannot be read
  130 interrupted (Ctrl-C)"""


# Commands whose module is imported only when they run: `mlops run` needs MLflow and the
# notebook runner, seconds of imports every other command would pay for.
LAZY_COMMANDS: Final = {"run": "mlops_cli.local_run:run_command"}


class LazyGroup(click.Group):
    """A group that imports the modules of LAZY_COMMANDS when one of them is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, _, name = LAZY_COMMANDS[cmd_name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    "mlops",
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP,
)
@api_options
@json_option
def cli() -> None:
    """Command-line client of the notebook-mlops platform."""


@cli.command("config")
@api_options
@json_option
def config_command() -> int:
    """Show which backend URL and token the CLI uses, and where each comes from."""
    connection = invocation().connection()
    shown = {
        "api_url": connection.api_url,
        "api_url_from": connection.api_url_source,
        "token": "set" if connection.token else "none",
        "token_from": connection.token_source,
        "config_file": str(connection.config_path),
        "config_file_exists": connection.config_path.is_file(),
    }
    if invocation().as_json:
        print_json(shown)
        return EXIT_SUCCESS
    click.echo(f"api_url:     {connection.api_url}  (from {connection.api_url_source})")
    token = f"set (from {connection.token_source})" if connection.token else "none"
    click.echo(f"token:       {token}")
    state = "" if connection.config_path.is_file() else "  (absent)"
    click.echo(f"config file: {connection.config_path}{state}")
    return EXIT_SUCCESS


for command in (
    repos.repos_group,
    pipelines.pipelines_group,
    pipelines.logs_command,
    pipelines.trigger_command,
    models.models_group,
    predict.predict_command,
    monitoring.predictions_command,
    monitoring.drift_command,
    monitoring.feedback_command,
    notebook_check.check_command,
    notebook_tag.tag_command,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; return its exit status (mlops_cli/exit_codes.py)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args, prog_name="mlops", standalone_mode=False, obj=Invocation())
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.UsageError as exc:  # argparse's bad-usage status 2 means "cancelled" here
        exc.show()
        return EXIT_USAGE
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_INTERRUPTED
    except (BadInput, ConfigError) as exc:
        click.echo(f"mlops: {exc}", err=True)
        return EXIT_USAGE
    except NotFound as exc:
        click.echo(f"mlops: {exc}", err=True)
        return EXIT_NOT_FOUND
    except (ApiError, StreamLost) as exc:
        click.echo(f"mlops: {exc}", err=True)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return int(code or EXIT_SUCCESS)


if __name__ == "__main__":
    sys.exit(main())
