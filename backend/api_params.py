"""Types of the path and query parameters, shared by every route that takes one.

Python integers have no upper bound but the database's do (SQLite INTEGER and PostgreSQL's
BIGINT hold 64 bits): an id past 2**63-1 reached the driver and came back as a 500. Bounding the
type once makes every such parameter a 422 whose `loc` names it, and puts the range in the
OpenAPI document. Model names are checked against what the MLflow registry can hold for the same
reason: it answers impossible names with an error, not with "not found".

Use them as the annotation (`pipeline_id: RowId`), or inside `Annotated[Int64, Query(...)]` for
query parameters: a `Query(...)` given as the default value replaces the type's bounds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from mlops_core.model_names import check_model_name

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Primary keys are `Integer` columns: 32 bits in PostgreSQL (an id past that was a 500 there).
ROW_ID_MIN = -(2**31)
ROW_ID_MAX = 2**31 - 1

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
RowId = Annotated[int, Field(ge=ROW_ID_MIN, le=ROW_ID_MAX)]
ModelName = Annotated[str, AfterValidator(check_model_name)]
