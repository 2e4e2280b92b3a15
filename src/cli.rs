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

use crate::config::Config;
use crate::db::clients;
use crate::db::{self, signing_keys, users, Db, DbOptions};
use crate::flow::{self, Actor};
use crate::keys::KeyRing;
use crate::oauth::jwt::Algorithm;
use crate::state::AppState;

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
        /// A grant type the client may use; repeat for several. Default: device_code and refresh_token.
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
            eprintln!("hallpass: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // Admin commands log only warnings unless asked: their output is for scripts.
    let level = match cli.command {
        Command::Serve => config.log_level.as_str(),
        _ => "warn",
    };
    init_logging(level, config.log_format);
    let result = match cli.command {
        Command::Serve => serve(config),
        Command::User(c) => open(&config).and_then(|db| user(&db, c)),
        Command::Client(c) => open(&config).and_then(|db| client(&db, c)),
        Command::Device(c) => open(&config).and_then(|db| device(&db, &config, c)),
        Command::Keys(c) => open(&config).and_then(|db| keys(&db, &config, c)),
        Command::Check => crate::location::Locator::open(&config.location)
            .map_err(|e| Failure(e, 2))
            .map(|_| {
                println!(
                    "configuration OK: listening on {}, database {}",
                    config.listen,
                    config.database_path.display()
                );
            }),
        Command::Backup { file } => open(&config).and_then(|db| backup(&db, &file)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            eprintln!("hallpass: {message}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(level: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLPASS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
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

fn open(config: &Config) -> Result<Db, Failure> {
    db::open(
        &config.database_path,
        &DbOptions {
            pool_size: config.pool_size,
            busy_timeout: config.busy_timeout,
            synchronous: config.synchronous,
        },
    )
    .map_err(|e| {
        Failure(
            format!("database {}: {e}", config.database_path.display()),
            1,
        )
    })
}

fn serve(config: Config) -> Result<(), Failure> {
    // A configured location database that cannot be read is a configuration error.
    let locator = crate::location::Locator::open(&config.location).map_err(|e| Failure(e, 2))?;
    let db = open(&config)?;
    let database_path = config.database_path.clone();
    // The default algorithm's key, made now if there is none, except an RSA key (40-400 ms of
    // prime search), which is made in the background once the server listens; other
    // algorithms' keys come with their first token (see KeyRing).
    let default = config.signing_algorithm;
    let key = db.run_sync(|c| match default {
        Algorithm::RS256 => signing_keys::active(c, default),
        _ => signing_keys::active_or_create(c, default, db::now_ms()).map(Some),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
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
        let limits = Arc::new(crate::limits::Limits::new(&config));
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let db = db.with_metrics(metrics.clone());
        let state = AppState {
            config: Arc::new(config),
            db,
            issuer: issuer.into(),
            audience: audience.into(),
            keys: Arc::new(KeyRing::new(algorithm, key)),
            polls: Arc::new(crate::polls::PollTracker::for_database(&database_path)),
            limits,
            metrics,
            locator: Arc::new(locator),
        };
        // The one line scripts and tests wait for.
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
        drop(out);
        tracing::info!(%addr, issuer = %state.issuer, "serving");
        let warm = state.clone();
        tokio::spawn(async move { warm.keys.warm_up(&warm.db).await });
        crate::server::run(listener, state, crate::server::shutdown_signal()).await;
        Ok(())
    })
}

/// `VACUUM INTO` copies the database as of one read transaction: consistent, compact, and it
/// never blocks the server's writers for long (WAL readers don't block writers).
fn backup(db: &Db, file: &std::path::Path) -> Result<(), Failure> {
    if file.exists() {
        return Err(Failure(format!("{} already exists", file.display()), 1));
    }
    let target = file.to_string_lossy().to_string();
    db.run_sync(|c| Ok(c.execute("VACUUM INTO ?1", [&target])?))?;
    println!("backed up to {}", file.display());
    Ok(())
}

fn print_json(value: &serde_json::Value) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn user(db: &Db, command: UserCommand) -> Result<(), Failure> {
    let UserCommand::Add { name, admin, .. } = command;
    crate::admin::check_username(&name)?;
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    let user = db.run_sync(|c| crate::admin::create_user(c, &name, password, admin))??;
    print_json(&serde_json::json!({
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
    }))
}

fn client(db: &Db, command: ClientCommand) -> Result<(), Failure> {
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
            let spec = crate::admin::ClientSpec {
                name,
                grants,
                scopes: scope,
                owner_user_id: None,
                signing_algorithm: signing_alg,
                audience,
                resources,
            };
            let (c, secret) =
                db.run_sync(|conn| crate::admin::create_client(conn, &spec, confidential))??;
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
            let updated = db.run_sync(|conn| {
                crate::admin::update_client(conn, &client_id, |spec| {
                    if let Some(n) = name {
                        spec.name = n;
                    }
                    if let Some(s) = scope {
                        spec.scopes = s;
                    }
                    if !grants.is_empty() {
                        spec.grants = grants;
                    }
                    if let Some(AlgorithmSetting(a)) = signing_alg {
                        spec.signing_algorithm = a;
                    }
                    if audience.is_some() || no_audience {
                        spec.audience = audience;
                    }
                    if !resources.is_empty() || no_resources {
                        spec.resources = resources;
                    }
                })
            })??;
            print_json(&crate::api::client_json(&updated))
        }
        ClientCommand::List => {
            let list = db.run_sync(|c| clients::list(c))?;
            let list: Vec<_> = list.iter().map(crate::api::client_json).collect();
            print_json(&serde_json::Value::Array(list))
        }
    }
}

fn device(db: &Db, config: &Config, command: DeviceCommand) -> Result<(), Failure> {
    match command {
        DeviceCommand::Approve {
            user_code,
            user,
            trusted,
        } => {
            let found = db.run_sync(|c| users::find_by_username(c, &user))?;
            let user = found.ok_or_else(|| Failure(format!("no user named {user:?}"), 1))?;
            if user.disabled {
                return Err(Failure(format!("user {:?} is disabled", user.username), 1));
            }
            let result = db.run_sync(|c| {
                flow::approve(c, config, &user_code, &user.id, trusted, None, db::now_ms())
            })?;
            let device = result.map_err(|p| Failure(format!("{}: {p}", user_code.trim()), 1))?;
            println!(
                "approved device {} for {}{}",
                device.id,
                user.username,
                if trusted { " (trusted)" } else { "" }
            );
            Ok(())
        }
        DeviceCommand::Deny { user_code } => {
            let actor = Actor {
                user_id: None,
                ip_address: None,
            };
            db.run_sync(|c| flow::deny(c, &user_code, actor, db::now_ms()))?
                .map_err(|p| Failure(format!("{}: {p}", user_code.trim()), 1))?;
            println!("denied {}", user_code.trim());
            Ok(())
        }
        DeviceCommand::List { user } => {
            let found = db.run_sync(|c| users::find_by_username(c, &user))?;
            let user = found.ok_or_else(|| Failure(format!("no user named {user:?}"), 1))?;
            let list = db.run_sync(|c| crate::db::devices::list_for_user(c, &user.id))?;
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
        DeviceCommand::Lock { id } => set_locked(db, &id, true),
        DeviceCommand::Unlock { id } => set_locked(db, &id, false),
        DeviceCommand::Remove { id } => {
            let removed = db.run_sync(|c| {
                crate::devices::remove(c, &id, None, Default::default(), db::now_ms())
            })?;
            if !removed {
                return Err(Failure(format!("no device {id:?}"), 1));
            }
            println!("removed device {id}");
            Ok(())
        }
    }
}

fn set_locked(db: &Db, id: &str, locked: bool) -> Result<(), Failure> {
    let device = db.run_sync(|c| {
        crate::devices::set_locked(c, id, None, locked, Default::default(), db::now_ms())
    })?;
    let device = device.ok_or_else(|| Failure(format!("no device {id:?}"), 1))?;
    println!("device {} is {}", device.id, device.status.as_str());
    Ok(())
}

fn keys(db: &Db, config: &Config, command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::List => {
            let list = db.run_sync(|c| signing_keys::list(c))?;
            let list: Vec<_> = list
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kid": k.kid,
                        "algorithm": k.algorithm,
                        "created": crate::http::rfc3339(k.created),
                        "activated": k.activated.map(crate::http::rfc3339),
                        "retired": k.retired.map(crate::http::rfc3339),
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        KeysCommand::Rotate { algorithm } => {
            let default = config.signing_algorithm;
            let keys =
                db.run_sync(|c| signing_keys::rotate(c, algorithm, default, db::now_ms()))?;
            print_json(&crate::api::rotation_json(&keys))
        }
        KeysCommand::Import { file, standby } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(format!("{}: {e}", file.display()), 1))?;
            let imported = crate::oauth::pem::import(&text)
                .map_err(|e| Failure(format!("{}: {e}", file.display()), 1))?;
            let key = &imported.key;
            let outcome = db.run_sync(|c| {
                signing_keys::import(c, key, &imported.pkcs8, standby, db::now_ms())
            })?;
            let mut out = serde_json::json!({
                "kid": key.kid,
                "algorithm": key.algorithm.as_str(),
            });
            match outcome {
                signing_keys::Imported::Duplicate => {
                    return Err(Failure(
                        format!("key {} is already stored (keys list shows it)", key.kid),
                        1,
                    ))
                }
                signing_keys::Imported::Standby => out["state"] = "standby".into(),
                signing_keys::Imported::Active { retired } => {
                    out["state"] = "active".into();
                    out["retired"] = retired.into();
                }
            }
            print_json(&out)
        }
        KeysCommand::Activate { kid } => {
            use signing_keys::Activation;
            match db.run_sync(|c| signing_keys::activate(c, &kid, db::now_ms()))? {
                Activation::Activated { algorithm, retired } => print_json(&serde_json::json!({
                    "kid": kid,
                    "algorithm": algorithm,
                    "state": "active",
                    "retired": retired,
                })),
                Activation::AlreadyActive => {
                    Err(Failure(format!("key {kid} is already active"), 1))
                }
                Activation::Retired => Err(Failure(
                    format!("key {kid} is retired and never signs again; rotate or import a key"),
                    1,
                )),
                Activation::NotFound => Err(Failure(format!("no key {kid:?}"), 1)),
            }
        }
        KeysCommand::Revoke { kid } => {
            if !db.run_sync(|c| signing_keys::revoke(c, &kid))? {
                return Err(Failure(format!("no key {kid:?}"), 1));
            }
            println!("revoked key {kid}");
            Ok(())
        }
    }
}
