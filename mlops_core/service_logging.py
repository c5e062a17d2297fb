"""What the platform's services (backend, worker, model server) write to their logs.

Their logs are read by people: one line per event, at the level it deserves. MLflow's client
writes beside that: tqdm progress bars for every artifact download, "🏃 View run ... at" lines
on stdout for every finished run, and its own stderr handler, which a Celery worker takes in at
WARNING (Celery logs a worker's stray output at that level), so MLflow's INFO notes turned into
warnings. Its HTTP client (urllib3) also warns at every retry while the tracking server starts,
retries that then succeed, and httpx notes every request the backend forwards at INFO, beside
the access log; a request that fails for good raises, and the services log that themselves.
Each service calls `quiet_libraries` once at start (the backend and the model server through
`configure_logging`); a variable set in the environment wins over these defaults.
"""

from __future__ import annotations

import logging
import os
from typing import Final

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"

# MLflow reads these when it acts (an artifact download, a run's end), not at import.
QUIET_MLFLOW_ENV: Final = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# logger → the lowest level kept from it.
QUIET_LOGGERS: Final = {"urllib3.connectionpool": logging.ERROR, "httpx": logging.WARNING}


def quiet_libraries() -> None:
    """No progress bars or run links from MLflow; its log records go where the service's go."""
    for name, value in QUIET_MLFLOW_ENV.items():
        os.environ.setdefault(name, value)
    import mlflow  # noqa: F401 -- MLflow installs its own stderr handler at import: first

    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def configure_logging() -> None:
    """A web service's logging: INFO and up, timestamped and named, unless the process (a test
    runner, say) configured logging already; then `quiet_libraries`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    quiet_libraries()
