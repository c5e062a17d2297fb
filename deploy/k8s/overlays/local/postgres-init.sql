-- MLflow keeps its tracking store and registry in a database of its own (its tables and
-- its alembic_version would collide with the platform's).
CREATE DATABASE mlflow OWNER mlops;
