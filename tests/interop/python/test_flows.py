"""requests-oauthlib (with oauthlib's DeviceClient) as the device, PyJWT's PyJWKClient as the
resource server, against the real hallpass binary, once per signing algorithm.

The device flow, approval from the command line and from the JSON API, refresh rotation with
requests-oauthlib's OAuth2Session.refresh_token() (which sends no client_id for a public
client: issue 19 §2), introspection, revocation and client_credentials.
"""

import base64
import json
import threading
import time

import jwt
import pytest
import requests
from oauthlib.oauth2 import BackendApplicationClient, DeviceClient, OAuth2Error
from requests_oauthlib import OAuth2Session

from harness import ALGORITHMS, AUDIENCE, Server


class World:
    """A server signing with one algorithm, a user, a public device client and an API."""

    def __init__(self, algorithm):
        self.algorithm = algorithm
        self.server = Server(algorithm=algorithm)
        self.server.add_user("alice")
        self.tv = self.server.add_client("Living room TV", "read devices")["client_id"]
        svc = self.server.add_client(
            "Inventory API", "read", "--confidential", "--grant", "client_credentials"
        )
        self.api = (svc["client_id"], svc["client_secret"])
        self.meta = requests.get(self.server.url("/.well-known/oauth-authorization-server")).json()
        self.jwks = jwt.PyJWKClient(self.meta["jwks_uri"])
        self.tokens = None

    def verify(self, token, **options):
        """PyJWT as a resource server: the key from the JWKS by kid, alg, iss, aud, typ."""
        key = self.jwks.get_signing_key_from_jwt(token)
        checks = dict(
            algorithms=[self.algorithm],
            audience=AUDIENCE,
            issuer=self.server.base,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti", "client_id"]},
        )
        checks.update(options)
        decoded = jwt.decode_complete(token, key, **checks)
        # RFC 9068 §4: the resource server MUST check the type (PyJWT leaves that to us).
        assert decoded["header"]["typ"] == "at+jwt", decoded["header"]
        return decoded["payload"]

    def start(self, scope):
        r = requests.post(
            self.meta["device_authorization_endpoint"],
            data={"client_id": self.tv, "scope": scope, "device_name": "python"},
        )
        assert r.status_code == 200, r.text
        return r.json()

    def poll(self, da):
        """Polls with requests-oauthlib's fetch_token and oauthlib's DeviceClient, waiting
        the interval after each answer (RFC 8628 §3.5), until tokens come."""
        session = OAuth2Session(client=DeviceClient(self.tv))
        interval = da["interval"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(interval)
            try:
                return session.fetch_token(self.meta["token_endpoint"], device_code=da["device_code"])
            except OAuth2Error as e:
                if e.error == "slow_down":
                    interval += 5
                elif e.error != "authorization_pending":
                    raise
        raise AssertionError("no tokens in 30 s")

    def introspect(self, token):
        r = requests.post(self.meta["introspection_endpoint"], auth=self.api, data={"token": token})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module", params=ALGORITHMS)
def world(request):
    w = World(request.param)
    yield w
    w.server.stop()


def test_device_flow_approved_from_the_command_line(world):
    da = world.start("read devices")
    assert da["interval"] == 1
    assert da["verification_uri"] == world.server.url("/device")
    approver = threading.Thread(target=world.server.approve, args=(da["user_code"], "alice"))
    approver.start()
    tokens = world.poll(da)
    approver.join()
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["refresh_token"]
    # oauthlib hands the scope over as a list.
    assert sorted(tokens["scope"]) == ["devices", "read"]
    claims = world.verify(tokens["access_token"])
    assert claims["client_id"] == world.tv
    assert sorted(claims["scope"].split()) == ["devices", "read"]
    world.tokens = tokens


def test_device_flow_approved_from_the_json_api(world):
    da = world.start("read")
    # The person approves with their own token (scope `devices`), as an app would.
    r = requests.put(
        world.server.url("/api/v1/devices/verify"),
        headers={"Authorization": f"Bearer {world.tokens['access_token']}"},
        json={"user_code": da["user_code"].replace("-", "").lower()},
    )
    assert r.status_code == 200, r.text
    tokens = world.poll(da)
    assert world.verify(tokens["access_token"])["scope"] == "read"


def test_refresh_rotation_without_client_id(world):
    first = world.tokens
    # OAuth2Session.refresh_token() sends grant_type and refresh_token only: no client_id,
    # no authentication, as RFC 6749 §6 allows a public client.
    session = OAuth2Session(world.tv, token=dict(first))
    sent = []
    session.register_compliance_hook(
        "refresh_token_request", lambda url, headers, body: (sent.append(body), (url, headers, body))[1]
    )
    second = session.refresh_token(world.meta["token_endpoint"])
    assert "client_id" not in sent[0], sent
    assert second["refresh_token"] != first["refresh_token"], "rotated"
    assert world.verify(second["access_token"])["client_id"] == world.tv
    third = session.refresh_token(world.meta["token_endpoint"])
    assert third["refresh_token"] != second["refresh_token"]
    # The first token again: reuse. invalid_grant, and the whole family is revoked.
    with pytest.raises(OAuth2Error) as e:
        OAuth2Session(world.tv, token=dict(first)).refresh_token(world.meta["token_endpoint"])
    assert e.value.error == "invalid_grant"
    assert world.introspect(third["refresh_token"])["active"] is False
    assert world.introspect(third["access_token"])["active"] is False


def test_introspection(world):
    da = world.start("read")
    approver = threading.Thread(target=world.server.approve, args=(da["user_code"], "alice"))
    approver.start()
    tokens = world.poll(da)
    approver.join()
    world.tokens = tokens
    info = world.introspect(tokens["access_token"])
    claims = world.verify(tokens["access_token"])
    assert info["active"] is True
    assert info["client_id"] == world.tv
    assert info["username"] == "alice"
    assert info["scope"] == "read"
    assert (info["sub"], info["exp"], info["jti"], info["iss"]) == (
        claims["sub"],
        claims["exp"],
        claims["jti"],
        claims["iss"],
    )
    assert world.introspect(tokens["refresh_token"])["active"] is True
    assert world.introspect("not-a-token") == {"active": False}
    # Without the API's secret: 401.
    r = requests.post(world.meta["introspection_endpoint"], data={"token": tokens["access_token"], "client_id": world.tv})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"


def test_revocation(world):
    tokens = world.tokens
    revoke = world.meta["revocation_endpoint"]
    r = requests.post(revoke, data={"token": tokens["access_token"], "client_id": world.tv})
    assert r.status_code == 200, r.text
    assert world.introspect(tokens["access_token"])["active"] is False
    assert world.introspect(tokens["refresh_token"])["active"] is True
    r = requests.post(
        revoke,
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token", "client_id": world.tv},
    )
    assert r.status_code == 200, r.text
    assert world.introspect(tokens["refresh_token"])["active"] is False
    with pytest.raises(OAuth2Error) as e:
        OAuth2Session(world.tv, token=dict(tokens)).refresh_token(world.meta["token_endpoint"])
    assert e.value.error == "invalid_grant"


def test_client_credentials(world):
    client_id, secret = world.api
    # fetch_token sends the oauthlib client's scope, not the session's.
    session = OAuth2Session(client=BackendApplicationClient(client_id=client_id, scope=["read"]))
    token = session.fetch_token(world.meta["token_endpoint"], client_secret=secret)
    assert "refresh_token" not in token
    claims = world.verify(token["access_token"])
    assert claims["sub"] == client_id
    assert claims["scope"] == "read"
    # A wrong secret: invalid_client.
    with pytest.raises(OAuth2Error) as e:
        OAuth2Session(client=BackendApplicationClient(client_id=client_id)).fetch_token(
            world.meta["token_endpoint"], client_secret="wrong"
        )
    assert e.value.error == "invalid_client"
    world.service_token = token["access_token"]


def test_pyjwt_refuses_wrong_audience_issuer_algorithm_and_forgery(world):
    token = world.service_token
    world.verify(token)
    with pytest.raises(jwt.InvalidAudienceError):
        world.verify(token, audience="https://other.example")
    with pytest.raises(jwt.InvalidIssuerError):
        world.verify(token, issuer="https://other.example")
    other = "EdDSA" if world.algorithm != "EdDSA" else "ES256"
    with pytest.raises(jwt.InvalidAlgorithmError):
        world.verify(token, algorithms=[other])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "read admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        world.verify(f"{header}.{forged}.{signature}")
    # The key is the one the JWKS publishes for the header's kid, of the expected type.
    key = world.jwks.get_signing_key_from_jwt(token)
    assert key.key_id == jwt.get_unverified_header(token)["kid"]
    assert key.algorithm_name == world.algorithm
