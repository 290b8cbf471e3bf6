#!/usr/bin/env bash
# The team's tracking server: MLflow on PostgreSQL behind MLflow's basic-auth app (docs/deployment.md).
#
#   deploy/mlflow-server.sh init    # once: the role "mlflow", its databases mlflow and mlflow_auth, basic_auth.ini
#   deploy/mlflow-server.sh start   # the server (exec: run it under systemd, or in the foreground)
#
# Settings, from the environment (e.g. `set -a && . /etc/mlflow/server.env && set +a`):
#   PGHOST, PGPORT                  the PostgreSQL server (libpq's own variables)
#   PGUSER, PGPASSWORD              init only: a role that may create roles and databases
#   MLFLOW_DB_PASSWORD              the password of the role mlflow (set by init; the server logs in with it)
#   MLFLOW_STATE_DIR                where basic_auth.ini (and, by default, the artifacts) live
#   MLFLOW_AUTH_ADMIN_PASSWORD      start: the admin's password, read on the very first start only
#   MLFLOW_FLASK_SERVER_SECRET_KEY  start: a long random string, the same on every restart and every worker
#   MLFLOW_ARTIFACTS_DESTINATION    start: default $MLFLOW_STATE_DIR/artifacts (or s3://bucket, with AWS_* set)
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000), MLFLOW_WORKERS (4)
#   MLFLOW_AUTH_CACHE_TTL_S (60)    init: how long a worker trusts a checked password (0: check every request)
# No password is put on a command line or in a file: libpq reads it from PGPASSWORD in each process's environment.
set -euo pipefail
: "${PGHOST:?}" "${PGPORT:?}" "${MLFLOW_DB_PASSWORD:?}" "${MLFLOW_STATE_DIR:?}"
database="postgresql://mlflow@$PGHOST:$PGPORT"

init() {
    : "${PGUSER:?}"
    # Identifiers are fixed; the password goes in as a psql variable, quoted by psql (:'password').
    psql -v ON_ERROR_STOP=1 -q -d postgres -v password="$MLFLOW_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE mlflow LOGIN PASSWORD %L', :'password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') \gexec
SELECT format('ALTER ROLE mlflow PASSWORD %L', :'password') \gexec
SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
SELECT 'CREATE DATABASE mlflow_auth OWNER mlflow'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow_auth') \gexec
SQL
    mkdir -p "$MLFLOW_STATE_DIR"
    # default_permission READ: a user writes only where the admin granted EDIT (docs/deployment.md, Permissions).
    cat > "$MLFLOW_STATE_DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $database/mlflow_auth
admin_username = admin
# MLflow's basic auth, and a run changed only by the account that made it (bench/store/server_auth.py).
authorization_function = bench.store.server_auth:authenticate_request_owner_only
# Each request's password check is a PBKDF2 hash, most of the server's CPU under load: checked once per
# worker per minute instead (a changed password reaches the other workers within the minute).
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_S:-60}
EOF
    echo "deploy/mlflow-server.sh: databases mlflow and mlflow_auth ready on $PGHOST:$PGPORT"
}

start() {
    : "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
    export PGUSER=mlflow PGPASSWORD="$MLFLOW_DB_PASSWORD" MLFLOW_AUTH_CONFIG_PATH="$MLFLOW_STATE_DIR/basic_auth.ini"
    # No background job runner: it serves GenAI jobs this suite does not use, with a dozen processes of its own.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
    unset MLFLOW_DB_PASSWORD
    exec python -m mlflow server --app-name basic-auth \
        --backend-store-uri "$database/mlflow" \
        --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$MLFLOW_STATE_DIR/artifacts}" \
        --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-4}"
}

case "${1:-}" in
    init) init ;;
    start) start ;;
    *) echo "usage: deploy/mlflow-server.sh init|start (settings from the environment, see the script's head)" >&2
       exit 2 ;;
esac
