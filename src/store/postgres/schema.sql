-- hallpass database schema for PostgreSQL (14 or later), version 4.
--
-- The PostgreSQL dialect of schema.sql (SQLite) at the same version: the same tables, columns,
-- constraints and indexes, so a database moves between them row for row (`hallpass
-- migrate-db`), followed by what several instances sharing one database need and one SQLite
-- file did not (the coordination tables at the end). Applied in one transaction, under an
-- advisory lock, by src/postgres/schema.rs; later versions add migrations there, numbered as
-- SQLite's are.
--
-- Types: times are BIGINT milliseconds since the Unix epoch (UTC), written by the instance;
-- ids are TEXT (UUID strings) with COLLATE "C", so that ties in ORDER BY ... id break as in
-- SQLite (bytewise) whatever the database's locale; hashes and key material are BYTEA; flags
-- are BOOLEAN (SQLite: INTEGER 0/1). device_metadata and audit detail stay TEXT holding JSON:
-- hallpass checks it before storing and never queries inside it, and TEXT keeps it byte for
-- byte as written (JSONB would reorder keys and drop duplicates, so a moved database could
-- not be verified against its source).
--
-- The table is found through the connection's search_path (by default `public`): to share a
-- database with other applications, give hallpass its own schema and role, e.g.
-- `CREATE SCHEMA hallpass AUTHORIZATION hallpass` (a role's search_path starts with a schema
-- named after it).

-- Marks the database as hallpass's and holds its schema version (SQLite: PRAGMA
-- application_id and user_version). One row.
CREATE TABLE hallpass_schema (
    singleton   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    application TEXT NOT NULL CHECK (application = 'hallpass'),
    version     INTEGER NOT NULL,
    created     BIGINT NOT NULL
);
INSERT INTO hallpass_schema (application, version, created)
    VALUES ('hallpass', 4, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);

