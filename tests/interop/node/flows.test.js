// openid-client 6 (the device flow, refresh, introspection, revocation, client_credentials)
// and two resource servers -- jose 6 (jwtVerify with createRemoteJWKSet) and jsonwebtoken 9
// with jwks-rsa -- against the real hallpass binary, once per signing algorithm.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as client from 'openid-client';
import * as jose from 'jose';
import jwt from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';

import { ALGORITHMS, AUDIENCE, startServer } from './harness.js';

/**
 * jsonwebtoken 9 (jws 4 underneath) knows no EdDSA: it refuses such tokens whatever the key.
 * An expected, asserted outcome: the reason hallpass's default algorithm matters (issue 19).
 */
const JSONWEBTOKEN_REFUSES = new Set(['EdDSA']);

for (const algorithm of ALGORITHMS) {
  describe(`signing with ${algorithm}`, () => {
    let s;
    /** The device's configuration: a public client. */
    let device;
    /** A confidential client (an API): introspection and client_credentials. */
    let api;
    /** The resource server's view of the JWKS (jose). */
    let jwks;
    /** Tokens from the device flow, refreshed along the way. */
    let tokens;

    before(async () => {
      s = await startServer({ algorithm });
      await s.addUser('alice');
      const tv = await s.addClient('Living room TV', 'read write');
      const svc = await s.addClient('Inventory API', 'read', [
        '--confidential',
        '--grant',
        'client_credentials',
      ]);
      const insecure = { execute: [client.allowInsecureRequests], algorithm: 'oauth2' };
      device = await client.discovery(new URL(s.base), tv.client_id, undefined, client.None(), insecure);
      api = await client.discovery(
        new URL(s.base),
        svc.client_id,
        undefined,
        client.ClientSecretBasic(svc.client_secret),
        insecure,
      );
      jwks = jose.createRemoteJWKSet(new URL(device.serverMetadata().jwks_uri));
    });

    after(async () => {
      await s?.stop();
    });

    /** jose as a resource server: signature from the JWKS, typ, iss, aud, the algorithm. */
    const verify = (token, options = {}) =>
      jose.jwtVerify(token, jwks, {
        issuer: s.base,
        audience: AUDIENCE,
        typ: 'at+jwt',
        algorithms: [algorithm],
        requiredClaims: ['exp', 'iat', 'sub', 'client_id', 'jti'],
        ...options,
      });

    test('discovery (RFC 8414) names every endpoint', () => {
      const m = device.serverMetadata();
      assert.equal(m.issuer, s.base);
      assert.equal(m.device_authorization_endpoint, s.url('/oauth/device_authorization'));
      assert.equal(m.token_endpoint, s.url('/oauth/token'));
      assert.equal(m.introspection_endpoint, s.url('/oauth/introspect'));
      assert.equal(m.revocation_endpoint, s.url('/oauth/revoke'));
      assert.equal(m.jwks_uri, s.url('/oauth/jwks'));
    });

    test('device flow: openid-client polls, the command line approves', async () => {
      const da = await client.initiateDeviceAuthorization(device, { scope: 'read write' });
      assert.match(da.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
      assert.equal(da.verification_uri, s.url('/device'));
      assert.equal(da.interval, 1);
      const polling = client.pollDeviceAuthorizationGrant(device, da);
      await s.approve(da.user_code, 'alice');
      tokens = await polling;
      assert.equal(tokens.token_type.toLowerCase(), 'bearer');
      assert.equal(tokens.scope, 'read write');
      assert.ok(tokens.refresh_token);
      assert.ok(tokens.expiresIn() > 0);
      const { payload, protectedHeader } = await verify(tokens.access_token);
      assert.equal(protectedHeader.alg, algorithm);
      assert.equal(protectedHeader.typ, 'at+jwt');
      assert.equal(payload.client_id, device.clientMetadata().client_id);
      assert.equal(payload.scope, 'read write');
    });

    test('refresh rotates the refresh token; the old one again revokes the family', async () => {
      const first = tokens;
      const second = await client.refreshTokenGrant(device, first.refresh_token);
      assert.notEqual(second.refresh_token, first.refresh_token, 'rotated');
      assert.notEqual(second.access_token, first.access_token);
      const { payload } = await verify(second.access_token);
      assert.equal(payload.scope, 'read write');
      const third = await client.refreshTokenGrant(device, second.refresh_token, { scope: 'read' });
      assert.equal(third.scope, 'read', 'a narrower scope for this access token');
      assert.equal((await verify(third.access_token)).payload.scope, 'read');
      // Reuse of a rotated token: invalid_grant, and the newest token dies with the family.
      await assert.rejects(client.refreshTokenGrant(device, first.refresh_token), (e) => {
        assert.ok(e instanceof client.ResponseBodyError, String(e));
        assert.equal(e.error, 'invalid_grant');
        return true;
      });
      await assert.rejects(client.refreshTokenGrant(device, third.refresh_token), { error: 'invalid_grant' });
      assert.equal((await client.tokenIntrospection(api, third.refresh_token)).active, false);
      assert.equal((await client.tokenIntrospection(api, third.access_token)).active, false);
    });

    test('introspection (RFC 7662) by a confidential client', async () => {
      const da = await client.initiateDeviceAuthorization(device, { scope: 'read' });
      const polling = client.pollDeviceAuthorizationGrant(device, da);
      await s.approve(da.user_code, 'alice');
      tokens = await polling;
      const info = await client.tokenIntrospection(api, tokens.access_token);
      assert.equal(info.active, true);
      assert.equal(info.client_id, device.clientMetadata().client_id);
      assert.equal(info.scope, 'read');
      assert.equal(info.username, 'alice');
      assert.equal(info.iss, s.base);
      const { payload } = await verify(tokens.access_token);
      assert.equal(info.sub, payload.sub);
      assert.equal(info.exp, payload.exp);
      assert.equal(info.jti, payload.jti);
      assert.equal((await client.tokenIntrospection(api, tokens.refresh_token)).active, true);
      assert.equal((await client.tokenIntrospection(api, 'not-a-token')).active, false);
      // A public client may not introspect: 401 invalid_client, with a Basic challenge.
      const refused = await client.tokenIntrospection(device, tokens.access_token).then(
        () => assert.fail('a public client introspected'),
        (e) => e,
      );
      assert.ok(refused instanceof client.WWWAuthenticateChallengeError, String(refused));
      assert.equal(refused.status, 401);
      assert.equal(refused.cause[0].scheme, 'basic');
      assert.equal((await refused.response.json()).error, 'invalid_client');
    });

    test('revocation (RFC 7009) by the public client', async () => {
      await client.tokenRevocation(device, tokens.access_token);
      assert.equal((await client.tokenIntrospection(api, tokens.access_token)).active, false);
      assert.equal((await client.tokenIntrospection(api, tokens.refresh_token)).active, true);
      await client.tokenRevocation(device, tokens.refresh_token, { token_type_hint: 'refresh_token' });
      assert.equal((await client.tokenIntrospection(api, tokens.refresh_token)).active, false);
      await assert.rejects(client.refreshTokenGrant(device, tokens.refresh_token), { error: 'invalid_grant' });
      // Unknown tokens: 200 all the same (RFC 7009 §2.2).
      await client.tokenRevocation(device, 'not-a-token');
    });

    test('client_credentials (RFC 6749 §4.4)', async () => {
      const t = await client.clientCredentialsGrant(api, { scope: 'read' });
      assert.equal(t.scope, 'read');
      assert.equal(t.refresh_token, undefined, 'no refresh token (§4.4.3)');
      const { payload } = await verify(t.access_token);
      assert.equal(payload.sub, api.clientMetadata().client_id);
      assert.equal((await client.tokenIntrospection(api, t.access_token)).active, true);
      await assert.rejects(client.clientCredentialsGrant(device, { scope: 'read' }), (e) => {
        assert.ok(['unauthorized_client', 'invalid_client'].includes(e.error), String(e));
        return true;
      });
    });

    test('jose refuses a wrong audience, issuer, typ or algorithm, and a forged payload', async () => {
      const t = await client.clientCredentialsGrant(api, { scope: 'read' });
      await verify(t.access_token);
      await assert.rejects(verify(t.access_token, { audience: 'https://other.example' }), {
        code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
        claim: 'aud',
      });
      await assert.rejects(verify(t.access_token, { issuer: 'https://other.example' }), {
        code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
        claim: 'iss',
      });
      await assert.rejects(verify(t.access_token, { typ: 'JWT' }), {
        code: 'ERR_JWT_CLAIM_VALIDATION_FAILED',
        claim: 'typ',
      });
      const other = algorithm === 'ES256' ? 'EdDSA' : 'ES256';
      await assert.rejects(verify(t.access_token, { algorithms: [other] }), { code: 'ERR_JOSE_ALG_NOT_ALLOWED' });
      const [h, p, sig] = t.access_token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url'));
      const forged = Buffer.from(JSON.stringify({ ...claims, scope: 'read write' })).toString('base64url');
      await assert.rejects(verify(`${h}.${forged}.${sig}`), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    });

    test(`jsonwebtoken 9 + jwks-rsa ${JSONWEBTOKEN_REFUSES.has(algorithm) ? 'refuse' : 'verify'} the token`, async () => {
      const t = await client.clientCredentialsGrant(api, { scope: 'read' });
      const keys = jwksRsa({ jwksUri: device.serverMetadata().jwks_uri });
      const { header } = jwt.decode(t.access_token, { complete: true });
      assert.equal(header.typ, 'at+jwt');
      const key = await keys.getSigningKey(header.kid);
      assert.equal(key.alg, algorithm, 'jwks-rsa reads the key');
      const options = { algorithms: [algorithm], issuer: s.base, audience: AUDIENCE };
      if (JSONWEBTOKEN_REFUSES.has(algorithm)) {
        // Asked for EdDSA, it does not know the key; left to choose, it knows no such alg.
        assert.throws(() => jwt.verify(t.access_token, key.getPublicKey(), options), {
          message: 'Unknown key type "ed25519".',
        });
        const { algorithms: _, ...unpinned } = options;
        assert.throws(() => jwt.verify(t.access_token, key.getPublicKey(), unpinned), {
          name: 'JsonWebTokenError',
          message: 'invalid algorithm',
        });
      } else {
        const claims = jwt.verify(t.access_token, key.getPublicKey(), options);
        assert.equal(claims.aud, AUDIENCE);
        assert.equal(claims.client_id, api.clientMetadata().client_id);
        assert.throws(() => jwt.verify(t.access_token, key.getPublicKey(), { ...options, audience: 'x' }), {
          name: 'JsonWebTokenError',
        });
      }
    });
  });
}
