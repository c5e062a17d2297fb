"""The error of input the CLI cannot read (a labels or rows file, a parameter): exit status 64."""

from __future__ import annotations


class BadInput(ValueError):
    """Input the command cannot use: the message names the line or value and what is expected."""
