// Runs the real hallpass binary for the interop suite: `hallpass --config F serve` on port 0
// with a temporary database, its command line against the same database, and /metrics.
//
// The binary is $INTEROP_BIN (scripts/interop.sh sets it to the release build).

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const here = path.dirname(new URL(import.meta.url).pathname);

/** The binary under test. */
export const BIN = process.env.INTEROP_BIN ?? path.resolve(here, '../../../target/release/hallpass');

/** Every signing algorithm the suite runs against: tests/interop/algorithms.json. */
export const ALGORITHMS = JSON.parse(readFileSync(path.join(here, '../algorithms.json'), 'utf8'));

/** The `aud` the suite's servers put in access tokens (oauth.audience). */
export const AUDIENCE = 'https://api.interop.example';

/** The password of every user the suite creates. */
export const PASSWORD = 'correct horse battery staple';

/** A running server with its own temporary directory and database. */
export class Server {
  constructor(child, dir, config, base) {
    this.child = child;
    this.dir = dir;
    this.config = config;
    /** `http://127.0.0.1:PORT`: also the issuer. */
    this.base = base;
    this.exited = new Promise((resolve) => child.once('exit', resolve));
  }

  /** `base` + `p`. */
  url(p) {
    return `${this.base}${p}`;
  }

  /** Runs `hallpass --config F ...args` with `stdin`; resolves with stdout, rejects on failure. */
  cli(args, stdin = '') {
    return new Promise((resolve, reject) => {
      const child = spawn(BIN, ['--config', this.config, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.on('error', reject);
      // A command that reads no stdin (device approve) may exit before it is written: EPIPE
      // then says nothing about the command, whose exit code does.
      child.stdin.on('error', () => {});
      child.on('exit', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`hallpass ${args.join(' ')}: exit ${code}: ${err}`)),
      );
      child.stdin.end(stdin);
    });
  }

  /** Creates a user from the command line. */
  async addUser(name, admin = false) {
    const args = ['user', 'add', name, '--password-stdin', ...(admin ? ['--admin'] : [])];
    return JSON.parse(await this.cli(args, `${PASSWORD}\n`));
  }

  /** Creates a client from the command line: `{client_id, client_secret?}`. */
  async addClient(name, scope, extra = []) {
    return JSON.parse(await this.cli(['client', 'add', '--name', name, '--scope', scope, ...extra]));
  }

  /** Approves a user code from the command line as `user` (`hallpass device approve`). */
  async approve(userCode, user) {
    await this.cli(['device', 'approve', userCode, '--user', user]);
  }

  /** `hallpass_token_polls_total{answer}` from /metrics. */
  async polls(answer) {
    const text = await (await fetch(this.url('/metrics'))).text();
    const line = text.split('\n').find((l) => l.startsWith(`hallpass_token_polls_total{answer="${answer}"} `));
    return line ? Number(line.split(' ')[1]) : 0;
  }

  /** The server's log so far. */
  log() {
    return readFileSync(path.join(this.dir, 'server.log'), 'utf8');
  }

  /** SIGTERM, wait for the exit, remove the directory. */
  async stop() {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts a server signing with `algorithm`, its `aud` set to AUDIENCE, devices polling at a
 * 1 s interval, with `env` as further HALLPASS_* overrides.
 */
export async function startServer({ algorithm = 'EdDSA', env = {} } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'hallpass-interop-'));
  const config = path.join(dir, 'hallpass.toml');
  const db = path.join(dir, 'hallpass.db');
  writeFileSync(config, `[server]\nlisten = "127.0.0.1:0"\n[database]\npath = ${JSON.stringify(db)}\n`);
  const log = openSync(path.join(dir, 'server.log'), 'w');
  const child = spawn(BIN, ['--config', config, 'serve'], {
    env: {
      ...process.env,
      HALLPASS_OAUTH_SIGNING_ALGORITHM: algorithm,
      HALLPASS_OAUTH_AUDIENCE: AUDIENCE,
      HALLPASS_OAUTH_POLL_INTERVAL: '1s',
      ...env,
    },
    stdio: ['ignore', 'pipe', log],
  });
  const lines = readline.createInterface({ input: child.stdout });
  const first = await new Promise((resolve, reject) => {
    lines.once('line', resolve);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`hallpass serve exited (${code}): ${readFileSync(path.join(dir, 'server.log'), 'utf8')}`)));
  });
  const base = first.trim().replace(/^listening on /, '');
  if (base === first.trim()) throw new Error(`no "listening on" line, got ${JSON.stringify(first)}`);
  return new Server(child, dir, config, base);
}

/** Resolves after `ms`. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
