-- The schema of version 3, as that release's schema.sql created it (only these first lines are
-- new). Never edit the statements: a test migrates a file made from them and compares it with a
-- new one (src/db/migrate.rs). The current schema is /schema.sql.
--
-- hallpass database schema, version 3.
--
-- Applied in one transaction to an empty file by `db::open` (src/db/mod.rs). A database created
-- by an older binary is brought to this version by the migrations in src/db/migrate.rs.
-- Times are INTEGER milliseconds since the Unix epoch (UTC). Ids are UUID strings.
-- Bearer secrets (device codes, refresh tokens, client secrets, session ids) are stored only as
-- SHA-256 hashes (device codes and refresh tokens under secrets::token_key: their 6 bytes of
-- issue time, then the hash); passwords as salted PBKDF2-HMAC-SHA256.
--
-- Every index is written on every insert, so each one here is read by a query that needs it
-- (issue 7: a device authorization writes 9 B-trees, a refresh rotation 4). Version 2 dropped
-- three that duplicated another: see MIGRATIONS in src/db/migrate.rs.

-- 'hpas': marks the file as a hallpass database, so we never adopt someone else's SQLite file.
PRAGMA application_id = 1752195443;
PRAGMA user_version = 3;

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,          -- pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>
    is_admin      INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL
) STRICT;

CREATE TABLE oauth_clients (
    client_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    secret_hash    BLOB,                  -- NULL for public clients
    allowed_grants TEXT NOT NULL,         -- space-separated grant type URIs
    allowed_scopes TEXT NOT NULL,         -- space-separated scope tokens
    owner_user_id  TEXT REFERENCES users(id) ON DELETE CASCADE,  -- NULL: system client
    created        INTEGER NOT NULL,
    updated        INTEGER NOT NULL
) STRICT;

-- The long-lived record of a device (ZenML's "authorized device").
CREATE TABLE devices (
    id                   TEXT PRIMARY KEY,
    client_id            TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    user_id              TEXT REFERENCES users(id) ON DELETE CASCADE,  -- NULL until approved
    name                 TEXT,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'verified', 'active', 'locked')),
    trusted_device       INTEGER NOT NULL DEFAULT 0 CHECK (trusted_device IN (0, 1)),
    expires              INTEGER NOT NULL,
    os                   TEXT,
    ip_address           TEXT,
    hostname             TEXT,
    city                 TEXT,
    region               TEXT,
    country              TEXT,
    last_login           INTEGER,
    device_metadata      TEXT NOT NULL DEFAULT '{}',  -- JSON object
    failed_auth_attempts INTEGER NOT NULL DEFAULT 0,
    created              INTEGER NOT NULL,
    updated              INTEGER NOT NULL
) STRICT;
-- Pending devices have no user yet and are left out: a device authorization writes no entry
-- here. `user_id = ?` (a user's devices, and the cascade when a user is deleted) implies
-- `user_id IS NOT NULL`, so SQLite still uses it for those.
CREATE INDEX devices_user ON devices(user_id, created) WHERE user_id IS NOT NULL;
-- The device listings (devices::list: an admin's, or one filtered by client or status) in their
-- order, newest first, so a page reads its rows instead of sorting every claimed device (a
-- million devices, half claimed: 711 ms -> 0.1 ms for the first page). Partial like
-- devices_user, so a device authorization writes no entry; an approval writes one.
CREATE INDEX devices_claimed ON devices(created DESC, id) WHERE user_id IS NOT NULL;
CREATE INDEX devices_expires ON devices(expires);

-- The short-lived record of one RFC 8628 authorization (Storyden's "device authorisation").
CREATE TABLE device_authorizations (
    id                     TEXT PRIMARY KEY,
    created_at             INTEGER NOT NULL,
    client_id              TEXT NOT NULL REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    device_id              TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    device_code_hash       BLOB NOT NULL UNIQUE,
    user_code              TEXT NOT NULL UNIQUE,  -- normalized: 8 letters, no dash
    scope                  TEXT NOT NULL DEFAULT '',
    expires_at             INTEGER NOT NULL,
    poll_interval_seconds  INTEGER NOT NULL,
    last_polled_at         INTEGER,
    approved_by_account_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    approved_at            INTEGER,
    denied_at              INTEGER,
    consumed_at            INTEGER
) STRICT;
CREATE INDEX device_authorizations_device ON device_authorizations(device_id);
-- Serves the per-client cap on pending codes, the cascade from oauth_clients, and the reaper,
-- which walks it client by client (device_authorizations::delete_expired): one seek per
-- client per batch, where a second index on expires_at alone would cost every insert a write.
CREATE INDEX device_authorizations_client ON device_authorizations(client_id, expires_at);

-- A family is one device's, so revoking it finds its rows through refresh_tokens_device.
-- expires_at is created_at + refresh_token_lifetime (since version 2; version 1 capped it at the
-- device's expiry). The device's own expiry is checked at every use, and reaping a device takes
-- its tokens with it; an uncapped expiry keeps new rows at the end of refresh_tokens_expires
-- instead of one cluster per device.
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    family     TEXT NOT NULL,             -- one family per device code exchange; reuse revokes it
    scope      TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX refresh_tokens_device ON refresh_tokens(device_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);

-- Access tokens revoked before their expiry (RFC 7009), by JWT id. Introspection reports them
-- inactive; rows go once the token would have expired anyway.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX revoked_access_tokens_expires ON revoked_access_tokens(expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,            -- 'EdDSA'
    private_key BLOB NOT NULL,            -- PKCS#8 document
    public_key  BLOB NOT NULL,
    created     INTEGER NOT NULL,
    activated   INTEGER,                  -- the newest activated, unretired key signs
    retired     INTEGER                   -- still published until its last token expires
) STRICT;

CREATE TABLE sessions (
    id_hash    BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_expires ON sessions(expires_at);

-- Who approved, denied or revoked what, when and from where.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT,                     -- user id, or NULL for the command line
    action      TEXT NOT NULL,            -- e.g. 'device.approve'
    target_id   TEXT,
    ip_address  TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_events_at ON audit_events(at);
