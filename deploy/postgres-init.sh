#!/bin/bash
# Runs once, when the compose PostgreSQL initialises its data directory
# (/docker-entrypoint-initdb.d). Makes the role pgcdc connects as: LOGIN REPLICATION,
# allowed to read the captured tables for the initial snapshot, and a demo table.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v pw="$REPLICATOR_PASSWORD" --username "$POSTGRES_USER" \
     --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD :'pw';
GRANT USAGE ON SCHEMA public TO replicator;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO replicator;
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
SQL
