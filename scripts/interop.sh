#!/usr/bin/env bash
# The interop suite (issue 19): real third-party OAuth and JWT libraries against the release
# binary, each server on 127.0.0.1 and port 0, once per signing algorithm in
# tests/interop/algorithms.json. No network at test time but loopback.
#
#   Node (tests/interop/package.json + package-lock.json, `npm ci`):
#     openid-client 6 -- discovery, device flow with its own polling loop, refresh rotation,
#                        introspection, revocation, client_credentials;
#     jose 6          -- resource server: jwtVerify with createRemoteJWKSet (typ, iss, aud, alg);
#     jsonwebtoken 9 + jwks-rsa 4 -- resource server (refuses EdDSA: asserted).
#   Python (tests/interop/requirements.txt, pinned, in a venv under target/):
#     requests-oauthlib 2 + oauthlib -- device flow (DeviceClient), refresh without client_id,
#                        client_credentials; plain requests for introspection and revocation;
#     PyJWT 2         -- resource server: PyJWKClient + decode (typ, iss, aud, alg).
#   Polite polling, per client: ten codes polled for a minute at a 1 s interval (openid-client's
#   loop; a ticker like golang.org/x/oauth2's with requests-oauthlib), no slow_down.
#
# The four parts run at once (the two polite minutes overlap), each in its own process with
# its own servers; their output goes to $TARGET/interop/*.log and is printed at the end.
# Exits non-zero if any part fails.
#
# Environment:
#   CARGO_TARGET_DIR         where to build and keep the venv (default: ./target)
#   INTEROP_POLITE_SECONDS   how long the polite-polling tests poll (default 60)
#   INTEROP_BACKEND          `postgres`: every server on PostgreSQL (issue 22), on a throwaway
#                            cluster started here from Debian's server package, one database
#                            per server (its command line shares it); default: SQLite files
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
started=$(date +%s)

cargo build --release --locked --bin hallpass
export INTEROP_BIN="$target/release/hallpass"
backend=${INTEROP_BACKEND:-sqlite}
logs=$target/interop
if [ "$backend" = postgres ]; then
  logs=$target/interop-postgres
  # shellcheck source=scripts/pg-cluster.sh
  . "$root/scripts/pg-cluster.sh"
  trap pg_cluster_stop EXIT
  pg_cluster_start
  # The suite starts every server as `BIN --config FILE …`, and runs its command line with the
  # same FILE: this stand-in gives each FILE a database of its own, made on first use.
  mkdir -p "$logs"
  wrapper=$logs/hallpass
  cat >"$wrapper" <<EOF_WRAPPER
#!/usr/bin/env bash
set -euo pipefail
key=\$(printf '%s' "\${2:-}" | md5sum | cut -c1-24)
db=interop_\$key
admin=(env PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -qAt)
if [ -z "\$("\${admin[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '\$db'")" ]; then
  "\${admin[@]}" -c "CREATE DATABASE \$db" >/dev/null 2>&1 && echo "\$db" >>"$logs/databases"
fi
export HALLPASS_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/\$db
exec "$INTEROP_BIN" "\$@"
EOF_WRAPPER
  chmod +x "$wrapper"
  export INTEROP_BIN=$wrapper
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "interop: Node.js 20 or later is needed, found $(node --version)" >&2
  exit 1
fi
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)

venv=$target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

find "$logs" \( -name '*.log' -o -name databases \) -delete 2>/dev/null || true
mkdir -p "$logs"
export PYTHONDONTWRITEBYTECODE=1
pytest=("$venv/bin/python" -m pytest -p no:cacheprovider -v)

ran=$(date +%s)
declare -A pids
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
      if [ "$backend" = postgres ]; then pg_cluster_stop; fi' EXIT
(cd tests/interop && exec node --test node/flows.test.js) >"$logs/node-flows.log" 2>&1 &
pids[node-flows]=$!
(cd tests/interop && exec node --test node/polite.test.js) >"$logs/node-polite.log" 2>&1 &
pids[node-polite]=$!
(cd tests/interop && exec "${pytest[@]}" python/test_flows.py) >"$logs/python-flows.log" 2>&1 &
pids[python-flows]=$!
(cd tests/interop && exec "${pytest[@]}" -s python/test_polite.py) >"$logs/python-polite.log" 2>&1 &
pids[python-polite]=$!

failed_parts=()
for part in node-flows node-polite python-flows python-polite; do
  if ! wait "${pids[$part]}"; then
    failed_parts+=("$part")
  fi
done

passed=0
failed=0
for part in node-flows node-polite python-flows python-polite; do
  echo "===== interop: $part ====="
  cat "$logs/$part.log"
  case $part in
    node-*)
      p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$logs/$part.log" | tail -1)
      f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$logs/$part.log" | tail -1)
      ;;
    python-*)
      summary=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$logs/$part.log" | tail -1 || true)
      p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || true)
      f=0
      for n in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$summary" | grep -oE '^[0-9]+' || true); do
        f=$((f + n))
      done
      ;;
  esac
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
done

echo "===== interop ($backend): $(($(date +%s) - ran)) s for the four parts, $(($(date +%s) - started)) s in all ====="
if [ ${#failed_parts[@]} -gt 0 ]; then
  echo "interop: failed: ${failed_parts[*]}"
  # A part that died before reporting counts as one failure.
  [ "$failed" -gt 0 ] || failed=${#failed_parts[@]}
fi
echo "interop ($backend): $passed passed, $failed failed"
if [ "$backend" = postgres ]; then
  made=$(wc -l <"$logs/databases" 2>/dev/null || echo 0)
  echo "interop (postgres): the servers ran on $made databases of the throwaway cluster"
  [ "$made" -gt 0 ] || failed_parts+=(postgres)
fi
[ ${#failed_parts[@]} -eq 0 ]
