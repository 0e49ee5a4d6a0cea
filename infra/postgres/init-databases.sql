-- Runs once, when the Postgres volume is first initialised. POSTGRES_DB already created `prefect`;
-- MLflow's tracking server gets its own database (it creates its tables itself on first start).
CREATE DATABASE mlflow;
