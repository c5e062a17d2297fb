"""Where the CLI finds the backend and its token: a flag, else the environment, else a config file.

    --api URL / --token TOKEN             on the command line (a token there is visible in
                                          `ps` and the shell's history: prefer the others)
    $MLOPS_API_URL / $API_TOKEN           the environment
    api_url = "..." / token = "..."       $MLOPS_CONFIG, else $XDG_CONFIG_HOME/mlops/config.toml
                                          (~/.config/mlops/config.toml)
    the local stack's backend             where the last `make up`/`make demo` in $MLOPS_HOME
                                          (default .mlops) started it (mlops_core/stack_state.py)
    http://127.0.0.1:8000                 otherwise

The config file is TOML. One that holds a token and that other users can read is refused, as
ssh refuses such a key: the token would be everyone's on that machine.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mlops_core.stack_state import remembered_api_url

DEFAULT_API_URL: Final = "http://127.0.0.1:8000"
API_URL_VARIABLE: Final = "MLOPS_API_URL"
TOKEN_VARIABLE: Final = "API_TOKEN"  # noqa: S105 (the variable's name)
CONFIG_VARIABLE: Final = "MLOPS_CONFIG"
HOME_VARIABLE: Final = "MLOPS_HOME"
DEFAULT_HOME: Final = Path(".mlops")
KNOWN_KEYS: Final = frozenset({"api_url", "token"})


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Connection:
    """The backend URL and token a command uses, and where each came from (for `mlops config`)."""

    api_url: str
    api_url_source: str
    token: str | None
    token_source: str | None
    config_path: Path


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """$MLOPS_CONFIG, else $XDG_CONFIG_HOME/mlops/config.toml, else ~/.config/mlops/config.toml."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_VARIABLE):
        return Path(env[CONFIG_VARIABLE]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlops" / "config.toml"


def read_config(path: Path) -> dict[str, str]:
    """The file's settings (an absent file has none); ConfigError names what is wrong."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        values = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(values) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (known: api_url, token)")
    bad = [key for key, value in values.items() if not isinstance(value, str) or not value]
    if bad:
        raise ConfigError(f"{path}: {', '.join(sorted(bad))} must be a non-empty string")
    if "token" in values and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path} holds a token and other users can read it: run `chmod 600 {path}`"
        )
    return dict(values)


def resolve(
    api_flag: str | None, token_flag: str | None, environ: Mapping[str, str] | None = None
) -> Connection:
    """Each setting from the first of flag, environment, config file (the URL then from the
    local stack, else the default)."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    file_values: dict[str, str] | None = None

    def from_file() -> dict[str, str]:
        nonlocal file_values
        if file_values is None:
            file_values = read_config(path)
        return file_values

    if api_flag:
        api_url, api_source = api_flag, "--api"
    elif env.get(API_URL_VARIABLE):
        api_url, api_source = env[API_URL_VARIABLE], f"${API_URL_VARIABLE}"
    elif "api_url" in from_file():
        api_url, api_source = from_file()["api_url"], str(path)
    elif (stack_url := _local_stack_url(env)) is not None:
        api_url, api_source = stack_url
    else:
        api_url, api_source = DEFAULT_API_URL, "default"
    token: str | None
    if token_flag:
        token, token_source = token_flag, "--token"
    elif env.get(TOKEN_VARIABLE):
        token, token_source = env[TOKEN_VARIABLE], f"${TOKEN_VARIABLE}"
    elif "token" in from_file():
        token, token_source = from_file()["token"], str(path)
    else:
        token, token_source = None, None
    return Connection(api_url.rstrip("/"), api_source, token, token_source, path)


def _local_stack_url(env: Mapping[str, str]) -> tuple[str, str] | None:
    """The backend of the local stack last started in $MLOPS_HOME, which may have moved off
    its default port (`make demo` does when 8000 is taken)."""
    home = Path(env.get(HOME_VARIABLE) or DEFAULT_HOME)
    url = remembered_api_url(home)
    return None if url is None else (url, f"the local stack in {home}")
