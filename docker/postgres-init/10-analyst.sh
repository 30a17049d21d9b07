#!/bin/sh
# Run once by the postgres image on its first start (docker-entrypoint-initdb.d): a
# read-only login role for analysts. It may read every table and view that the owner
# (POSTGRES_USER, which runs the migrations) creates later, and its sessions are
# read-only. ANALYST_USER defaults to "analyst"; ANALYST_PASSWORD must be set.
set -eu
: "${ANALYST_PASSWORD:?set ANALYST_PASSWORD}"
psql -v ON_ERROR_STOP=1 --no-psqlrc \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v analyst="${ANALYST_USER:-analyst}" -v password="$ANALYST_PASSWORD" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"analyst" LOGIN PASSWORD :'password';
ALTER ROLE :"analyst" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"db" TO :"analyst";
GRANT USAGE ON SCHEMA public TO :"analyst";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"analyst";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"analyst";
SQL
