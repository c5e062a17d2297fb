"""The MLflow server's logging in the local stack (uvicorn's `--log-config`).

MLflow's own config, with two lines less of noise per event: no access log (the platform's
processes are MLflow's only clients and report their own failed calls; one line per artifact,
run and registry call, some sixty per pipeline, buried everything else), and without the
warning the basic-auth app gives at every start that it is experimental: the stack chooses it on
purpose (local_stack/credentials.py), so it is nothing to act on. uvicorn's errors and MLflow's
other records stay.

uvicorn runs as `python -m uvicorn` from the checkout (supervisord's `directory`), so it can
import this module for the filter.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

EXPERIMENTAL_NOTICE: Final = "This feature is still experimental"
AUTH_LOGGER: Final = "mlflow.server.auth"


class DropNotice(logging.Filter):
    """Drops the records whose message starts with `prefix`: one known notice, nothing else."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def log_config() -> dict[str, Any]:
    """A logging dictConfig for the MLflow server's uvicorn process."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(asctime)s %(levelprefix)s %(message)s",
                "datefmt": "%Y/%m/%d %H:%M:%S",
                "use_colors": False,
            }
        },
        "filters": {
            "experimental_notice": {
                "()": f"{__name__}.DropNotice",
                "prefix": EXPERIMENTAL_NOTICE,
            }
        },
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # A logger's filters outlive MLflow's own logging setup at import (which resets
            # the level and handlers of the loggers below "mlflow", not their filters).
            AUTH_LOGGER: {"filters": ["experimental_notice"]},
        },
    }


def render() -> str:
    return json.dumps(log_config(), indent=1)