-- SQLite's COLLATE NOCASE folds A-Z only; lower() would fold by the database's locale (É to é
-- in most), making two users of a SQLite file collide here. This folds exactly as NOCASE.
CREATE FUNCTION ascii_fold(t TEXT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN pg_catalog.translate(t, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');

CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    username      TEXT NOT NULL,          -- unique as ascii_fold(username): see users_username
    password_hash TEXT NOT NULL,          -- pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created       BIGINT NOT NULL,
    updated       BIGINT NOT NULL
);
-- SQLite's `username TEXT UNIQUE COLLATE NOCASE`: look users up by ascii_fold(username).
CREATE UNIQUE INDEX users_username ON users (ascii_fold(username));

CREATE TABLE oauth_clients (
    client_id         TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT NOT NULL,
    secret_hash       BYTEA,              -- NULL for public clients
    allowed_grants    TEXT NOT NULL,      -- space-separated grant type URIs
    allowed_scopes    TEXT NOT NULL,      -- space-separated scope tokens
    owner_user_id     TEXT COLLATE "C" REFERENCES users(id) ON DELETE CASCADE,  -- NULL: system
    created           BIGINT NOT NULL,
    updated           BIGINT NOT NULL,
    signing_algorithm TEXT,               -- 'RS256', 'ES256', 'EdDSA'; NULL: the server's
    audience          TEXT,               -- NULL: oauth.audience, else the issuer URL
    allowed_resources TEXT NOT NULL DEFAULT ''
);

CREATE TABLE devices (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    client_id            TEXT COLLATE "C" NOT NULL
                             REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    user_id              TEXT COLLATE "C" REFERENCES users(id) ON DELETE CASCADE,
    name                 TEXT,
    status               TEXT NOT NULL
                             CHECK (status IN ('pending', 'verified', 'active', 'locked')),
    trusted_device       BOOLEAN NOT NULL DEFAULT FALSE,
    expires              BIGINT NOT NULL,
    os                   TEXT,
    ip_address           TEXT,
    hostname             TEXT,
    city                 TEXT,
    region               TEXT,
    country              TEXT,
    last_login           BIGINT,
    device_metadata      TEXT NOT NULL DEFAULT '{}',  -- JSON object
    failed_auth_attempts INTEGER NOT NULL DEFAULT 0,
    created              BIGINT NOT NULL,
    updated              BIGINT NOT NULL,
    resource             TEXT             -- space-separated RFC 8707 resources; NULL: none
);
-- As in SQLite: partial, so a device authorization (a pending device) writes no entry.
CREATE INDEX devices_user ON devices(user_id, created) WHERE user_id IS NOT NULL;
CREATE INDEX devices_claimed ON devices(created DESC, id) WHERE user_id IS NOT NULL;
CREATE INDEX devices_expires ON devices(expires);

CREATE TABLE device_authorizations (
    id                     TEXT COLLATE "C" PRIMARY KEY,
    created_at             BIGINT NOT NULL,
    client_id              TEXT COLLATE "C" NOT NULL
                               REFERENCES oauth_clients(client_id) ON DELETE CASCADE,
    device_id              TEXT COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    device_code_hash       BYTEA NOT NULL UNIQUE,
    user_code              TEXT NOT NULL UNIQUE,  -- normalized: 8 letters, no dash
    scope                  TEXT NOT NULL DEFAULT '',
    expires_at             BIGINT NOT NULL,
    poll_interval_seconds  INTEGER NOT NULL,
    last_polled_at         BIGINT,
    approved_by_account_id TEXT COLLATE "C" REFERENCES users(id) ON DELETE CASCADE,
    approved_at            BIGINT,
    denied_at              BIGINT,
    consumed_at            BIGINT
);
CREATE INDEX device_authorizations_device ON device_authorizations(device_id);
CREATE INDEX device_authorizations_client ON device_authorizations(client_id, expires_at);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    device_id  TEXT COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    family     TEXT NOT NULL,
    scope      TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens(device_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens(expires_at);

CREATE TABLE revoked_access_tokens (
    jti        TEXT COLLATE "C" PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_expires ON revoked_access_tokens(expires_at);

-- One activated, unretired key per algorithm: instances that start together on an empty
-- database and each try to create the first key meet here, and all but one re-read the
-- winner's (a unique violation is that outcome, not an error).
CREATE TABLE signing_keys (
    kid         TEXT COLLATE "C" PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_key BYTEA NOT NULL,           -- PKCS#8 document, or sealed (src/sealing.rs)
    public_key  BYTEA NOT NULL,
    created     BIGINT NOT NULL,
    activated   BIGINT,
    retired     BIGINT
);
CREATE UNIQUE INDEX signing_keys_active ON signing_keys(algorithm)
    WHERE activated IS NOT NULL AND retired IS NULL;

CREATE TABLE sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions(expires_at);

-- SQLite's INTEGER PRIMARY KEY AUTOINCREMENT: ids only grow. BY DEFAULT, so that migrate-db
-- keeps each event's id (it moves the identity past the largest).
CREATE TABLE audit_events (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT,
    action     TEXT NOT NULL,
    target_id  TEXT,
    ip_address TEXT,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events(at);

-- ---------------------------------------------------------------------------------------------
-- Coordination: what several instances share, and one SQLite process kept in its memory.
-- None of these hold anything a backup must keep; a lost row costs at most one extra poll
-- allowed or one reaper pass skipped.
-- ---------------------------------------------------------------------------------------------

-- Leases: one holder at a time for work that must not run twice at once, first the reaper.
-- An instance takes or renews a lease with one upsert that succeeds only when the lease is
-- free, expired, or already its own, and lets it lapse by dying: another instance takes it
-- once `expires_at` passes. Times here come from the database's clock
-- (clock_timestamp()), not the instances', so clock skew between instances cannot make two
-- holders. Works through PgBouncer's transaction mode, where session advisory locks do not.
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,  -- e.g. 'reaper'
    holder     TEXT NOT NULL,                 -- the instance's id (random at start-up)
    expires_at BIGINT NOT NULL                -- database clock, ms
);

-- Shared token buckets for the limits that count failures (wrong user codes per address, per
-- session and per user; sign-in attempts per address): with one bucket per instance, N
-- instances would allow N times the guesses (Authelia's limiters multiply so). One row per
-- limit and subject, taken and refilled in one upsert. Volume limits (requests per minute)
-- stay per instance, in memory. UNLOGGED: no WAL for a write at every failure; a crash of the
-- database server empties it, which forgets recent failures once (and a standby does not have
-- it: after a failover the buckets start full). Rows that have refilled completely carry no
-- information and are reaped by `updated_at`.
CREATE UNLOGGED TABLE limit_buckets (
    limit_name TEXT COLLATE "C" NOT NULL,     -- e.g. 'code_entry', 'sign_in'
    subject    BYTEA NOT NULL,                -- the address's /64 group, session or user key
    tokens     DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (limit_name, subject)
);
CREATE INDEX limit_buckets_updated ON limit_buckets(updated_at);

-- When each pending authorization was last polled, shared, so that slow_down holds across
-- instances (a device polling A then B too fast is told to slow down). One SQLite process
-- keeps this in memory (src/polls.rs, a `Mark` per code) and writes the times back to
-- device_authorizations now and then; here the columns are that mark's, so the pure rule
-- (oauth::poll::decide, fed a PollState) is the same on both backends. A row per polled
-- authorization, written at each poll that is judged (a device polling at its interval: one
-- write per interval). UNLOGGED, as limit_buckets: a poll is the hottest write there is, and
-- losing these rows in a server crash only lets each device's next poll through unjudged.
-- No foreign key (an insert would lock the authorization's row against the exchange): rows of
-- codes gone are reaped by expires_at. device_authorizations.last_polled_at and
-- poll_interval_seconds (what the admin pages show, and what outlives a crash) are written
-- from here in batches, as on SQLite.
CREATE UNLOGGED TABLE poll_state (
    authorization_id      TEXT COLLATE "C" PRIMARY KEY,
    last_polled_at        BIGINT NOT NULL,
    early_ms              INTEGER NOT NULL,    -- PollState::early_ms: the schedule's slack used
    poll_interval_seconds INTEGER NOT NULL,    -- grows by 5 with each slow_down
    expires_at            BIGINT NOT NULL,     -- the code's, for reaping
    written_back          BOOLEAN NOT NULL DEFAULT FALSE  -- copied to device_authorizations
);
CREATE INDEX poll_state_expires ON poll_state(expires_at);

-- Change counters, one per kind of cached thing: an instance that caches keys, clients or
-- users reads this table (one indexed scan of a few rows) at most every few hundred ms and
-- drops its cache of a kind whose counter moved. A transaction that changes such a thing adds
-- 1 to its kind's counter in the same transaction, so the change and the counter become
-- visible together: a reader that saw counter N and then read the data can only have read
-- data at least as new as N (SQLite answers the same question from its WAL file, src/polls.rs).
-- The counters move only with admin changes (rotations, locks, client and user edits), never
-- with the token endpoint's writes, so their rows are never contended on a hot path.
-- NOTIFY hallpass_changes is sent in the same transactions to let listening instances react
-- at once; the table is what makes the 1 s bound hold without LISTEN (PgBouncer's
-- transaction mode does not carry LISTEN).
CREATE TABLE change_counters (
    kind TEXT COLLATE "C" PRIMARY KEY,         -- 'keys', 'clients', 'users', 'devices'
    seq  BIGINT NOT NULL
);
INSERT INTO change_counters (kind, seq)
    VALUES ('keys', 0), ('clients', 0), ('users', 0), ('devices', 0);
