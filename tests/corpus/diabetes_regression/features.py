"""Feature helpers for the diabetes notebooks."""

import numpy as np
import pandas as pd


def add_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """BMI x blood pressure, and the triglycerides level itself (s5 is its log)."""
    out = df.copy()
    out["bmi_bp"] = out["bmi"] * out["bp"]
    out["s5_exp"] = np.exp(out["s5"])
    return out
