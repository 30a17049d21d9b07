#!/usr/bin/env bash
# pg_start / pg_stop: a throwaway PostgreSQL cluster in a temp dir, trust auth, 127.0.0.1.
# Exports IDEM_TEST_POSTGRES_URL (a maintenance database URL the tests create databases on).

pg_start() {
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DIR=$(mktemp -d /tmp/idem-pg.XXXXXX)
  chown postgres:postgres "$PG_DIR" 2>/dev/null || true
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local as=()
  [[ $(id -u) -eq 0 ]] && as=(runuser -u postgres --)
  "${as[@]}" "$bindir/initdb" -D "$PG_DIR/data" --auth=trust -U postgres >/dev/null
  # PG_LISTEN (optional): more addresses to listen on; PG_TRUST: a CIDR trusted from there
  # (the network-namespace cluster in scripts/netns.sh reaches PostgreSQL over its bridge).
  [[ -n ${PG_TRUST:-} ]] && echo "host all all $PG_TRUST trust" >>"$PG_DIR/data/pg_hba.conf"
  "${as[@]}" "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-h 127.0.0.1${PG_LISTEN:+,$PG_LISTEN} -p $PG_PORT -k /tmp -c fsync=off -c max_connections=200" start >/dev/null
  PG_BINDIR=$bindir
  export PG_DIR PG_PORT PG_BINDIR
  export IDEM_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "postgres: started on 127.0.0.1:$PG_PORT ($PG_DIR)"
}

pg_stop() {
  [[ -n "${PG_DIR:-}" ]] || return 0
  local as=()
  [[ $(id -u) -eq 0 ]] && as=(runuser -u postgres --)
  "${as[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  echo "postgres: stopped"
}
