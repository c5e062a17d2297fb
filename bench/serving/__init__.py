"""Serving benchmark: our model server against the servers users would otherwise pick.

Run: .venv/bin/python -m bench.serving [--quick] [--duration 10] [--rounds 2] [--only ours,mlflow]
See bench/serving/__main__.py.
"""
