# Sourced by scripts/interop.sh and scripts/schemathesis.sh: a throwaway PostgreSQL cluster for
# their PostgreSQL runs (issue 22), started from Debian's server package as tests/support/pg.rs
# starts one for the Rust tests: as the `postgres` user when run as root, on a free loopback
# port, with nothing kept (fsync off). Not meant for anything that must survive.
#
#   pg_cluster_start     sets PG_BIN, PG_DIR and PG_PORT, or fails saying what is missing
#   pg_cluster_sql SQL   runs SQL as the superuser on the `postgres` database (psql -qAt)
#   pg_cluster_stop      stops the cluster and removes its files

pg_cluster_start() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$PG_BIN" ]; then
    echo "a PostgreSQL run needs Debian's postgresql package (initdb, postgres)" >&2
    return 1
  fi
  PG_DIR=$(mktemp -d /tmp/hallpass-pg-XXXXXX)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$PG_DIR"
    PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --reset-env --)
  fi
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C \
    --no-sync >/dev/null
  PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -o \
    "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_DIR \
     -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
    start >/dev/null
}

pg_cluster_sql() {
  env PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -qAt -c "$1"
}

pg_cluster_stop() {
  if [ -n "${PG_DIR:-}" ]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=
  fi
}
