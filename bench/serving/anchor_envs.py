"""Virtualenvs for the anchor servers, made once with uv under a cache folder and reused.

An anchor (Seldon MLServer) brings dependencies that do not fit our lock, so it gets its own
environment, pinned to our scikit-learn and numpy: every server then runs the same model code
and only the serving around it differs. The folder's name carries a hash of the requirements
and the Python version, so changing either builds a new environment beside the old one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import sklearn

UV = Path(sys.executable).parent / "uv"
DONE_MARK = ".installed"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/notebook-mlops/bench (~/.cache when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "notebook-mlops" / "bench"


def same_model_stack() -> list[str]:
    """Pins that make an anchor predict with exactly our scikit-learn and numpy."""
    return [f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}"]


def anchor_bin(cache_dir: Path, name: str, requirements: list[str]) -> Path:
    """The `bin` folder of an environment holding `requirements`, built on first use."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    env = cache_dir / f"{name}-{key}"
    if not (env / DONE_MARK).exists():
        shutil.rmtree(env, ignore_errors=True)
        print(f"installing {name} into {env} ...", flush=True)
        subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, env], check=True)
        subprocess.run(
            [UV, "pip", "install", "--quiet", "--python", env / "bin" / "python", *requirements],
            check=True,
        )
        (env / DONE_MARK).write_text("\n".join(requirements) + "\n")
    return env / "bin"
