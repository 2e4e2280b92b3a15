//! The command line: `serve`, and admin commands that work on the database file directly —
//! usable while the server runs (SQLite WAL lets them share the file).
//!
//! Exit codes: 0 success, 1 a failed command (unknown user, bad code, …), 2 a configuration or
//! usage error.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::keys::KeyRing;
use crate::app::{admin, AppState};
use crate::clock;
use crate::config::Config;
use crate::domain::admin::{ClientChange, ClientSpec, UserChange};
use crate::domain::model::{Activation, Actor, Imported, User};
use crate::protocol::jwt::Algorithm;
use crate::sealing::Sealer;
use crate::store::{ApprovalRefused, Purpose, Store, StoreError};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "hallpass",
    version,
    about = "OAuth 2.0 Device Authorization Grant server (RFC 8628)"
)]
pub struct Cli {
    /// TOML configuration file (see config.example.toml).
    #[arg(long, global = true, env = "HALLPASS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database file; overrides database.path.
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Listen address; overrides server.listen.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Approve or deny a code; list, lock, unlock or remove devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage the keys that sign access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Validate the configuration (file, environment, flags) without starting; exit 2 if bad.
    Check,
    /// Write a consistent copy of the database to FILE, safe while the server runs.
    Backup {
        /// Where to write the copy; must not exist yet.
        file: PathBuf,
    },
    /// Copy the whole SQLite database (database.path) into an empty PostgreSQL database, in
    /// one transaction, then verify every table (row count and checksum) and print a summary.
    /// Safe while the server runs: it reads one snapshot of the file.
    MigrateDb {
        /// The PostgreSQL database: postgres://USER@HOST/DATABASE?sslmode=verify-full.
        /// Default: database.url. Prefer HALLPASS_DATABASE_URL for a URL with a password:
        /// arguments are visible to other users of the machine.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List signing keys as JSON.
    List,
    /// Retire the active keys and start signing with new ones: of every algorithm in use (and
    /// oauth.signing_algorithm's), or of one. Retired keys stay in the JWKS until the tokens
    /// they signed have expired.
    Rotate {
        /// Rotate only this algorithm's key: RS256, ES256 or EdDSA.
        #[arg(long = "alg", value_name = "ALG", value_parser = parse_algorithm)]
        algorithm: Option<Algorithm>,
    },
    /// Import a PEM private key (PKCS#8 "PRIVATE KEY" of RSA, P-256 or Ed25519; or PKCS#1
    /// "RSA PRIVATE KEY", SEC1 "EC PRIVATE KEY"), unencrypted. It signs its algorithm's
    /// tokens at once, retiring the key that did; with --standby it is only published.
    Import {
        /// The PEM file.
        file: PathBuf,
        /// Publish the key in the JWKS without signing with it, so resource servers can fetch
        /// it before its first token; `hallpass keys activate KID` makes it sign.
        #[arg(long)]
        standby: bool,
    },
    /// Make a key on standby sign its algorithm's tokens, retiring the key that did.
    Activate {
        /// The key id (kid).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Delete a key at once: tokens it signed stop verifying.
    Revoke {
        /// The key id (kid). A kid is base64url, so it may start with `-`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Seal every stored key with the first secret of keys.sealing_secrets_file: keys stored
    /// before a secret was configured, and keys sealed with an older secret (after rotating
    /// the secret). Safe while the server runs.
    Reseal,
}

/// Parses a JOSE algorithm name for a flag.
fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    Algorithm::parse(s).ok_or_else(|| format!("{s:?} is not {}", Algorithm::names()))
}

/// A client's algorithm setting: an algorithm, or `None` for `default` (follow
/// oauth.signing_algorithm).
#[derive(Debug, Clone, Copy)]
struct AlgorithmSetting(Option<Algorithm>);

fn parse_algorithm_setting(s: &str) -> Result<AlgorithmSetting, String> {
    if s == "default" {
        return Ok(AlgorithmSetting(None));
    }
    parse_algorithm(s)
        .map(|a| AlgorithmSetting(Some(a)))
        .map_err(|e| format!("{e}, or \"default\""))
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from the first line of standard input.
    Add {
        /// Unique username.
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (required: passwords never go in arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users as JSON.
    List,
    /// Set a user's password (first line of standard input); signs their browsers out.
    Passwd {
        /// The username.
        name: String,
        /// Read the password from standard input (required: passwords never go in arguments).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Disable a user: no sign-in, their sessions end, their devices' tokens stop at the next
    /// refresh or introspection. The last enabled administrator cannot be disabled.
    Disable {
        /// The username.
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The username.
        name: String,
    },
    /// Delete a user with their devices, tokens, sessions and owned clients. The last enabled
    /// administrator cannot be removed.
    Remove {
        /// The username.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Create a client and print its id (and secret, once) as JSON.
    Add {
        /// Name shown on the approval page.
        #[arg(long)]
        name: String,
        /// Give the client a secret (for a server-side client that can keep one).
        #[arg(long)]
        confidential: bool,
        /// Space-separated scopes the client may request.
        #[arg(long, default_value = "")]
        scope: String,
        /// A grant type the client may use: device_code (or its URN), refresh_token,
        /// client_credentials; repeat for several. Default: device_code and refresh_token.
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
        /// The algorithm of its access tokens: RS256, ES256 or EdDSA. Default: follow
        /// oauth.signing_algorithm.
        #[arg(long = "signing-alg", value_name = "ALG", value_parser = parse_algorithm)]
        signing_alg: Option<Algorithm>,
        /// The `aud` of its tokens when it names no resource. Default: oauth.audience, else
        /// the issuer URL.
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
        /// A resource (absolute URI, RFC 8707) it may ask for with `resource`; repeat for several.
        #[arg(long = "resource", value_name = "URI")]
        resources: Vec<String>,
    },
    /// Change a client; what is not given stays. Future tokens (refreshes included) follow.
    Update {
        /// The client id.
        client_id: String,
        /// Name shown on the approval page.
        #[arg(long)]
        name: Option<String>,
        /// Space-separated scopes the client may request (replaces them).
        #[arg(long)]
        scope: Option<String>,
        /// A grant type the client may use; repeat for several (replaces them).
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
        /// The algorithm of its access tokens: RS256, ES256, EdDSA, or `default` to follow
        /// oauth.signing_algorithm.
        #[arg(long = "signing-alg", value_name = "ALG", value_parser = parse_algorithm_setting)]
        signing_alg: Option<AlgorithmSetting>,
        /// The `aud` of its tokens when it names no resource.
        #[arg(long, value_name = "AUD", conflicts_with = "no_audience")]
        audience: Option<String>,
        /// Follow the server's default audience again.
        #[arg(long)]
        no_audience: bool,
        /// A resource (absolute URI) it may ask for; repeat for several (replaces them).
        #[arg(long = "resource", value_name = "URI", conflicts_with = "no_resources")]
        resources: Vec<String>,
        /// Allow no resource but the default audience.
        #[arg(long)]
        no_resources: bool,
    },
    /// List clients as JSON.
    List,
    /// Delete a client: its devices, their tokens and pending codes go with it.
    Remove {
        /// The client id.
        client_id: String,
    },
    /// Give a confidential client a new secret, printed once; the old one stops working at once.
    RotateSecret {
        /// The client id.
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Approve a user code as USER.
    Approve {
        /// The user code, in any case, with or without the dash.
        user_code: String,
        /// The approving user.
        #[arg(long)]
        user: String,
        /// Approve with "trust this device" (the longer device lifetime).
        #[arg(long)]
        trusted: bool,
    },
    /// Deny a user code.
    Deny {
        /// The user code, in any case, with or without the dash.
        user_code: String,
    },
    /// List a user's devices as JSON.
    List {
        /// Whose devices.
        #[arg(long)]
        user: String,
    },
    /// Lock a device: its refreshes fail and its tokens introspect inactive until unlocked.
    Lock {
        /// The device id.
        id: String,
    },
    /// Unlock a locked device.
    Unlock {
        /// The device id.
        id: String,
    },
    /// Remove a device and revoke its tokens.
    Remove {
        /// The device id.
        id: String,
    },
}

/// A command's failure: the message and the exit code.
struct Failure(String, u8);

/// Writes `hallpass: MESSAGE` to stderr. A stderr that cannot take it (closed) loses the
/// message, but never turns into a panic: the exit code still says what happened.
fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "hallpass: {message}");
}

/// Writes one line of a command's output to stdout. Stdout closed (a reader that went away) is
/// the command's failure, exit 1, instead of `println!`'s panic.
fn say(line: std::fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(output_lost)
}

/// The failure of a command whose work was done but whose output could not be written.
fn output_lost(e: impl std::fmt::Display) -> Failure {
    Failure(
        format!("the command was carried out, but its output could not be written: {e}"),
        1,
    )
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            report(&format!("configuration error: {e}"));
            return ExitCode::from(2);
        }
    };
    // Admin commands log only warnings unless asked: their output is for scripts.
    let level = match cli.command {
        Command::Serve => config.log_level.as_str(),
        _ => "warn",
    };
    let log_write_errors = crate::logging::init(level, config.log_format);
    let result = match cli.command {
        Command::Serve => serve(config, log_write_errors),
        Command::Check => check(&config),
        Command::MigrateDb { to } => migrate_db(&config, to.as_deref()),
        Command::Backup { .. } if config.database_url.is_some() => Err(Failure(
            "the database is PostgreSQL: back it up with PostgreSQL's own tools, e.g. \
             `pg_dump --format=custom --file=hallpass.dump \"$DATABASE_URL\"` (see \
             docs/postgres.md); `hallpass backup` copies the SQLite file only"
                .into(),
            1,
        )),
        command => administer(&config, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            report(&message);
            ExitCode::from(code)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, crate::config::ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(db) = &cli.db {
        config.set_flag("database.path", &db.to_string_lossy())?;
    }
    if let Some(listen) = &cli.listen {
        config.set_flag("server.listen", listen)?;
    }
    Ok(config)
}

/// `hallpass check`: the configuration, the location database and the sealing secrets are
/// readable and valid. Without a sealing secret it says so on stderr (exit 0: a choice, not an
/// error). With a PostgreSQL URL, the TLS settings are checked (exit 2) and a connection is
/// made (exit 1 when none can be: the configuration may be right and the server down), and
/// what the database holds is said; nothing is written to it.
fn check(config: &Config) -> Result<(), Failure> {
    crate::location::Locator::open(&config.location).map_err(|e| Failure(e, 2))?;
    let sealer = Sealer::from_config(config).map_err(|e| Failure(e, 2))?;
    match &config.database_url {
        None => say(format_args!(
            "configuration OK: listening on {}, database {}",
            config.listen,
            config.database_path.display()
        ))?,
        Some(url) => {
            let found = runtime()?
                .block_on(crate::store::probe_postgres(config))
                .map_err(store_failure)?;
            say(format_args!(
                "configuration OK: listening on {}, database {url} (connected: {found})",
                config.listen
            ))?;
        }
    }
    match sealer.source() {
        Some(file) => say(format_args!(
            "signing keys are sealed with the first of {} secret(s) in {}",
            sealer.secrets(),
            file.display()
        )),
        None => {
            report(
                "warning: no sealing secret is configured (keys.sealing_secrets_file): signing \
                 keys are stored unsealed in the database, protected only by its file mode",
            );
            Ok(())
        }
    }
}

/// A runtime for a command that talks to PostgreSQL.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A store failure as a command's: settings that cannot work exit 2, the rest 1.
fn store_failure(e: StoreError) -> Failure {
    let code = match e {
        StoreError::Config(_) => 2,
        _ => 1,
    };
    Failure(e.to_string(), code)
}

/// `hallpass migrate-db`: the SQLite file at database.path into the empty PostgreSQL database
/// at `--to` (or database.url), verified (see [`crate::store::copy_into_postgres`]).
fn migrate_db(config: &Config, to: Option<&str>) -> Result<(), Failure> {
    let mut config = config.clone();
    if let Some(to) = to {
        config
            .set_flag("database.url", to)
            .map_err(|e| Failure(e.to_string(), 2))?;
    }
    let Some(url) = config.database_url.clone() else {
        return Err(Failure(
            "migrate-db needs the PostgreSQL database to copy into: --to postgres://USER@HOST/DB \
             or database.url (HALLPASS_DATABASE_URL)"
                .into(),
            2,
        ));
    };
    let copied = runtime()?
        .block_on(crate::store::copy_into_postgres(&config))
        .map_err(store_failure)?;
    say(format_args!(
        "copied {} into {url}:",
        config.database_path.display()
    ))?;
    for c in &copied {
        let hex: String = c.checksum[..8].iter().map(|b| format!("{b:02x}")).collect();
        say(format_args!(
            "  {:<24} {:>9} rows  sha256 {hex}",
            c.table, c.rows
        ))?;
    }
    say(format_args!(
        "verified: PostgreSQL's row count and checksum match SQLite's in all {} tables",
        copied.len()
    ))
}

/// The configured sealing secrets; an unreadable or invalid file is a configuration error.
fn sealer(config: &Config) -> Result<Sealer, Failure> {
    Sealer::from_config(config).map_err(|e| Failure(e, 2))
}

/// Runs an admin command on the database, beside a running server or not. An admin command
/// never creates a database: a mistyped `--db` or config path would otherwise leave an empty
/// one behind and answer `[]`.
fn administer(config: &Config, command: Command) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open(config, Purpose::Command)
            .await
            .map_err(store_failure)?;
        match command {
            Command::User(c) => user(&store, c).await,
            Command::Client(c) => client(&store, c).await,
            Command::Device(c) => device(&store, config, c).await,
            Command::Keys(c) => keys(&store, config, c).await,
            Command::Backup { file } => backup(&store, &file).await,
            Command::Serve | Command::Check | Command::MigrateDb { .. } => {
                unreachable!("not an admin command")
            }
        }
    })
}

fn serve(
    config: Config,
    log_write_errors: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(), Failure> {
    // A configured location database that cannot be read is a configuration error.
    let locator = crate::location::Locator::open(&config.location).map_err(|e| Failure(e, 2))?;
    let sealer = Arc::new(sealer(&config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open(&config, Purpose::Serve)
            .await
            .map_err(store_failure)?;
        serving(config, store, sealer, locator, log_write_errors).await
    })
}

/// The server, once its configuration and store are open.
async fn serving(
    config: Config,
    store: Store,
    sealer: Arc<Sealer>,
    locator: crate::location::Locator,
    log_write_errors: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(), Failure> {
    let database_path = config.database_path.clone();
    // Every stored key must open before anything is signed or a key is created: a server
    // started with a wrong or missing secret stops here, naming the key (exit 2).
    let unsealed = store
        .check_sealing(sealer.clone())
        .await
        .map_err(|e| Failure(e.to_string(), 2))?;
    match sealer.source() {
        Some(_) if unsealed > 0 => tracing::warn!(
            keys = unsealed,
            "signing keys are stored unsealed although a sealing secret is configured; seal them \
             with `hallpass keys reseal`"
        ),
        Some(file) => tracing::info!(secrets = %file.display(), "signing keys are sealed"),
        None => tracing::warn!(
            "no sealing secret is configured (keys.sealing_secrets_file): signing keys are stored \
             unsealed in the database"
        ),
    }
    // The default algorithm's key, made now if there is none, except an RSA key (40-400 ms of
    // prime search), which is made in the background once the server listens; other
    // algorithms' keys come with their first token (see KeyRing).
    let default = config.signing_algorithm;
    let key = match default {
        Algorithm::RS256 => store.active_key(sealer.clone(), default).await?,
        _ => {
            let now = clock::now_ms();
            store
                .signing_key(sealer.clone(), default, None, now)
                .await?
        }
    };
    {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Failure(format!("cannot listen on {}: {e}", config.listen), 1))?;
        let addr = listener.local_addr()?;
        let issuer = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let algorithm = config.signing_algorithm;
        let audience = config.audience.clone().unwrap_or_else(|| issuer.clone());
        let limits = Arc::new(crate::app::limits::Limits::new(&config));
        let metrics = Arc::new(crate::metrics::Metrics::with_log_write_errors(
            log_write_errors,
        ));
        let store = store.with_metrics(metrics.clone());
        let watch = store.clone();
        // Reads are remembered under the store's stamp (see app::polls).
        let polls = crate::app::polls::PollTracker::remembering();
        let state = AppState {
            config: Arc::new(config),
            store,
            issuer: issuer.into(),
            audience: audience.into(),
            keys: Arc::new(KeyRing::new(algorithm, key, sealer)),
            polls: Arc::new(polls),
            limits,
            metrics,
            locator: Arc::new(locator),
        };
        // The one line scripts and tests wait for. Nobody may be reading it (stdout closed by a
        // service manager, or by a script that went away): serving matters more, so a failed
        // write is logged (the log line below also gives the address), not fatal.
        let mut out = std::io::stdout().lock();
        let announced = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
        drop(out);
        if let Err(e) = announced {
            tracing::warn!(error = %e, "could not write the `listening on` line to stdout");
        }
        tracing::info!(%addr, issuer = %state.issuer, "serving");
        let warm = state.clone();
        tokio::spawn(async move { warm.keys.warm_up(&warm.store).await });
        start_up_hints(&state, addr).await;
        crate::server::run(listener, state, crate::server::shutdown_signal()).await;
        if watch.replaced() {
            // SQLite checkpoints when the last connection of a file closes: that would copy the
            // old file's WAL into the one now at the path. Its connections stay open until the
            // process ends instead, which leaves both files as they are (see store::sqlite).
            tracing::error!(
                path = %database_path.display(),
                "exiting without closing the database: its file was replaced while serving"
            );
            std::mem::forget(watch);
        }
        Ok(())
    }
}

/// What an operator should know once the server listens: a `verification_uri` nobody can
/// open, and a database nobody can sign in to yet.
async fn start_up_hints(state: &AppState, addr: std::net::SocketAddr) {
    if state.config.public_url.is_none() && addr.ip().is_unspecified() {
        tracing::warn!(
            "server.public_url is not set and hallpass listens on {addr}: verification_uri \
             would be {}, which no person can open; set server.public_url \
             (HALLPASS_SERVER_PUBLIC_URL) to the URL people reach, e.g. https://auth.example.org",
            state.url("/device")
        );
    }
    if matches!(state.store.count_users().await, Ok(0)) {
        let path = state.config.database_path.display().to_string();
        let db = if path == "hallpass.db" {
            String::new()
        } else {
            format!("--db {} ", shell_word(&path))
        };
        tracing::info!(
            "no users yet; create the first administrator with: \
             hallpass {db}user add admin --admin --password-stdin"
        );
    }
}

/// `s` as one shell word: as it is when that is safe, else in single quotes.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A consistent copy of the database, mode 0600.
async fn backup(store: &Store, file: &std::path::Path) -> Result<(), Failure> {
    store.backup(file.to_path_buf()).await?;
    say(format_args!("backed up to {}", file.display()))
}

fn print_json(value: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)?;
    say(format_args!("{text}"))
}

/// The first line of standard input, without its line ending.
fn read_password() -> Result<String, Failure> {
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    Ok(password.trim_end_matches(['\r', '\n']).to_string())
}

/// Looks a user up by name; exit 1 naming it when there is none.
async fn find_user(store: &Store, name: &str) -> Result<User, Failure> {
    store
        .user_by_name(name.to_string())
        .await?
        .ok_or_else(|| Failure(format!("no user named {name:?}"), 1))
}

/// Applies `change` to the user named `name` and prints it.
async fn change_user(store: &Store, name: &str, change: UserChange) -> Result<(), Failure> {
    let found = find_user(store, name).await?;
    let user = admin::update_user(store, &found.id, change).await??;
    print_json(&crate::api::user_json(&user))
}

async fn user(store: &Store, command: UserCommand) -> Result<(), Failure> {
    match command {
        UserCommand::Add { name, admin, .. } => {
            crate::domain::admin::check_username(&name)?;
            let password = read_password()?;
            let user = admin::create_user(store, &name, &password, admin).await??;
            print_json(&serde_json::json!({
                "id": user.id,
                "username": user.username,
                "is_admin": user.is_admin,
            }))
        }
        UserCommand::List => {
            let (list, _) = store.users(0, u32::MAX).await?;
            print_json(&serde_json::Value::Array(
                list.iter().map(crate::api::user_json).collect(),
            ))
        }
        UserCommand::Passwd { name, .. } => {
            let password = read_password()?;
            crate::domain::admin::check_password(&password)?;
            let change = UserChange {
                password: Some(password),
                ..Default::default()
            };
            change_user(store, &name, change).await
        }
        UserCommand::Disable { name } => {
            let change = UserChange {
                disabled: Some(true),
                ..Default::default()
            };
            change_user(store, &name, change).await
        }
        UserCommand::Enable { name } => {
            let change = UserChange {
                disabled: Some(false),
                ..Default::default()
            };
            change_user(store, &name, change).await
        }
        UserCommand::Remove { name } => {
            let found = find_user(store, &name).await?;
            store.delete_user(found.id.clone()).await??;
            print_json(&serde_json::json!({
                "id": found.id,
                "username": found.username,
                "deleted": true,
            }))
        }
    }
}

/// A grant as the command line accepts it: `device_code` stands for RFC 8628's URN.
fn grant_name(g: &str) -> String {
    match g {
        "device_code" => crate::protocol::grant::DEVICE_CODE.to_string(),
        other => other.to_string(),
    }
}

async fn client(store: &Store, command: ClientCommand) -> Result<(), Failure> {
    match command {
        ClientCommand::Add {
            name,
            confidential,
            scope,
            grants,
            signing_alg,
            audience,
            resources,
        } => {
            let grants: Vec<String> = grants.iter().map(|g| grant_name(g)).collect();
            if let Some(g) = grants
                .iter()
                .find(|g| !crate::protocol::grant::ALL.contains(&g.as_str()))
            {
                return Err(Failure(
                    format!(
                        "--grant: unknown grant {g:?}; known: device_code, refresh_token, \
                         client_credentials"
                    ),
                    1,
                ));
            }
            let spec = ClientSpec {
                name,
                grants,
                scopes: scope,
                owner_user_id: None,
                signing_algorithm: signing_alg,
                audience,
                resources,
            };
            let (c, secret) = admin::create_client(store, spec, confidential).await??;
            let mut out = serde_json::json!({ "client_id": c.client_id });
            if let Some(secret) = secret {
                out["client_secret"] = secret.into();
            }
            print_json(&out)
        }
        ClientCommand::Update {
            client_id,
            name,
            scope,
            grants,
            signing_alg,
            audience,
            no_audience,
            resources,
            no_resources,
        } => {
            let change = ClientChange {
                name,
                scopes: scope,
                grants: (!grants.is_empty()).then_some(grants),
                signing_algorithm: signing_alg.map(|AlgorithmSetting(a)| a),
                audience: (audience.is_some() || no_audience).then_some(audience),
                resources: (!resources.is_empty() || no_resources).then_some(resources),
                owner_user_id: None,
            };
            let updated = store
                .update_client(client_id, change, clock::now_ms())
                .await??;
            print_json(&crate::api::client_json(&updated))
        }
        ClientCommand::List => {
            let list = store.clients().await?;
            let list: Vec<_> = list.iter().map(crate::api::client_json).collect();
            print_json(&serde_json::Value::Array(list))
        }
        ClientCommand::Remove { client_id } => {
            let removed = store
                .delete_client(client_id, Actor::default(), clock::now_ms())
                .await??;
            print_json(&serde_json::json!({
                "client_id": removed.client_id,
                "name": removed.name,
                "deleted": true,
            }))
        }
        ClientCommand::RotateSecret { client_id } => {
            let secret = admin::rotate_client_secret(store, &client_id).await??;
            print_json(&serde_json::json!({
                "client_id": client_id,
                "client_secret": secret,
            }))
        }
    }
}

async fn device(store: &Store, config: &Config, command: DeviceCommand) -> Result<(), Failure> {
    match command {
        DeviceCommand::Approve {
            user_code,
            user,
            trusted,
        } => {
            let found = store.user_by_name(user.clone()).await?;
            let user = found.ok_or_else(|| Failure(format!("no user named {user:?}"), 1))?;
            if user.disabled {
                return Err(Failure(format!("user {:?} is disabled", user.username), 1));
            }
            let approval = crate::app::authorize::approval(
                config,
                user_code.clone(),
                user.id.clone(),
                trusted,
                None,
            );
            let device = match store.approve(approval).await? {
                Ok(device) => device,
                Err(ApprovalRefused::Code(p)) => {
                    return Err(Failure(format!("{}: {p}", user_code.trim()), 1))
                }
                // Only an approval naming a device is refused for its device.
                Err(other) => return Err(Failure(format!("{}: {other:?}", user_code.trim()), 1)),
            };
            say(format_args!(
                "approved device {} for {}{}",
                device.id,
                user.username,
                if trusted { " (trusted)" } else { "" }
            ))
        }
        DeviceCommand::Deny { user_code } => {
            store
                .deny(user_code.clone(), Actor::default(), clock::now_ms())
                .await?
                .map_err(|p| Failure(format!("{}: {p}", user_code.trim()), 1))?;
            say(format_args!("denied {}", user_code.trim()))
        }
        DeviceCommand::List { user } => {
            let found = store.user_by_name(user.clone()).await?;
            let user = found.ok_or_else(|| Failure(format!("no user named {user:?}"), 1))?;
            let list = store.devices_of(user.id).await?.devices;
            let list: Vec<_> = list
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.id,
                        "name": d.name,
                        "client_id": d.client_id,
                        "status": d.status,
                        "trusted_device": d.trusted_device,
                        "expires": crate::http::rfc3339(d.expires),
                        "last_login": d.last_login.map(crate::http::rfc3339),
                        "hostname": d.hostname,
                        "os": d.os,
                        "ip_address": d.ip_address,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        DeviceCommand::Lock { id } => set_locked(store, id, true).await,
        DeviceCommand::Unlock { id } => set_locked(store, id, false).await,
        DeviceCommand::Remove { id } => {
            let removed = store
                .remove_device(id.clone(), None, Actor::default(), clock::now_ms())
                .await?;
            if !removed {
                return Err(Failure(format!("no device {id:?}"), 1));
            }
            say(format_args!("removed device {id}"))
        }
    }
}

async fn set_locked(store: &Store, id: String, locked: bool) -> Result<(), Failure> {
    let device = store
        .set_device_locked(id.clone(), None, locked, Actor::default(), clock::now_ms())
        .await?;
    let device = device.ok_or_else(|| Failure(format!("no device {id:?}"), 1))?;
    say(format_args!(
        "device {} is {}",
        device.id,
        device.status.as_str()
    ))
}

async fn keys(store: &Store, config: &Config, command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::List => {
            let list = store.keys().await?;
            let list: Vec<_> = list
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kid": k.kid,
                        "algorithm": k.algorithm,
                        "created": crate::http::rfc3339(k.created),
                        "activated": k.activated.map(crate::http::rfc3339),
                        "retired": k.retired.map(crate::http::rfc3339),
                        "sealed": k.sealed,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        KeysCommand::Rotate { algorithm } => {
            let sealer = Arc::new(sealer(config)?);
            let default = config.signing_algorithm;
            let keys = store
                .rotate_keys(sealer, algorithm, default, clock::now_ms())
                .await?;
            print_json(&crate::api::rotation_json(&keys))
        }
        KeysCommand::Import { file, standby } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(format!("{}: {e}", file.display()), 1))?;
            let imported = crate::protocol::pem::import(&text)
                .map_err(|e| Failure(format!("{}: {e}", file.display()), 1))?;
            let key = Arc::new(imported.key);
            let sealer = Arc::new(sealer(config)?);
            let outcome = store
                .import_key(
                    sealer,
                    key.clone(),
                    imported.pkcs8,
                    standby,
                    clock::now_ms(),
                )
                .await?;
            let mut out = serde_json::json!({
                "kid": key.kid,
                "algorithm": key.algorithm.as_str(),
            });
            match outcome {
                Imported::Duplicate => {
                    return Err(Failure(
                        format!("key {} is already stored (keys list shows it)", key.kid),
                        1,
                    ))
                }
                Imported::Standby => out["state"] = "standby".into(),
                Imported::Active { retired } => {
                    out["state"] = "active".into();
                    out["retired"] = retired.into();
                }
            }
            print_json(&out)
        }
        KeysCommand::Activate { kid } => match store
            .activate_key(kid.clone(), clock::now_ms())
            .await?
        {
            Activation::Activated { algorithm, retired } => print_json(&serde_json::json!({
                "kid": kid,
                "algorithm": algorithm,
                "state": "active",
                "retired": retired,
            })),
            Activation::AlreadyActive => Err(Failure(format!("key {kid} is already active"), 1)),
            Activation::Retired => Err(Failure(
                format!("key {kid} is retired and never signs again; rotate or import a key"),
                1,
            )),
            Activation::NotFound => Err(Failure(format!("no key {kid:?}"), 1)),
        },
        KeysCommand::Revoke { kid } => {
            if !store.revoke_key(kid.clone()).await? {
                return Err(Failure(format!("no key {kid:?}"), 1));
            }
            say(format_args!("revoked key {kid}"))
        }
        KeysCommand::Reseal => {
            let sealer = sealer(config)?;
            if !sealer.is_configured() {
                return Err(Failure(
                    "keys reseal needs a sealing secret: set keys.sealing_secrets_file (or \
                     HALLPASS_KEYS_SEALING_SECRETS_FILE)"
                        .into(),
                    2,
                ));
            }
            let done = store.reseal_keys(Arc::new(sealer)).await?;
            print_json(&serde_json::to_value(&done)?)
        }
    }
}
