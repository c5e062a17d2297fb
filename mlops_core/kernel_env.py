"""The environment given to code from a pushed repository: an allow-list, not a deny-list.

The worker holds the platform's secrets (GitHub token, webhook secret, API token, encryption
key, database and Redis URLs with their passwords). A notebook is untrusted code, so its kernel
and the process that unpickles its model start from an empty environment plus a few harmless
variables, never from a copy of the worker's with secrets removed: a secret added tomorrow under
a new name cannot leak by default. HOME points at the pipeline's own folder, so the worker
user's ~/.netrc, ~/.git-credentials or cloud credentials are not in reach either.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from mlops_core.settings import Settings

# Variables a kernel may need to behave like a normal Python session; none holds a secret.
SAFE_NAMES: tuple[str, ...] = (
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "NO_PROXY",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH)", re.IGNORECASE)
# The platform's own variables that carry secrets or reach its stores (never given to a notebook).
PLATFORM_SECRETS: tuple[str, ...] = (
    "GITHUB_TOKEN",
    "GITHUB_WEBHOOK_SECRET",
    "API_TOKEN",
    "API_TOKENS",
    "API_READ_TOKEN",
    "PREDICT_TOKEN",
    "METRICS_TOKEN",
    "ENCRYPTION_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
)
_USERINFO = re.compile(r"//[^/@]*@")


def secret_names(settings: Settings) -> set[str]:
    """Names of the worker's environment that must not reach untrusted code."""
    return {*PLATFORM_SECRETS, *settings.extra_secret_env}


def is_secret_name(name: str, settings: Settings) -> bool:
    """Whether a variable name is a platform secret or looks like one."""
    return name in secret_names(settings) or bool(SECRET_NAME.search(name))


def kernel_environment(
    settings: Settings,
    *,
    home: Path,
    extra: Mapping[str, str],
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment of a notebook kernel (or model-loading child) for one pipeline.

    `extra` carries what the platform injects (MLflow URI and run id, pipeline id, ...).
    """
    source = os.environ if source is None else source
    env: dict[str, str] = {}
    for name in (*SAFE_NAMES, *settings.kernel_env_passthrough):
        value = source.get(name)
        if value is None or is_secret_name(name, settings):
            continue
        if "PROXY" in name.upper() and _USERINFO.search(value):
            continue  # a proxy URL with user:password@ is a credential
        env[name] = value
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, "/usr/local/bin", "/usr/bin", "/bin"])
    env["HOME"] = str(home)
    env["JUPYTER_RUNTIME_DIR"] = str(home / ".jupyter-runtime")
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    # tqdm (imported by MLflow) warns about missing Jupyter widgets in every kernel: noise in
    # a pipeline log, where no widget can render anyway.
    env["PYTHONWARNINGS"] = "ignore:IProgress not found"
    env.update(extra)
    return env


def git_environment(settings: Settings, source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for git: the worker's own (so the user's git setup applies), minus secrets.

    Git needs HOME, proxies, GIT_* and SSH settings; it never needs the platform's secrets.
    """
    source = os.environ if source is None else source
    blocked = secret_names(settings)
    env = {name: value for name, value in source.items() if name not in blocked}
    env["GIT_TERMINAL_PROMPT"] = "0"  # fail on missing credentials instead of waiting for a tty
    return env
