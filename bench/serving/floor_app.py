"""The floor: the few lines of FastAPI a data scientist writes to serve a scikit-learn model.

Models are loaded with joblib at start from FLOOR_MODELS_DIR (`<name>.joblib`); a request's rows
go through numpy straight into `predict`, on the event loop, and the labels go back as JSON: no
registry, no sandbox, no validation beyond numpy's, no logging or metrics, no thread hop. That is
the least a Python server can do per request, so the serving benchmark (bench/serving) runs it,
with `uvicorn bench.serving.floor_app:app`, as the floor every server is compared with. It is a
yardstick, not something to deploy: a malformed body answers 500.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from fastapi import FastAPI, HTTPException, Request

MODELS = {
    path.stem: joblib.load(path) for path in Path(os.environ["FLOOR_MODELS_DIR"]).glob("*.joblib")
}
app = FastAPI()


@app.post("/predict/{name}", response_model=None)
async def predict(name: str, request: Request) -> dict[str, Any]:
    model = MODELS.get(name)
    if model is None:
        raise HTTPException(404, f"no model named {name}")
    rows = np.asarray((await request.json())["data"], dtype=float)
    return {"predictions": model.predict(rows).tolist()}
