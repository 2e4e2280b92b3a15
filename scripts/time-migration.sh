#!/usr/bin/env bash
# Times the schema migration on a large file: builds a version-1 database (the statements kept
# in src/store/sqlite/db/migrations/v1.sql) with ROWS devices (half of them pending), ROWS device
# authorizations and ROWS/2 refresh tokens, then starts the release binary on a copy and prints
# the time from start to "listening on" (migration included), the schema version reached and
# SQLite's integrity check. Needs python3 (its sqlite3 module) and `cargo build --release`.
# Usage: scripts/time-migration.sh [ROWS]   (default 1000000; the file is ~440 MiB then)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
bin=$PWD/target/release/hallpass
dir=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT

python3 - "$dir/v1.db" "$rows" <<'PY'
import os, sqlite3, sys
path, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path)
c.executescript(open("src/store/sqlite/db/migrations/v1.sql").read())
c.execute("PRAGMA journal_mode = WAL")
c.execute("INSERT INTO oauth_clients VALUES ('cli', 'CLI', NULL, '', '', NULL, 0, 0)")
c.execute("INSERT INTO users VALUES ('u1', 'ada', 'x', 0, 0, 0, 0)")
far = 4102444800000  # 2100-01-01: nothing is reaped while the server starts
c.executemany(
    "INSERT INTO devices (id, client_id, user_id, status, expires, created, updated) "
    "VALUES (?, 'cli', ?, ?, ?, ?, ?)",
    ((f"d{i:08d}", "u1" if i % 2 else None, "active" if i % 2 else "pending", far, i, i)
     for i in range(n)))
c.executemany(
    "INSERT INTO device_authorizations (id, created_at, client_id, device_id, "
    "device_code_hash, user_code, expires_at, poll_interval_seconds) "
    "VALUES (?, ?, 'cli', ?, ?, ?, ?, 5)",
    ((f"a{i:08d}", i, f"d{i:08d}", os.urandom(38), f"{i:08d}", far + i) for i in range(n)))
c.executemany(
    "INSERT INTO refresh_tokens (token_hash, device_id, family, created_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?)",
    ((os.urandom(38), f"d{i:08d}", f"f{i}", i, far) for i in range(1, n, 2)))
c.commit()
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
PY
echo "version-1 file: $(du -h "$dir/v1.db" | cut -f1), $rows devices and authorizations, $((rows / 2)) refresh tokens"
printf '[server]\nlisten = "127.0.0.1:0"\n[database]\npath = "%s"\n' "$dir/v1.db" > "$dir/c.toml"
sync
start=$(date +%s%N)
"$bin" --config "$dir/c.toml" serve > "$dir/out" 2> "$dir/err" &
pid=$!
until grep -q "listening on" "$dir/out" "$dir/err" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/err"; exit 1; }
  sleep 0.005
done
echo "start to listening, migration included: $(( ($(date +%s%N) - start) / 1000000 )) ms"
kill -TERM "$pid"; wait "$pid" || true; pid=
python3 - "$dir/v1.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print("schema version", c.execute("PRAGMA user_version").fetchone()[0],
      "· integrity_check", c.execute("PRAGMA integrity_check").fetchone()[0])
PY
