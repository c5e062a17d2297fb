"""environment: the packages of the requirements.txt beside the notebook, cached or installed.

Runs after validate and before execute, as a phase of its own so that its time and its output
(pip's, on an install) show in the phase list and the log apart from the notebook's. Without a
requirements.txt the phase is skipped; when the kernel already has everything the file lists,
it succeeds with nothing to install. Otherwise it looks the environment up in the cache by its
key (worker/environment_cache.py): a hit is used as it is, a miss is installed with pip in the
sandbox (worker/requirements_install.py) and published to the cache for the next runs. The
kernel and the model logger then import from that folder, bound read-only into their sandbox
(`ctx.environment`).
"""

from __future__ import annotations

import sys

from mlops_core import sandbox
from mlops_core.notebook_requirements import REQUIREMENTS_FILE
from worker import environment_cache, requirements_install
from worker.phases.context import PhaseContext, PhaseFailed, PhaseSkipped


def run(ctx: PhaseContext) -> None:
    """Give the pipeline the environment its requirements.txt asks for (ctx.environment)."""
    path = requirements_install.requirements_file(ctx)
    if path is None:
        raise PhaseSkipped(f"no {REQUIREMENTS_FILE} beside the notebook: the kernel's packages")
    text, wanted = requirements_install.missing_requirements(ctx, path)
    if not wanted:
        ctx.log(f"the kernel has every package {REQUIREMENTS_FILE} lists: nothing to install")
        return
    listed = ", ".join(f"`{r}`" for r in wanted)
    index_url = ctx.settings.requirements_index_url
    if not index_url:
        raise PhaseFailed(
            f"{REQUIREMENTS_FILE} lists {listed}, but this platform installs no packages "
            "(REQUIREMENTS_INDEX_URL is empty): use only the kernel's packages "
            "(README, 'What a notebook can import')"
        )
    key = environment_cache.environment_key(
        text.encode(), requirements_install.kernel_packages().values(), index_url
    )
    root = environment_cache.cache_root(ctx.settings)
    cached = environment_cache.lookup(root, key)
    if cached is not None:
        since = environment_cache.manifest(cached).get("created_at", "an earlier run")
        ctx.log(
            f"reused the environment cached for this {REQUIREMENTS_FILE} ({listed}; key "
            f"{key[:12]}, installed {since}): nothing to install"
        )
        ctx.environment = cached
        return
    try:
        sandbox.ensure_available(ctx.settings)
    except sandbox.SandboxUnavailable as exc:
        raise PhaseFailed(f"notebooks are not run: {exc}") from None
    built = requirements_install.install(ctx, wanted)
    about = {
        "requirements": [str(r) for r in wanted],
        "python": sys.version.split()[0],
        "pipeline_id": ctx.pipeline_id,
    }
    try:
        ctx.environment = environment_cache.publish(root, key, built, about)
    except OSError as exc:
        if not built.is_dir():  # lost on the way into the cache
            raise PhaseFailed(f"the environment could not be cached in {root}: {exc}") from None
        ctx.log(
            f"the environment could not be cached in {root} ({exc}); this pipeline uses its "
            "own copy and the next one installs again",
            stream="stderr",
        )
        ctx.environment = built
        return
    ctx.log(f"environment cached (key {key[:12]}) for the next runs with this {REQUIREMENTS_FILE}")
