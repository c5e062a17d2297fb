"""The training rows a notebook saved to REFERENCE_DATA_PATH, kept with its model version.

Optional for a notebook: `X_train.to_csv(REFERENCE_DATA_PATH, index=False)` in the export
cell. The file was written by sandboxed code, so it is opened without following links and
only when it is a plain file, and parsed as CSV (never unpickled). A sample of at most
REFERENCE_MAX_ROWS rows is stored in the database for the drift check (backend/drift.py) and
the file is logged as an artifact of the pipeline's run. A file that cannot be read costs the
version its training reference (the drift check then uses its first logged predictions), never
the pipeline.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd

from mlops_core.database import session_scope
from mlops_core.sandbox import open_written
from mlops_core.schema import ModelReference
from worker.phases.context import PhaseContext

ARTIFACT_PATH = "reference"
SAMPLE_SEED = 0
REFERENCE_HINT = "write it with X_train.to_csv(REFERENCE_DATA_PATH, index=False)"


def read_reference(content: bytes, max_rows: int) -> list[dict[str, Any]]:
    """Rows of a CSV with a header as dicts (NaN → None), sampled down to `max_rows`."""
    frame = pd.read_csv(io.BytesIO(content))
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=SAMPLE_SEED)
    frame.columns = [str(name) for name in frame.columns]
    rows = frame.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in rows
    ]


def keep(ctx: PhaseContext) -> None:
    """Store the reference of the version just registered, if the notebook saved one."""
    path = ctx.reference_data_path
    stream = open_written(path)
    if stream is None:
        return
    assert ctx.contract is not None and ctx.model_version is not None
    with stream:
        content = stream.read()
    try:
        rows = read_reference(content, ctx.settings.reference_max_rows)
    except Exception as exc:  # any CSV problem: the drift check falls back, the run goes on
        ctx.log(f"training reference not kept: {REFERENCE_HINT} ({type(exc).__name__}: {exc})")
        return
    if not rows:
        ctx.log(f"training reference not kept: the file has no rows ({REFERENCE_HINT})")
        return
    with session_scope(ctx.settings.database_url) as session:
        session.merge(
            ModelReference(
                model_name=ctx.contract.model_name, model_version=ctx.model_version, rows=rows
            )
        )
    if ctx.mlflow_run_id is not None:
        copy = ctx.work_dir / "reference-upload" / "reference.csv"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(content)
        ctx.mlflow.log_artifact(ctx.mlflow_run_id, str(copy), ARTIFACT_PATH)
    ctx.log(f"training reference kept: {len(rows)} rows of {len(rows[0])} columns for drift")
