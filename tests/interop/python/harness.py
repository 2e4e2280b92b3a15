"""Runs the real hallpass binary for the Python half of the interop suite.

`hallpass --config F serve` on port 0 with a temporary database, its command line against the
same database, and /metrics. The binary is $INTEROP_BIN (scripts/interop.sh sets it to the
release build).
"""

import json
import os
import pathlib
import subprocess
import tempfile
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
BIN = os.environ.get("INTEROP_BIN", str(HERE.parents[2] / "target" / "release" / "hallpass"))

#: Every signing algorithm the suite runs against: tests/interop/algorithms.json.
ALGORITHMS = json.loads((HERE.parent / "algorithms.json").read_text())

#: The `aud` the suite's servers put in access tokens (oauth.audience).
AUDIENCE = "https://api.interop.example"

#: The password of every user the suite creates.
PASSWORD = "correct horse battery staple"

# requests-oauthlib refuses http:// unless told; the suite talks to 127.0.0.1 only.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


class Server:
    """A running server with its own temporary directory and database."""

    def __init__(self, algorithm="EdDSA", env=None):
        self.dir = tempfile.TemporaryDirectory(prefix="hallpass-interop-")
        root = pathlib.Path(self.dir.name)
        self.config = root / "hallpass.toml"
        self.config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n'
            f"[database]\npath = {json.dumps(str(root / 'hallpass.db'))}\n"
        )
        self.log_path = root / "server.log"
        child_env = dict(os.environ)
        child_env.update(
            HALLPASS_OAUTH_SIGNING_ALGORITHM=algorithm,
            HALLPASS_OAUTH_AUDIENCE=AUDIENCE,
            HALLPASS_OAUTH_POLL_INTERVAL="1s",
        )
        child_env.update(env or {})
        with open(self.log_path, "w") as log:
            self.child = subprocess.Popen(
                [BIN, "--config", str(self.config), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_env,
                text=True,
            )
        line = self.child.stdout.readline().strip()
        if not line.startswith("listening on "):
            log = self.log()
            self.stop()
            raise RuntimeError(f"no 'listening on' line, got {line!r}: {log}")
        #: `http://127.0.0.1:PORT`: also the issuer.
        self.base = line.removeprefix("listening on ")

    def url(self, path):
        return self.base + path

    def cli(self, *args, stdin=""):
        """Runs `hallpass --config F ARGS`; returns stdout, raises on failure."""
        out = subprocess.run(
            [BIN, "--config", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"hallpass {' '.join(args)}: exit {out.returncode}: {out.stderr}")
        return out.stdout

    def add_user(self, name, admin=False):
        args = ["user", "add", name, "--password-stdin"] + (["--admin"] if admin else [])
        return json.loads(self.cli(*args, stdin=PASSWORD + "\n"))

    def add_client(self, name, scope, *extra):
        """Creates a client: `{client_id, client_secret?}`."""
        return json.loads(self.cli("client", "add", "--name", name, "--scope", scope, *extra))

    def approve(self, user_code, user):
        """`hallpass device approve CODE --user NAME`."""
        self.cli("device", "approve", user_code, "--user", user)

    def polls(self, answer):
        """`hallpass_token_polls_total{answer}` from /metrics."""
        prefix = f'hallpass_token_polls_total{{answer="{answer}"}} '
        with urllib.request.urlopen(self.url("/metrics")) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(prefix):
                    return int(line[len(prefix):])
        return 0

    def log(self):
        return self.log_path.read_text()

    def stop(self):
        if self.child.poll() is None:
            self.child.terminate()
            self.child.wait(timeout=15)
        self.child.stdout.close()
        self.dir.cleanup()
