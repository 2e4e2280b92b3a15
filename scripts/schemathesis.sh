#!/usr/bin/env bash
# Property-based check of the management API against its own OpenAPI document (issue 5).
#
# Installs schemathesis from PyPI into a venv under the cargo target directory, builds hallpass,
# starts it on a free port with a temporary database seeded with an admin user, clients and
# devices (approved, active and pending, so the device and admin routes have data), obtains an
# admin bearer token through the real device flow, and runs schemathesis against
# /api/v1/openapi.json. Fails (non-zero exit) on any 5xx, any response that contradicts the
# document (status, content type, headers, body schema) or a server that died.
#
# Environment:
#   CARGO_TARGET_DIR              where to build and keep the venv (default: ./target)
#   SCHEMATHESIS_VERSION          the PyPI version to install (default below)
#   SCHEMATHESIS_MAX_EXAMPLES     test cases per operation and phase (default 100)
#   SCHEMATHESIS_CHECKS           the checks (default below)
#   SCHEMATHESIS_KEEP             keep the temporary directory (database, logs, report)
#   SCHEMATHESIS_BACKEND          `postgres`: the server on PostgreSQL (issue 22), a throwaway
#                                 cluster started here (scripts/pg-cluster.sh); default: SQLite
# Arguments are passed on to `schemathesis run`, e.g. `scripts/schemathesis.sh --seed 42`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance,use_after_free,ensure_resource_availability}
VENV=$TARGET/schemathesis-venv
STARTED=$(date +%s)

say() { printf '\n== %s\n' "$*" >&2; }

# 1. schemathesis, in its own venv (reused when the right version is already there).
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$VERSION')" 2>/dev/null; then
    say "installing schemathesis $VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
PY=$VENV/bin/python

# 2. The binary (the OpenAPI document is compiled into it).
say "building hallpass"
(cd "$ROOT" && cargo build --locked --bin hallpass)
BIN=$TARGET/debug/hallpass

# 3. A temporary directory and configuration (the server creates the database in step 4).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hallpass-schemathesis.XXXXXX")
SERVER_PID=
BACKEND=${SCHEMATHESIS_BACKEND:-sqlite}
cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if declare -F pg_cluster_stop >/dev/null; then pg_cluster_stop; fi
    if [ -n "${SCHEMATHESIS_KEEP:-}" ] || [ "$status" -ne 0 ]; then
        echo "kept $WORK (server.log, schemathesis.log, report/)" >&2
    else
        rm -rf "$WORK"
    fi
    echo "schemathesis.sh: $(( $(date +%s) - STARTED )) s, exit $status" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CONFIG=$WORK/hallpass.toml
cat > "$CONFIG" <<EOF
[server]
listen = "127.0.0.1:0"
[database]
path = "$WORK/hallpass.db"
[oauth]
poll_interval = "1s"
[limits]
# Every wrong user code schemathesis invents would otherwise use up the guessing limit and
# leave the verify route answering 429 (documented, but it hides the route's other answers).
code_entry_failures_per_minute = 0
EOF
if [ "$BACKEND" = postgres ]; then
    # shellcheck source=scripts/pg-cluster.sh
    . "$ROOT/scripts/pg-cluster.sh"
    pg_cluster_start
    pg_cluster_sql "CREATE DATABASE schemathesis" >/dev/null
    # The server and every command below use it (the variable wins over database.path).
    export HALLPASS_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/schemathesis"
    say "on PostgreSQL: $HALLPASS_DATABASE_URL"
fi
hp() { "$BIN" --config "$CONFIG" "$@"; }
json_field() { "$PY" -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

# 4. The server, on a free port, then the seed.
# The binary itself, not a function: $! must be the server's pid.
"$BIN" --config "$CONFIG" serve > "$WORK/stdout" 2> "$WORK/server.log" &
SERVER_PID=$!
URL=
for _ in $(seq 100); do
    URL=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$WORK/stdout" | head -n 1)
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "the server did not start" >&2; exit 1; }
    sleep 0.1
done
[ -n "$URL" ] || { echo "no 'listening on' line from the server" >&2; exit 1; }
say "server at $URL (pid $SERVER_PID)"

# Seeded once the server has created the database (admin commands never create one).
say "seeding the database (${HALLPASS_DATABASE_URL:-$WORK/hallpass.db})"
echo 'schemathesis-admin-password' | hp user add admin --admin --password-stdin >/dev/null
echo 'schemathesis-user-password' | hp user add alice --password-stdin >/dev/null
CLIENT=$(hp client add --name "schemathesis" --scope "devices admin" | json_field client_id)
hp client add --name "service" --confidential --grant client_credentials --scope "devices" >/dev/null

# Device flow: ask for a code, approve it from the command line, exchange it.
start_device() { # NAME SCOPE -> JSON of /oauth/device_authorization
    curl -fsS --data-urlencode "client_id=$CLIENT" --data-urlencode "scope=$2" \
        --data-urlencode "device_name=$1" --data-urlencode "os=linux" \
        --data-urlencode "hostname=$1.local" "$URL/oauth/device_authorization"
}
exchange() { # DEVICE_CODE -> JSON of /oauth/token
    curl -fsS --data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:device_code" \
        --data-urlencode "device_code=$1" --data-urlencode "client_id=$CLIENT" "$URL/oauth/token"
}

