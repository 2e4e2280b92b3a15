//! hallpass: a self-hosted OAuth 2.0 Device Authorization Grant server (RFC 8628) in one
//! binary with an embedded SQLite file.
//!
//! A headless device asks for a code (`POST /oauth/device_authorization`), a person approves
//! it (on the page, through the API, or with `hallpass device approve`), and the device's next
//! poll of `POST /oauth/token` gets a signed JWT access token and a refresh token.
//!
//! # Layout
//!
//! The layers, from the bottom up; each imports only those below it (`tests/layering.rs`
//! checks it).
//!
//! - Foundations: [`clock`] (the one clock: milliseconds since the epoch), [`secrets`] (random
//!   credentials, hashing, password hashing, constant-time comparison), [`text`] (the
//!   characters refused in names people read), [`metrics`] (Prometheus counters and
//!   histograms).
//! - [`protocol`]: pure OAuth — codes, scopes, resource indicators, poll decisions, error
//!   codes, JWTs, imported PEM keys. No I/O.
//! - [`config`]: defaults → TOML file → `HALLPASS_*` environment → flags, validated up front.
//!   [`domain`]: the records hallpass keeps ([`domain::model`]) and the pure rules every
//!   storage backend and front end share ([`domain::rules`], [`domain::admin`]).
//! - Infrastructure: [`sealing`] (signing keys sealed at rest with the operator's secret),
//!   [`location`] (where a device asked from), [`logging`] (log lines to stderr; a line that
//!   cannot be written is dropped and counted).
//! - [`store`]: everything hallpass keeps, behind one interface whose methods are the
//!   transactions the product needs, in domain types and [`store::StoreError`]; change
//!   detection for caches ([`store::Stamp`]). One folder per backend: [`store::sqlite`] (the
//!   pool, the group-commit writer, the file watch, schema versions and all SQL) and
//!   [`store::postgres`] (connections with TLS, its schema and coordination tables, retried
//!   transactions, and the copy from SQLite for `migrate-db`). Nothing above it names a
//!   backend's driver.
//! - [`app`]: the use cases — the device authorization and its pending-code cap, the token
//!   grants and minting, revocation, introspection, administration — and what lives in memory
//!   beside the store: the signer cache, the poll tracker, the per-address limits, the
//!   reaper; [`app::AppState`], the one cloneable struct of shared handles.
//! - Front ends: [`http`] (the OAuth endpoints, and the body, form and error helpers every
//!   surface shares), [`web`] (the pages a person uses, server-rendered without JavaScript),
//!   [`api`] (the JSON management API under `/api/v1`, routed from one table that the OpenAPI
//!   document is tested against).
//! - [`server`]: the accept loop, connection cap, graceful shutdown, the reaper alongside, and
//!   the router (one `match`) that sends each request to its front end.
//! - [`cli`]: the command line: `serve`, which wires the above together, and the admin
//!   commands on the database.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
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
