"""Entry points run in child processes with the kernel's secret-free environment.

Everything here handles what a pushed notebook produced (its cells, its pickled model), so it
runs outside the Celery worker's process and environment.
"""