# The admin's token (its own device), a second active device of alice's, a device approved but
# not yet exchanged, and one left pending.
AUTH=$(start_device admin-cli "devices admin")
hp device approve "$(echo "$AUTH" | json_field user_code)" --user admin >/dev/null
TOKENS=$(exchange "$(echo "$AUTH" | json_field device_code)")
ACCESS=$(echo "$TOKENS" | json_field access_token)
REFRESH=$(echo "$TOKENS" | json_field refresh_token)

AUTH=$(start_device alice-laptop "devices")
hp device approve "$(echo "$AUTH" | json_field user_code)" --user alice --trusted >/dev/null
exchange "$(echo "$AUTH" | json_field device_code)" >/dev/null
AUTH=$(start_device alice-tv "devices")
hp device approve "$(echo "$AUTH" | json_field user_code)" --user alice >/dev/null
start_device pending-box "devices" >/dev/null

STATUS=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ACCESS" "$URL/api/v1/admin/users")
[ "$STATUS" = 200 ] || { echo "the admin token does not work: GET /api/v1/admin/users -> $STATUS" >&2; exit 1; }

# 5. schemathesis. The admin token goes in the Authorization header through an auth hook: the
# run deletes clients, revokes keys and locks devices, its own included, so when a request
# gets 401 the hook refreshes the token, or signs a new admin in through a new device flow, and
# schemathesis replays the request.
cat > "$WORK/hooks.py" <<'EOF'
import json
import os
import subprocess
import time

import requests
import schemathesis

URL = os.environ["HP_URL"]
CMD = [os.environ["HP_BIN"], "--config", os.environ["HP_CONFIG"]]
STATE = {"access": os.environ["HP_ACCESS"], "refresh": os.environ["HP_REFRESH"],
         "client": os.environ["HP_CLIENT"], "n": 0}
LOG = open(os.environ["HP_HOOK_LOG"], "a", buffering=1)


def works(token):
    r = requests.get(f"{URL}/api/v1/admin/users?limit=1", timeout=10,
                     headers={"Authorization": f"Bearer {token}"})
    return r.status_code == 200


def refresh():
    r = requests.post(f"{URL}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": STATE["refresh"],
        "client_id": STATE["client"]})
    if r.status_code != 200:
        return None
    body = r.json()
    STATE["refresh"] = body["refresh_token"]
    return body["access_token"]


def sign_in_again():
    STATE["n"] += 1
    name = f"reseed-{os.getpid()}-{STATE['n']}"
    subprocess.run(CMD + ["user", "add", name, "--admin", "--password-stdin"],
                   input="reseed-password\n", text=True, check=True, capture_output=True)
    out = subprocess.run(CMD + ["client", "add", "--name", name, "--scope", "devices admin"],
                         text=True, check=True, capture_output=True).stdout
    STATE["client"] = json.loads(out)["client_id"]
    r = requests.post(f"{URL}/oauth/device_authorization", timeout=10, data={
        "client_id": STATE["client"], "scope": "devices admin", "device_name": name})
    r.raise_for_status()
    auth = r.json()
    subprocess.run(CMD + ["device", "approve", auth["user_code"], "--user", name],
                   check=True, capture_output=True)
    r = requests.post(f"{URL}/oauth/token", timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": auth["device_code"], "client_id": STATE["client"]})
    r.raise_for_status()
    STATE["refresh"] = r.json()["refresh_token"]
    return r.json()["access_token"]


# Asked at most once a second (and again after a 401): the stateful phase does not replay
# requests, so a dead token must be noticed quickly.
@schemathesis.auth(refresh_interval=1)
class HallpassAdmin:
    def get(self, case, ctx):
        if works(STATE["access"]):
            return STATE["access"]
        # A revoked signing key is replaced within a second: retry a few times.
        for attempt in range(4):
            for fetch in (refresh, sign_in_again):
                try:
                    token = fetch()
                except Exception as e:
                    LOG.write(f"{time.time():.3f} {fetch.__name__} failed: {e!r}\n")
                    continue
                if token and works(token):
                    LOG.write(f"{time.time():.3f} new token by {fetch.__name__}\n")
                    STATE["access"] = token
                    return token
                LOG.write(f"{time.time():.3f} {fetch.__name__}: no working token\n")
            time.sleep(1.1)
        raise RuntimeError("could not obtain a working admin token")

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
EOF

say "running schemathesis $VERSION (max $MAX_EXAMPLES examples per operation)"
set +e
(
    cd "$WORK"
    HP_URL=$URL HP_BIN=$BIN HP_CONFIG=$CONFIG HP_ACCESS=$ACCESS HP_REFRESH=$REFRESH \
    HP_CLIENT=$CLIENT HP_HOOK_LOG=$WORK/hook.log SCHEMATHESIS_HOOKS=$WORK/hooks.py \
    timeout 900 "$VENV/bin/schemathesis" run "$URL/api/v1/openapi.json" \
        --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" \
        --generation-with-security-parameters false \
        --generation-database none \
        --request-timeout 30 \
        --report junit --report-dir "$WORK/report" \
        --no-color \
        "$@"
) 2>&1 | tee "$WORK/schemathesis.log"
RESULT=${PIPESTATUS[0]}
set -e

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the server died during the run; its log:" >&2
    tail -n 50 "$WORK/server.log" >&2
    exit 1
fi
FIVE=$(grep -c 'status=5[0-9][0-9]' "$WORK/server.log" || true)
if [ "$FIVE" != 0 ]; then
    echo "the server answered $FIVE requests with 5xx:" >&2
    grep 'status=5[0-9][0-9]' "$WORK/server.log" | head -n 20 >&2
    RESULT=1
fi
exit "$RESULT"
