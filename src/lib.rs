//! hallpass: a self-hosted OAuth 2.0 Device Authorization Grant server (RFC 8628) in one
//! binary with an embedded SQLite file.
//!
//! A headless device asks for a code (`POST /oauth/device_authorization`), a person approves
//! it (on the page, through the API, or with `hallpass device approve`), and the device's next
//! poll of `POST /oauth/token` gets a signed JWT access token and a refresh token.
//!
//! # Layout
//!
//! - [`config`]: defaults → TOML file → `HALLPASS_*` environment → flags, validated up front.
//! - [`server`]: the accept loop, connection cap, graceful shutdown; runs the [`reaper`], which
//!   deletes expired rows in small batches.
//! - [`limits`]: per-address rate limits (token buckets), bounded in memory.
//! - [`metrics`]: Prometheus counters and histograms, served at `GET /metrics`.
//! - [`logging`]: log lines to stderr; a line that cannot be written is dropped and counted,
//!   never a failure of the request that logged it.
//! - [`polls`]: when each device last polled, in memory, so a pending poll writes nothing.
//! - [`http`]: the router (one `match`), body and form helpers, the error type and its
//!   rendering per surface, and the OAuth endpoints.
//! - [`devices`]: lock, unlock and remove a device (revoking its tokens), for every front end.
//! - [`flow`]: the device flow's steps as transactions, shared by every front end.
//! - [`tokens`]: refresh rotation and reuse detection, revocation, introspection, and the rule
//!   that decides whether a device may still hold tokens.
//! - [`oauth`]: pure protocol logic — codes, scopes, resource indicators, poll decisions, JWTs,
//!   imported PEM keys. No I/O.
//! - [`db`]: the pool, schema versions, and all SQL, one file per table.
//! - [`keys`]: the cached active signing key of each algorithm (RS256 by default, ES256 or EdDSA
//!   per client), made with its first token; rotation from the CLI takes effect within 1 s.
//! - [`secrets`]: random credentials, hashing, password hashing, constant-time comparison.
//! - [`sealing`]: the signing keys' private halves sealed at rest with the operator's secret.
//! - [`text`]: the characters refused in names people read (controls, Unicode format
//!   characters), for every front end.
//! - [`admin`]: creating and changing users and clients, with the rules the CLI and the admin
//!   API share.
//! - [`api`]: the JSON management API under `/api/v1`, routed from one table that the OpenAPI
//!   document is tested against.
//! - [`web`]: the pages a person uses (sign-in, code entry, confirmation, their devices, the
//!   admins' authorizations), server-rendered without JavaScript, and the error pages.
//! - [`cli`]: the command line: `serve` and the admin commands on the database file.
//! - [`state`]: the one cloneable struct of shared handles every handler receives.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod location;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod sealing;
pub mod secrets;
pub mod server;
pub mod store;
pub mod text;
pub mod web;
