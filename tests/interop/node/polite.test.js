// Issue 19 §4: openid-client's own polling loop (pollDeviceAuthorizationGrant) never gets
// slow_down. Ten codes are polled at the 1 s interval for a minute ($INTEROP_POLITE_SECONDS),
// then five are approved from the command line and five are abandoned, never approved. Every
// answer of the token endpoint is counted by a wrapping fetch, and /metrics must agree.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as client from 'openid-client';

import { sleep, startServer } from './harness.js';

const CODES = 10;
const SECONDS = Number(process.env.INTEROP_POLITE_SECONDS ?? 60);

test(`openid-client polls ${CODES} codes for ${SECONDS} s without one slow_down`, { timeout: (SECONDS + 60) * 1000 }, async (t) => {
  // Every poll comes from 127.0.0.1 here, unlike real devices: the per-address limit is off.
  const s = await startServer({ env: { HALLPASS_LIMITS_TOKEN_PER_MINUTE: '0' } });
  t.after(() => s.stop());
  await s.addUser('alice');
  const tv = await s.addClient('TV', 'read');

  const answers = new Map();
  const count = (answer) => answers.set(answer, (answers.get(answer) ?? 0) + 1);
  const counting = async (url, options) => {
    const response = await fetch(url, options);
    if (String(url).endsWith('/oauth/token')) {
      const body = await response.clone().json().catch(() => ({}));
      count(body.error ?? (response.ok ? 'tokens' : `HTTP ${response.status}`));
    }
    return response;
  };
  const config = await client.discovery(new URL(s.base), tv.client_id, undefined, client.None(), {
    execute: [client.allowInsecureRequests],
    algorithm: 'oauth2',
    [client.customFetch]: counting,
  });

  const flows = [];
  for (let i = 0; i < CODES; i++) {
    const da = await client.initiateDeviceAuthorization(config, { scope: 'read' });
    assert.equal(da.interval, 1);
    const abandon = new AbortController();
    const polling = client.pollDeviceAuthorizationGrant(config, da, undefined, { signal: abandon.signal });
    // Settled later; a rejection before then must not go unhandled.
    polling.catch(() => {});
    flows.push({ da, abandon, polling });
  }
  const started = Date.now();
  await sleep(SECONDS * 1000);

  const approved = flows.slice(0, CODES / 2);
  const abandoned = flows.slice(CODES / 2);
  for (const f of approved) await s.approve(f.da.user_code, 'alice');
  for (const f of approved) {
    const tokens = await f.polling;
    assert.equal(tokens.scope, 'read');
    assert.ok(tokens.refresh_token);
  }
  for (const f of abandoned) f.abandon.abort();
  for (const f of abandoned) await assert.rejects(f.polling);
  const elapsed = (Date.now() - started) / 1000;

  const seen = Object.fromEntries(answers);
  t.diagnostic(`answers in ${elapsed.toFixed(1)} s: ${JSON.stringify(seen)}`);
  assert.equal(answers.get('slow_down') ?? 0, 0, JSON.stringify(seen));
  assert.equal(answers.get('tokens'), CODES / 2, JSON.stringify(seen));
  // About one poll a second per code: openid-client waits the interval after each answer.
  const pending = answers.get('authorization_pending') ?? 0;
  assert.ok(pending >= CODES * (SECONDS - 3) * 0.9, `${pending} pending answers: ${JSON.stringify(seen)}`);
  assert.ok(pending <= CODES * (elapsed + 1), `${pending} pending answers: ${JSON.stringify(seen)}`);
  assert.deepEqual(Object.keys(seen).sort(), ['authorization_pending', 'tokens']);
  // The server counted the same, and the polls in flight when the abandoned loops were
  // aborted (their answers never reached the wrapping fetch): at most one per code.
  assert.equal(await s.polls('slow_down'), 0);
  const counted = await s.polls('authorization_pending');
  assert.ok(counted >= pending && counted <= pending + abandoned.length, `server ${counted}, client ${pending}`);
});
