#!/bin/bash
# The platform's roles and databases, created once by the postgres image's entrypoint on an empty
# data directory (/docker-entrypoint-initdb.d). Passwords come from the environment (the user's
# Secret `postgres-credentials`) and reach the server as psql variables through stdin: never in a
# command line or a file.
set -euo pipefail

for var in MLFLOW_DB_PASSWORD PREFECT_DB_PASSWORD FRAUD_DB_PASSWORD; do
    if [[ -z ${!var:-} ]]; then
        echo "init-databases.sh: $var is empty: set its key in the Secret postgres-credentials" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v prefect_pw="$PREFECT_DB_PASSWORD" \
    -v fraud_pw="$FRAUD_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE ROLE fraud LOGIN PASSWORD :'fraud_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE prefect OWNER prefect;
CREATE DATABASE predictions OWNER fraud;
-- Only the owner (and the superuser) may connect to each database.
REVOKE CONNECT ON DATABASE mlflow, mlflow_auth, prefect, predictions FROM PUBLIC;
SQL

echo "init-databases.sh: roles mlflow, prefect, fraud and their databases created"
