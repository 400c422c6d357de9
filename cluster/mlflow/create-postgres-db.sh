#!/usr/bin/env bash
# Create the PostgreSQL role and databases of the MLflow tracking server, for the plain-VM setup
# (mlflow-server.service) or a managed database. On Kubernetes, postgres.yaml does this itself.
#
#   sudo -u postgres env MLFLOW_DB_PASSWORD="$(sudo cat /etc/meta-study/mlflow-db-password)" \
#       bash -s < cluster/mlflow/create-postgres-db.sh
#
# (`bash -s <` because the postgres user usually cannot read a checkout in someone's home.)
# Creates role mlflow (LOGIN) and the databases mlflow (runs, params, metrics) and mlflow_auth
# (users and permissions of MLflow's basic-auth app), both owned by mlflow, and sets the role's
# password from $MLFLOW_DB_PASSWORD (read from the environment inside psql, so it is never on a
# command line). Idempotent: a rerun only resets the password. psql connects as usual (PGHOST,
# PGPORT, PGUSER: a superuser, or a role with CREATEROLE and CREATEDB).
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD to the password for role mlflow}"

psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -d "${PGDATABASE:-postgres}" <<'SQL'
\set db_password `printenv MLFLOW_DB_PASSWORD`
SELECT 'CREATE ROLE mlflow LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') \gexec
SELECT format('ALTER ROLE mlflow PASSWORD %L', :'db_password') \gexec
SELECT format('CREATE DATABASE %I OWNER mlflow', d)
  FROM unnest(ARRAY['mlflow', 'mlflow_auth']) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d) \gexec
SQL
echo "create-postgres-db: role mlflow and databases mlflow, mlflow_auth are ready" >&2
