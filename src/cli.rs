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
use crate::sealing::Sealer;
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
    /// Retire the active key and start signing with a new one. The retired key stays in the
    /// JWKS until the tokens it signed have expired.
    Rotate,
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
        Command::Check => check(&config),
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

/// `hallpass check`: the configuration, the location database and the sealing secrets are
/// readable and valid. Without a sealing secret it says so on stderr (exit 0: a choice, not an
/// error).
fn check(config: &Config) -> Result<(), Failure> {
    crate::location::Locator::open(&config.location).map_err(|e| Failure(e, 2))?;
    let sealer = Sealer::from_config(config).map_err(|e| Failure(e, 2))?;
    println!(
        "configuration OK: listening on {}, database {}",
        config.listen,
        config.database_path.display()
    );
    match sealer.source() {
        Some(file) => println!(
            "signing keys are sealed with the first of {} secret(s) in {}",
            sealer.secrets(),
            file.display()
        ),
        None => eprintln!(
            "hallpass: warning: no sealing secret is configured (keys.sealing_secrets_file): \
             signing keys are stored unsealed in the database, protected only by its file mode"
        ),
    }
    Ok(())
}

/// The configured sealing secrets; an unreadable or invalid file is a configuration error.
fn sealer(config: &Config) -> Result<Sealer, Failure> {
    Sealer::from_config(config).map_err(|e| Failure(e, 2))
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
    let sealer = Arc::new(sealer(&config)?);
    let db = open(&config)?;
    let database_path = config.database_path.clone();
    // Every stored key must open before anything is signed or a key is created: a server
    // started with a wrong or missing secret stops here, naming the key (exit 2).
    let unsealed = db
        .run_sync(|c| {
            signing_keys::check_sealing(c, &sealer)?;
            Ok(signing_keys::list(c)?.iter().filter(|k| !k.sealed).count())
        })
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
    let key = db.run_sync(|c| {
        signing_keys::active_or_create(c, &sealer, config.signing_algorithm, db::now_ms())
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
        let limits = Arc::new(crate::limits::Limits::new(&config));
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let db = db.with_metrics(metrics.clone());
        let watch = db.clone();
        let state = AppState {
            config: Arc::new(config),
            db,
            issuer: issuer.into(),
            keys: Arc::new(KeyRing::new(algorithm, key, sealer)),
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
        crate::server::run(listener, state, crate::server::shutdown_signal()).await;
        if watch.file_replaced() {
            // SQLite checkpoints when the last connection of a file closes: that would copy the
            // old file's WAL into the one now at the path. Its connections stay open until the
            // process ends instead, which leaves both files as they are (see db::file).
            tracing::error!(
                path = %database_path.display(),
                "exiting without closing the database: its file was replaced while serving"
            );
            std::mem::forget(watch);
        }
        Ok(())
    })
}

/// A consistent copy of the database, mode 0600 (see [`db::backup`]).
fn backup(db: &Db, file: &std::path::Path) -> Result<(), Failure> {
    db::backup(db, file)?;
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
        } => {
            let spec = crate::admin::ClientSpec {
                name,
                grants,
                scopes: scope,
                owner_user_id: None,
            };
            let (c, secret) =
                db.run_sync(|conn| crate::admin::create_client(conn, &spec, confidential))??;
            let mut out = serde_json::json!({ "client_id": c.client_id });
            if let Some(secret) = secret {
                out["client_secret"] = secret.into();
            }
            print_json(&out)
        }
        ClientCommand::List => {
            let list = db.run_sync(|c| clients::list(c))?;
            let list: Vec<_> = list
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "client_id": c.client_id,
                        "name": c.name,
                        "confidential": c.is_confidential(),
                        "allowed_grants": c.allowed_grants,
                        "allowed_scopes": c.allowed_scopes.split_whitespace().collect::<Vec<_>>(),
                        "created": crate::http::rfc3339(c.created),
                    })
                })
                .collect();
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
                        "sealed": k.sealed,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        KeysCommand::Rotate => {
            let sealer = sealer(config)?;
            let key = db.run_sync(|c| {
                signing_keys::rotate(c, &sealer, config.signing_algorithm, db::now_ms())
            })?;
            print_json(&serde_json::json!({ "kid": key.kid, "algorithm": key.algorithm.as_str() }))
        }
        KeysCommand::Revoke { kid } => {
            if !db.run_sync(|c| signing_keys::revoke(c, &kid))? {
                return Err(Failure(format!("no key {kid:?}"), 1));
            }
            println!("revoked key {kid}");
            Ok(())
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
            let done = db.run_sync(|c| signing_keys::reseal(c, &sealer))?;
            print_json(&serde_json::to_value(&done)?)
        }
    }
}
