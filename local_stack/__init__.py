"""The whole platform on one machine with no Docker: `python -m local_stack up|down|status|logs`.

supervisord runs Redis, MLflow, the backend, a Celery worker and the model server as background
processes under one data folder (MLOPS_HOME); this package plans that stack from the settings,
writes supervisord's configuration, and waits until every service answers its health check.
"""
