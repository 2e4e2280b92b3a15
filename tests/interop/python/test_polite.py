"""Issue 19 §1 and §4: a client polling on a ticker, as golang.org/x/oauth2 does, never gets
slow_down.

Ten codes are polled at the 1 s interval for a minute ($INTEROP_POLITE_SECONDS) with
requests-oauthlib's fetch_token and oauthlib's DeviceClient, each on a ticker: a poll every
`interval` on the clock, not `interval` after the previous answer, so a poll that arrives late
makes the next gap short. Then five are approved through the JSON API and five are abandoned,
never approved. Every answer is counted here, and /metrics must agree.
"""

import collections
import os
import threading
import time

import requests
from oauthlib.oauth2 import DeviceClient, OAuth2Error
from requests_oauthlib import OAuth2Session

from harness import Server

CODES = 10
SECONDS = float(os.environ.get("INTEROP_POLITE_SECONDS", "60"))


def poll_like_x_oauth2(token_url, client_id, da, abandon, count):
    """golang.org/x/oauth2's Config.DeviceAccessToken (deviceauth.go): a time.Ticker of
    `interval`; each tick sends one poll; slow_down adds 5 s and resets the ticker; a tick
    missed while a poll was in flight is dropped, as a Ticker does. Returns the tokens, or None
    once `abandon` is set."""
    session = OAuth2Session(client=DeviceClient(client_id))
    interval = da["interval"]
    tick = time.monotonic() + interval
    while True:
        time.sleep(max(0.0, tick - time.monotonic()))
        if abandon.is_set():
            return None
        try:
            token = session.fetch_token(token_url, device_code=da["device_code"])
        except OAuth2Error as e:
            count(e.error)
            if e.error == "slow_down":
                interval += 5
                tick = time.monotonic() + interval
                continue
            if e.error != "authorization_pending":
                raise
        else:
            count("tokens")
            return token
        tick += interval
        while tick <= time.monotonic():
            tick += interval


def test_a_ticker_client_polls_ten_codes_for_a_minute_without_one_slow_down():
    # Every poll comes from 127.0.0.1 here, unlike real devices: the per-address limit is off.
    server = Server(env={"HALLPASS_LIMITS_TOKEN_PER_MINUTE": "0"})
    try:
        server.add_user("alice")
        tv = server.add_client("TV", "read devices")["client_id"]
        token_url = server.url("/oauth/token")

        def start(scope):
            r = requests.post(
                server.url("/oauth/device_authorization"), data={"client_id": tv, "scope": scope}
            )
            assert r.status_code == 200, r.text
            return r.json()

        # Alice's own token (scope `devices`) approves codes through the API later.
        answers = collections.Counter()
        lock = threading.Lock()

        def count(answer):
            with lock:
                answers[answer] += 1

        first = start("devices")
        server.approve(first["user_code"], "alice")
        alice = poll_like_x_oauth2(token_url, tv, first, threading.Event(), count)
        answers.clear()
        before = server.polls("authorization_pending")

        flows = []
        for _ in range(CODES):
            da = start("read")
            assert da["interval"] == 1
            flow = {"da": da, "abandon": threading.Event(), "tokens": None}

            def run(flow=flow):
                flow["tokens"] = poll_like_x_oauth2(token_url, tv, flow["da"], flow["abandon"], count)

            flow["thread"] = threading.Thread(target=run)
            flow["thread"].start()
            flows.append(flow)
        started = time.monotonic()
        time.sleep(SECONDS)

        approved, abandoned = flows[: CODES // 2], flows[CODES // 2 :]
        for f in approved:
            r = requests.put(
                server.url("/api/v1/devices/verify"),
                headers={"Authorization": f"Bearer {alice['access_token']}"},
                json={"user_code": f["da"]["user_code"]},
            )
            assert r.status_code == 200, r.text
        for f in abandoned:
            f["abandon"].set()
        for f in flows:
            f["thread"].join(timeout=30)
            assert not f["thread"].is_alive()
        elapsed = time.monotonic() - started

        print(f"answers in {elapsed:.1f} s: {dict(answers)}")
        assert answers["slow_down"] == 0, dict(answers)
        assert all(f["tokens"] and f["tokens"]["refresh_token"] for f in approved)
        assert all(f["tokens"] is None for f in abandoned)
        assert answers["tokens"] == CODES // 2
        pending = answers["authorization_pending"]
        assert CODES * (SECONDS - 3) * 0.9 <= pending <= CODES * (elapsed + 1), dict(answers)
        assert set(answers) == {"authorization_pending", "tokens"}, dict(answers)
        # The server counted the same.
        assert server.polls("slow_down") == 0
        assert server.polls("authorization_pending") - before == pending
    finally:
        server.stop()
