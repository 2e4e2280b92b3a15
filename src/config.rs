//! Configuration: embedded defaults, then a TOML file, then `HALLPASS_*` environment variables,
//! then command-line flags.
//!
//! Every key is known up front (see [`KEYS`]); an unknown key, a value of the wrong kind or an
//! unreadable file is a [`ConfigError`] that names the key and the problem, so `main` can print it
//! and exit with code 2. Durations are written with units (`"10m"`, `"30d"`, `"1h30m"`); a bare
//! number is refused because "is 600 seconds or milliseconds?" is exactly the question we want
//! the operator never to have to ask.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::jwt::Algorithm;

/// The whole configuration, already validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds to. Port 0 picks a free port (tests rely on it).
    pub listen: SocketAddr,
    /// Base URL people and devices use to reach this server, without a trailing slash; it is
    /// the token issuer and the prefix of `verification_uri`. `None` means "derive it from the
    /// bound address" (`http://127.0.0.1:PORT`), which is right only for local use.
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed; from anyone else the socket's
    /// address is the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_size: usize,
    /// Upper bound on the time one request may take, including reading its body.
    pub request_timeout: Duration,
    /// How many connections are served at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this (also an idle
    /// keep-alive connection waiting for its next request) is closed.
    pub header_read_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests before giving up.
    pub shutdown_timeout: Duration,
    /// The SQLite database file, used while [`Config::database_url`] is not set.
    pub database_path: PathBuf,
    /// A PostgreSQL database (`database.url`): when set, hallpass stores everything there
    /// instead of in the SQLite file, and several instances may share it (see docs/postgres.md).
    pub database_url: Option<DatabaseUrl>,
    /// The certificate authorities a PostgreSQL server's certificate is checked against
    /// (`database.ca_file`), for `sslmode=verify-ca` / `verify-full` (and `require`, which then
    /// checks the chain as libpq does). Also `sslrootcert` in the URL.
    pub database_ca: Option<CaSource>,
    /// How long opening one PostgreSQL connection (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
    /// SQLite `synchronous` setting: `Full` makes every acknowledged write survive power loss.
    pub synchronous: Synchronous,
    /// Number of pooled connections (SQLite's, or PostgreSQL's per instance).
    pub pool_size: u32,
    /// How long a connection waits for another writer's lock before failing (PostgreSQL:
    /// `lock_timeout`, and the wait for a pooled connection).
    pub busy_timeout: Duration,
    /// How long a device code and its user code stay valid (RFC 8628 `expires_in`).
    pub device_code_lifetime: Duration,
    /// The minimum polling interval handed to devices (RFC 8628 `interval`).
    pub poll_interval: Duration,
    /// Lifetime of JWT access tokens.
    pub access_token_lifetime: Duration,
    /// Lifetime of refresh tokens; never longer than the device's own expiry.
    pub refresh_token_lifetime: Duration,
    /// Failed attempts against one device's code before the device is locked.
    pub max_failed_code_attempts: u32,
    /// The algorithm of access tokens for clients without their own (`RS256`: see
    /// config.example.toml for why).
    pub signing_algorithm: Algorithm,
    /// A file of secrets that seal the signing keys' private halves in the database (see
    /// [`crate::sealing`]); `None` stores them unsealed. Only the path is kept here: the
    /// secrets are read by [`crate::sealing::Sealer::from_config`] and never logged.
    pub sealing_secrets_file: Option<PathBuf>,
    /// The default `aud` claim of access tokens (RFC 9068 §2.2, §3) for clients without their
    /// own; `None` means the issuer URL.
    pub audience: Option<String>,
    /// How long a device approved without "trust this device" stays usable.
    pub untrusted_device_lifetime: Duration,
    /// How long a device approved as trusted stays usable.
    pub trusted_device_lifetime: Duration,
    /// How often the reaper deletes expired rows.
    pub reaper_interval: Duration,
    /// Rows the reaper deletes per transaction, so it never holds the write lock for long.
    pub reaper_batch_size: u32,
    /// Lifetime of a browser sign-in session.
    pub session_lifetime: Duration,
    /// Rate limits and caps.
    pub limits: LimitsConfig,
    /// Where devices are (`[location]`).
    pub location: LocationConfig,
    /// What each scope allows, in words, for the approval page (`[scopes]`: name = "text").
    pub scope_descriptions: std::collections::BTreeMap<String, String>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (`info`, `hallpass=debug`); `HALLPASS_LOG` overrides it.
    pub log_level: String,
}

/// Rate limits per client address (requests per minute, 0 = off) and caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `POST /oauth/device_authorization` per address.
    pub device_authorization_per_minute: u32,
    /// Token, revocation and introspection requests per address: far above what polite
    /// polling needs (12 a minute per device at a 5 s interval), even behind a shared NAT.
    pub token_per_minute: u32,
    /// Sign-in attempts per address.
    pub sign_in_per_minute: u32,
    /// Failed user-code entries (page or API) per address and per session (RFC 8628 §5.1).
    pub code_entry_failures_per_minute: u32,
    /// Live pending codes one client may have at once.
    pub max_pending_codes_per_client: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            device_authorization_per_minute: 60,
            token_per_minute: 600,
            sign_in_per_minute: 10,
            code_entry_failures_per_minute: 5,
            max_pending_codes_per_client: 1000,
        }
    }
}

/// Sources of a device's location: a MaxMind-format file, and headers from trusted proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocationConfig {
    /// A GeoIP2/GeoLite2 City database (`.mmdb`), read at start-up.
    pub database: Option<PathBuf>,
    /// Header carrying the city, believed only from `server.trusted_proxies`.
    pub city_header: Option<String>,
    /// Header carrying the region.
    pub region_header: Option<String>,
    /// Header carrying the country.
    pub country_header: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// SQLite's `PRAGMA synchronous` levels that make sense in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Survives a process crash; the last transactions may be lost on power loss.
    Normal,
    /// Survives a process crash and power loss: every commit is fsynced.
    Full,
}

impl Synchronous {
    /// The PRAGMA value.
    pub fn as_sql(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            public_url: None,
            trusted_proxies: Vec::new(),
            max_body_size: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            max_connections: 16_384,
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            database_path: PathBuf::from("hallpass.db"),
            database_url: None,
            database_ca: None,
            connect_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            device_code_lifetime: Duration::from_secs(10 * 60),
            poll_interval: Duration::from_secs(5),
            access_token_lifetime: Duration::from_secs(15 * 60),
            refresh_token_lifetime: Duration::from_secs(30 * DAY),
            max_failed_code_attempts: 5,
            signing_algorithm: Algorithm::RS256,
            sealing_secrets_file: None,
            audience: None,
            untrusted_device_lifetime: Duration::from_secs(DAY),
            trusted_device_lifetime: Duration::from_secs(30 * DAY),
            reaper_interval: Duration::from_secs(60),
            reaper_batch_size: 500,
            session_lifetime: Duration::from_secs(12 * 3600),
            limits: LimitsConfig::default(),
            scope_descriptions: std::collections::BTreeMap::new(),
            location: LocationConfig::default(),
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
        }
    }
}

const DAY: u64 = 24 * 3600;

/// Every configuration key, as `section.key`. The environment variable of a key is
/// `HALLPASS_` followed by the key upper-cased with `.` replaced by `_`.
pub const KEYS: &[&str] = &[
    "server.listen",
    "server.public_url",
    "server.trusted_proxies",
    "server.max_body_size",
    "server.request_timeout",
    "server.max_connections",
    "server.header_read_timeout",
    "server.shutdown_timeout",
    "database.path",
    "database.synchronous",
    "database.pool_size",
    "database.busy_timeout",
    "database.url",
    "database.ca_file",
    "database.connect_timeout",
    "oauth.device_code_lifetime",
    "oauth.poll_interval",
    "oauth.access_token_lifetime",
    "oauth.refresh_token_lifetime",
    "oauth.max_failed_code_attempts",
    "oauth.signing_algorithm",
    "oauth.audience",
    "keys.sealing_secrets_file",
    "devices.untrusted_lifetime",
    "devices.trusted_lifetime",
    "reaper.interval",
    "reaper.batch_size",
    "sessions.lifetime",
    "log.format",
    "log.level",
    "limits.device_authorization_per_minute",
    "limits.token_per_minute",
    "limits.sign_in_per_minute",
    "limits.code_entry_failures_per_minute",
    "limits.max_pending_codes_per_client",
    "location.database",
    "location.city_header",
    "location.region_header",
    "location.country_header",
];

/// The sections of the file: those of [`KEYS`], and `[scopes]`.
const SECTIONS: &[&str] = &[
    "server", "database", "oauth", "keys", "devices", "reaper", "sessions", "log", "limits",
    "location", "scopes",
];

/// Levenshtein distance between two strings, by characters, ignoring ASCII case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// The candidate closest to `wanted`, if it is close enough to be what was meant: a few typos
/// (at most a third of the name, at least 2), `-` for `_`, or another case.
fn nearest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = wanted.replace('-', "_");
    let limit = (wanted.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(&wanted, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The message for a key that does not exist: the nearest known key, or the same name in
/// another section, or the keys of its section; never all of them.
fn unknown_key(key: &str) -> String {
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    if let Some(k) = nearest(key, KEYS.iter().copied()) {
        return format!("unknown key `{key}`; did you mean `{k}`?");
    }
    // The right name in the wrong section: `[server] poll_interval`.
    let elsewhere: Vec<(&str, &str)> = KEYS
        .iter()
        .filter_map(|k| k.split_once('.').map(|(s, n)| (s, n, *k)))
        .filter(|(s, _, _)| *s != section)
        .map(|(_, n, k)| (n, k))
        .collect();
    if let Some(n) = nearest(name, elsewhere.iter().map(|(n, _)| *n)) {
        if let Some((_, k)) = elsewhere.iter().find(|(m, _)| *m == n) {
            return format!("unknown key `{key}`; did you mean `{k}`?");
        }
    }
    let same_section: Vec<&str> = KEYS
        .iter()
        .filter_map(|k| k.strip_prefix(section).and_then(|r| r.strip_prefix('.')))
        .collect();
    format!(
        "unknown key `{key}`; [{section}] has {}",
        same_section.join(", ")
    )
}

/// The range of every duration key, inclusive (issue 18 §7): a lifetime of `999999999999d`
/// would overflow the millisecond timestamps (codes expiring at once, sessions never working,
/// access tokens with an `exp` no verifier ever reaches). config.example.toml shows each range.
pub const DURATION_RANGES: &[(&str, Duration, Duration)] = &[
    ("server.request_timeout", SECOND, HOUR),
    ("server.header_read_timeout", SECOND, HOUR),
    ("server.shutdown_timeout", Duration::ZERO, HOUR),
    (
        "database.busy_timeout",
        Duration::ZERO,
        Duration::from_secs(600),
    ),
    ("database.connect_timeout", SECOND, Duration::from_secs(600)),
    (
        "oauth.device_code_lifetime",
        SECOND,
        Duration::from_secs(DAY),
    ),
    ("oauth.poll_interval", SECOND, HOUR),
    (
        "oauth.access_token_lifetime",
        SECOND,
        Duration::from_secs(DAY),
    ),
    ("oauth.refresh_token_lifetime", SECOND, TEN_YEARS),
    ("devices.untrusted_lifetime", SECOND, TEN_YEARS),
    ("devices.trusted_lifetime", SECOND, TEN_YEARS),
    ("reaper.interval", SECOND, Duration::from_secs(DAY)),
    ("sessions.lifetime", SECOND, Duration::from_secs(365 * DAY)),
];

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const TEN_YEARS: Duration = Duration::from_secs(3650 * DAY);

/// Reads a duration for `key` and checks it against [`DURATION_RANGES`].
fn ranged_duration(key: &str, raw: &Raw<'_>) -> Result<Duration, String> {
    let d = raw.duration()?;
    let Some(&(_, min, max)) = DURATION_RANGES.iter().find(|(k, _, _)| *k == key) else {
        return Ok(d);
    };
    if d < min || d > max {
        return Err(format!(
            "{} is out of range: must be from {} to {}",
            format_duration(d),
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Environment variables with the `HALLPASS_` prefix that are not configuration keys.
const NON_KEY_ENV: &[&str] = &["HALLPASS_CONFIG", "HALLPASS_LOG"];

/// Reads `[scopes]`: each key a scope name, each value the words the approval page shows.
fn scope_descriptions(
    value: &toml::Value,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let toml::Value::Table(entries) = value else {
        return Err("`scopes` must be a [section] of scope = \"description\"".into());
    };
    let mut out = std::collections::BTreeMap::new();
    for (name, text) in entries {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid_name {
            return Err(format!(
                "key `scopes.{name}`: not a scope name (RFC 6749 §3.3 characters, no spaces)"
            ));
        }
        let Some(text) = text.as_str() else {
            return Err(format!("key `scopes.{name}`: must be a string"));
        };
        if text.trim().is_empty() || text.chars().count() > 300 {
            return Err(format!("key `scopes.{name}`: must be 1 to 300 characters"));
        }
        out.insert(name.clone(), text.trim().to_string());
    }
    Ok(out)
}

/// A configuration problem, naming where it came from and which key.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One value before it is parsed: TOML keeps its type, the environment gives a string.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn string(&self) -> Result<String, String> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(other) => Err(format!("expected a string, found {}", other.type_str())),
            Raw::Env(s) => Ok((*s).to_string()),
        }
    }

    fn integer(&self) -> Result<u64, String> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) if *i >= 0 => Ok(*i as u64),
            Raw::Toml(toml::Value::Integer(_)) => Err("expected a non-negative integer".into()),
            Raw::Toml(other) => Err(format!("expected an integer, found {}", other.type_str())),
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected a non-negative integer, found {s:?}")),
        }
    }

    fn duration(&self) -> Result<Duration, String> {
        match self {
            Raw::Toml(toml::Value::String(s)) => parse_duration(s),
            Raw::Toml(toml::Value::Integer(i)) => Err(format!(
                "write durations with a unit, e.g. \"{i}s\" or \"{i}m\""
            )),
            Raw::Toml(other) => Err(format!(
                "expected a duration such as \"10m\", found {}",
                other.type_str()
            )),
            Raw::Env(s) => parse_duration(s),
        }
    }
}

impl Config {
    /// Builds the configuration from the defaults, an optional TOML file and the process
    /// environment. Command-line overrides are applied by the caller afterwards.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HALLPASS_"))
            .collect();
        let text = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let origin = file.map(|p| p.display().to_string());
        Config::from_sources(text.as_deref(), origin.as_deref(), &env)
    }

    /// The pure part of [`Config::load`]: `text` is the TOML file's content (named `origin` in
    /// messages), `env` the `HALLPASS_*` variables.
    pub fn from_sources(
        text: Option<&str>,
        origin: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(text) = text {
            let origin = origin.unwrap_or("config");
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError(format!("{origin}: {e}")))?;
            for (section, value) in &table {
                if section == "scopes" {
                    config.scope_descriptions = scope_descriptions(value)
                        .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
                    continue;
                }
                if !KEYS
                    .iter()
                    .any(|k| k.split('.').next() == Some(section.as_str()))
                {
                    return Err(ConfigError(format!(
                        "{origin}: unknown section [{section}]; {}",
                        match nearest(section, SECTIONS.iter().copied()) {
                            Some(s) => format!("did you mean [{s}]?"),
                            None => format!("known sections: {}", SECTIONS.join(", ")),
                        }
                    )));
                }
                let toml::Value::Table(entries) = value else {
                    return Err(ConfigError(format!(
                        "{origin}: `{section}` must be a [section]; known sections: server, database, oauth, keys, devices, reaper, sessions, log, limits, location, scopes"
                    )));
                };
                for (key, value) in entries {
                    let name = format!("{section}.{key}");
                    config
                        .set(&name, Raw::Toml(value))
                        .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
                }
            }
        }
        for (var, value) in env {
            if NON_KEY_ENV.contains(&var.as_str()) {
                continue;
            }
            let key = KEYS.iter().find(|k| env_name(k) == *var).ok_or_else(|| {
                let names: Vec<String> = KEYS.iter().map(|k| env_name(k)).collect();
                ConfigError(match nearest(var, names.iter().map(String::as_str)) {
                    Some(n) => format!("unknown environment variable {var}; did you mean {n}?"),
                    None => format!(
                        "unknown environment variable {var}; every key's variable is \
                         HALLPASS_<SECTION>_<KEY> (config.example.toml lists the keys)"
                    ),
                })
            })?;
            config
                .set(key, Raw::Env(value))
                .map_err(|e| ConfigError(format!("environment variable {var}: {e}")))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets one key from a command-line flag (`--db`, `--listen`).
    pub fn set_flag(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set(key, Raw::Env(value))
            .map_err(|e| ConfigError(format!("command line: {e}")))?;
        self.validate()
    }

    fn set(&mut self, key: &str, raw: Raw<'_>) -> Result<(), String> {
        let named = |e: String| format!("key `{key}`: {e}");
        let small = |n: u64| u32::try_from(n).map_err(|_| named("too large".into()));
        match key {
            "server.listen" => {
                let s = raw.string().map_err(named)?;
                self.listen = s.parse().map_err(|_| {
                    named(format!(
                        "{s:?} is not an IP address with a port, e.g. \"127.0.0.1:8080\""
                    ))
                })?;
            }
            "server.public_url" => {
                let s = raw.string().map_err(named)?;
                let s = s.trim().trim_end_matches('/');
                self.public_url = if s.is_empty() {
                    None
                } else if s.starts_with("http://") || s.starts_with("https://") {
                    Some(s.to_string())
                } else {
                    return Err(named(format!("{s:?} must start with http:// or https://")));
                };
            }
            "server.trusted_proxies" => {
                let items: Vec<String> = match raw {
                    Raw::Toml(toml::Value::Array(a)) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| named("expected an array of strings".into()))?,
                    Raw::Toml(other) => {
                        return Err(named(format!(
                            "expected an array such as [\"127.0.0.1/32\"], found {}",
                            other.type_str()
                        )))
                    }
                    Raw::Env(s) => s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                };
                self.trusted_proxies = items
                    .iter()
                    .map(|i| i.parse::<Cidr>().map_err(named))
                    .collect::<Result<_, _>>()?;
            }
            "server.max_body_size" => self.max_body_size = raw.integer().map_err(named)? as usize,
            "server.request_timeout" => {
                self.request_timeout = ranged_duration(key, &raw).map_err(named)?
            }
            "server.header_read_timeout" => {
                self.header_read_timeout = ranged_duration(key, &raw).map_err(named)?
            }
            "server.max_connections" => {
                self.max_connections = raw.integer().map_err(named)? as usize
            }
            "server.shutdown_timeout" => {
                self.shutdown_timeout = ranged_duration(key, &raw).map_err(named)?
            }
            "database.path" => self.database_path = PathBuf::from(raw.string().map_err(named)?),
            "database.synchronous" => {
                let s = raw.string().map_err(named)?;
                self.synchronous = match s.to_ascii_lowercase().as_str() {
                    "normal" => Synchronous::Normal,
                    "full" => Synchronous::Full,
                    _ => return Err(named(format!("{s:?} is not \"normal\" or \"full\""))),
                };
            }
            "database.pool_size" => {
                self.pool_size = u32::try_from(raw.integer().map_err(named)?)
                    .map_err(|_| named("too large".into()))?
            }
            "database.busy_timeout" => {
                self.busy_timeout = ranged_duration(key, &raw).map_err(named)?
            }
            "database.url" => {
                let s = raw.string().map_err(named)?;
                self.database_url = if s.trim().is_empty() {
                    None
                } else {
                    Some(DatabaseUrl::parse(s.trim()).map_err(named)?)
                };
            }
            "database.ca_file" => {
                let s = raw.string().map_err(named)?;
                self.database_ca = match s.trim() {
                    "" => None,
                    "system" => Some(CaSource::System),
                    path => Some(CaSource::File(PathBuf::from(path))),
                };
            }
            "database.connect_timeout" => {
                self.connect_timeout = ranged_duration(key, &raw).map_err(named)?
            }
            "oauth.device_code_lifetime" => {
                self.device_code_lifetime = ranged_duration(key, &raw).map_err(named)?
            }
            "oauth.poll_interval" => {
                self.poll_interval = ranged_duration(key, &raw).map_err(named)?
            }
            "oauth.access_token_lifetime" => {
                self.access_token_lifetime = ranged_duration(key, &raw).map_err(named)?
            }
            "oauth.refresh_token_lifetime" => {
                self.refresh_token_lifetime = ranged_duration(key, &raw).map_err(named)?
            }
            "oauth.max_failed_code_attempts" => {
                self.max_failed_code_attempts = u32::try_from(raw.integer().map_err(named)?)
                    .map_err(|_| named("too large".into()))?
            }
            "oauth.signing_algorithm" => {
                let s = raw.string().map_err(named)?;
                self.signing_algorithm = Algorithm::parse(s.trim())
                    .ok_or_else(|| named(format!("{s:?} is not {}", Algorithm::names())))?;
            }
            "oauth.audience" => {
                let s = raw.string().map_err(named)?;
                let s = s.trim();
                if !s.is_empty() {
                    crate::protocol::resource::check_audience(s).map_err(|e| named(e.into()))?;
                }
                self.audience = Some(s.to_string()).filter(|s| !s.is_empty());
            }
            "keys.sealing_secrets_file" => {
                let s = raw.string().map_err(named)?;
                self.sealing_secrets_file = (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
            }
            "devices.untrusted_lifetime" => {
                self.untrusted_device_lifetime = ranged_duration(key, &raw).map_err(named)?
            }
            "devices.trusted_lifetime" => {
                self.trusted_device_lifetime = ranged_duration(key, &raw).map_err(named)?
            }
            "reaper.interval" => {
                self.reaper_interval = ranged_duration(key, &raw).map_err(named)?
            }
            "reaper.batch_size" => {
                self.reaper_batch_size = u32::try_from(raw.integer().map_err(named)?)
                    .map_err(|_| named("too large".into()))?
            }
            "sessions.lifetime" => {
                self.session_lifetime = ranged_duration(key, &raw).map_err(named)?
            }
            "limits.device_authorization_per_minute" => {
                self.limits.device_authorization_per_minute = small(raw.integer().map_err(named)?)?
            }
            "limits.token_per_minute" => {
                self.limits.token_per_minute = small(raw.integer().map_err(named)?)?
            }
            "limits.sign_in_per_minute" => {
                self.limits.sign_in_per_minute = small(raw.integer().map_err(named)?)?
            }
            "limits.code_entry_failures_per_minute" => {
                self.limits.code_entry_failures_per_minute = small(raw.integer().map_err(named)?)?
            }
            "location.database" => {
                let s = raw.string().map_err(named)?;
                self.location.database = (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
            }
            "location.city_header" | "location.region_header" | "location.country_header" => {
                let s = raw.string().map_err(named)?;
                let s = s.trim().to_ascii_lowercase();
                if !s.is_empty() && hyper::header::HeaderName::from_bytes(s.as_bytes()).is_err() {
                    return Err(named(format!("{s:?} is not a header name")));
                }
                let value = (!s.is_empty()).then_some(s);
                match key {
                    "location.city_header" => self.location.city_header = value,
                    "location.region_header" => self.location.region_header = value,
                    _ => self.location.country_header = value,
                }
            }
            "limits.max_pending_codes_per_client" => {
                self.limits.max_pending_codes_per_client = small(raw.integer().map_err(named)?)?
            }
            "log.format" => {
                let s = raw.string().map_err(named)?;
                self.log_format = match s.to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(named(format!("{s:?} is not \"text\" or \"json\""))),
                };
            }
            "log.level" => {
                let s = raw.string().map_err(named)?;
                tracing_subscriber::EnvFilter::try_new(&s)
                    .map_err(|e| named(format!("{s:?} is not a log filter: {e}")))?;
                self.log_level = s;
            }
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Cross-field and range checks, each naming its key.
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(ConfigError(format!("key `{key}`: must be greater than 0")))
            } else {
                Ok(())
            }
        };
        positive("server.max_body_size", self.max_body_size as u64)?;
        positive("server.max_connections", self.max_connections as u64)?;
        positive("database.pool_size", self.pool_size as u64)?;
        positive("reaper.batch_size", self.reaper_batch_size as u64)?;
        positive(
            "oauth.max_failed_code_attempts",
            self.max_failed_code_attempts as u64,
        )?;
        if let Some(url) = &self.database_url {
            url.check_ca(self.database_ca.as_ref())
                .map_err(|e| ConfigError(format!("key `database.url`: {e}")))?;
        }
        if self.poll_interval >= self.device_code_lifetime {
            return Err(ConfigError(
                "key `oauth.poll_interval`: must be shorter than oauth.device_code_lifetime".into(),
            ));
        }
        Ok(())
    }
}

/// Where the certificate authorities that vouch for the PostgreSQL server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A PEM file of one or more CA certificates (a managed provider's bundle, say).
    File(PathBuf),
    /// The system's trust store (`"system"`, as libpq's `sslrootcert=system`): read from the
    /// local files the OS keeps, never downloaded. Only with `sslmode=verify-full`.
    System,
}

/// libpq's `sslmode` values that hallpass supports (`allow` is not: it tries cleartext first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Cleartext only.
    Disable,
    /// TLS when the server offers it, else cleartext; the certificate is not checked. libpq's
    /// default, and so the default here.
    Prefer,
    /// TLS or nothing; the certificate is not checked unless a CA is configured, then its
    /// chain is (libpq: "require" with a root certificate behaves as "verify-ca").
    Require,
    /// TLS with a certificate that chains to a configured CA, for any host name.
    VerifyCa,
    /// TLS with a certificate that chains to a configured CA and names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A PostgreSQL connection URL (`database.url`, `HALLPASS_DATABASE_URL`): `postgres://user:
/// password@host:port/database?sslmode=verify-full`. It may carry a password, so it is never
/// shown as written: `Display` and `Debug` give [`DatabaseUrl::redacted`], which every message
/// uses. hallpass applies `sslmode` and `sslrootcert` itself (the driver knows neither
/// `verify-ca` nor `verify-full`); every other parameter goes to the driver as written.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// The URL without `sslmode` and `sslrootcert`, for the driver. Secret.
    for_driver: String,
    /// The URL with its password (in the user part or a `password=` parameter) hidden.
    redacted: String,
    /// `sslmode`; `Prefer` when absent, as with libpq.
    sslmode: SslMode,
    /// `sslrootcert`, when the URL names one.
    root_cert: Option<CaSource>,
}

impl DatabaseUrl {
    /// Reads a URL; the message of a refusal never repeats the password.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let redacted = redact_url(text);
        let Some(rest) = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
        else {
            return Err(format!(
                "{redacted} is not a PostgreSQL URL: write postgres://USER@HOST/DATABASE?sslmode=verify-full \
                 (leave database.url empty to use the SQLite file at database.path)"
            ));
        };
        let scheme = &text[..text.len() - rest.len()];
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut sslmode = SslMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key)
                .filter(|k| !k.contains('@') && !k.contains(':'))
                .ok_or_else(|| {
                    format!(
                        "{redacted}: the URL's parameters cannot be read; if the password holds \
                         `?`, `@`, `/` or `%`, percent-encode them (%3F, %40, %2F, %25)"
                    )
                })?;
            match key.as_str() {
                "sslmode" => {
                    sslmode = match percent_decode(value).as_deref() {
                        Some("disable") => SslMode::Disable,
                        Some("prefer") => SslMode::Prefer,
                        Some("require") => SslMode::Require,
                        Some("verify-ca") => SslMode::VerifyCa,
                        Some("verify-full") => SslMode::VerifyFull,
                        Some("allow") => {
                            return Err(format!(
                                "{redacted}: sslmode=allow is not supported (it tries cleartext \
                                 first); use disable, prefer, require, verify-ca or verify-full"
                            ))
                        }
                        _ => {
                            return Err(format!(
                                "{redacted}: sslmode must be disable, prefer, require, verify-ca \
                                 or verify-full"
                            ))
                        }
                    }
                }
                "sslrootcert" => {
                    root_cert = match percent_decode(value) {
                        Some(v) if v == "system" => Some(CaSource::System),
                        Some(v) if !v.is_empty() => Some(CaSource::File(PathBuf::from(v))),
                        _ => None,
                    }
                }
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(format!(
                        "{redacted}: `{key}` is not supported (client certificates and \
                         revocation lists); authenticate with a password"
                    ))
                }
                _ => kept.push(pair),
            }
        }
        let mut for_driver = format!("{scheme}{base}");
        if !kept.is_empty() {
            for_driver.push('?');
            for_driver.push_str(&kept.join("&"));
        }
        Ok(DatabaseUrl {
            for_driver,
            redacted,
            sslmode,
            root_cert,
        })
    }

    /// The URL for the driver, password included, without `sslmode` and `sslrootcert`. Never
    /// put it in a message: use [`DatabaseUrl::redacted`].
    pub fn expose_for_driver(&self) -> &str {
        &self.for_driver
    }

    /// The URL with its password hidden, for messages and logs.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The URL's `sslmode`.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// The certificate authorities to check the server against: `database.ca_file`
    /// (`configured`) or the URL's `sslrootcert`.
    pub fn ca<'a>(&'a self, configured: Option<&'a CaSource>) -> Option<&'a CaSource> {
        configured.or(self.root_cert.as_ref())
    }

    /// Checks that the TLS settings fit together: a verifying mode has a CA to verify with,
    /// the CA is given in one place, and the system's store is used only to verify fully.
    pub fn check_ca(&self, configured: Option<&CaSource>) -> Result<(), String> {
        if let (Some(a), Some(b)) = (configured, &self.root_cert) {
            if a != b {
                return Err(
                    "the URL's sslrootcert and database.ca_file differ; give the CA in one place"
                        .into(),
                );
            }
        }
        let ca = self.ca(configured);
        match (self.sslmode, ca) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => Err(format!(
                "sslmode={} checks the server's certificate, so it needs the certificate \
                 authorities to check it against: set database.ca_file to a PEM file (your \
                 provider's CA bundle), or to \"system\" for the system's trust store; \
                 hallpass bundles no list of its own",
                self.sslmode.as_str()
            )),
            (mode, Some(CaSource::System)) if mode != SslMode::VerifyFull => Err(format!(
                "the system's trust store (\"system\") is only used with sslmode=verify-full, \
                 not {}: any certificate a public CA signed for any name would pass otherwise",
                mode.as_str()
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// `text` with `%XX` escapes decoded (`+` stays `+`, as libpq reads URLs); `None` when an
/// escape is broken or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A connection URL with its password hidden: the user part keeps the user name and shows
/// `:***` for a password, and a `password=` parameter's value becomes `***`. Everything up to
/// the last `@` is taken as the user part, so a password with an unencoded `@`, `/` or `?` is
/// hidden too. Works on any text, even one that is no URL at all.
pub fn redact_url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let mut out = String::from(scheme);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
            out.push_str(user);
            if !password.is_empty() || rest[..at].contains(':') {
                out.push_str(":***");
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if percent_decode(k).as_deref() == Some("password") => {
                        format!("{k}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address range such as \"10.0.0.0/8\" or \"::1\"");
        let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix.parse().map_err(|_| bad())?
        };
        if prefix > max {
            return Err(bad());
        }
        // `::ffff:10.0.0.0/104` is written for IPv4 clients on a dual-stack socket; `contains`
        // sees those clients as IPv4, so keep the range as IPv4 too (found by fuzz/client_ip).
        if let IpAddr::V6(v6) = net {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(Cidr {
                    net: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { net, prefix })
    }
}

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    format!("HALLPASS_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Parses `"10m"`, `"30d"`, `"1h30m"`, `"250ms"`: one or more integers each followed by a unit,
/// each unit at most once and largest first (`"5s5s"` and `"30m1h"` are refused: one way to
/// write each duration, so a typo is not silently added up).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"10m\"".into());
    }
    let bad = || {
        format!("invalid duration {text:?}: write a number followed by a unit (ms, s, m, h, d), e.g. \"10m\" or \"1h30m\"")
    };
    let mut total = Duration::ZERO;
    let mut rest = s;
    // The rank of the last unit read (d = 0 … ms = 4): each next one must be smaller.
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(n.checked_mul(DAY).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        let rank = ["d", "h", "m", "s", "ms"]
            .iter()
            .position(|u| *u == unit)
            .expect("a unit matched above");
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(format!(
                "invalid duration {text:?}: write each unit at most once, largest first, e.g. \"1h30m\""
            ));
        }
        last_rank = Some(rank);
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it, using the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, size) in [("d", DAY), ("h", 3600), ("m", 60)] {
        if s >= size && s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn scope_descriptions_are_read_and_checked() {
        let c = Config::from_sources(
            Some("[scopes]\nread = \"Read your files\"\n\"repo:write\" = \" Push \"\n"),
            None,
            &[],
        )
        .unwrap();
        assert_eq!(c.scope_descriptions["read"], "Read your files");
        assert_eq!(c.scope_descriptions["repo:write"], "Push");
        for (text, words) in [
            ("[scopes]\nread = 3\n", "scopes.read`: must be a string"),
            ("[scopes]\n\"a b\" = \"x\"\n", "not a scope name"),
            ("[scopes]\nread = \"\"\n", "1 to 300"),
            ("scopes = 1\n", "must be a [section]"),
        ] {
            let e = Config::from_sources(Some(text), Some("f.toml"), &[]).unwrap_err();
            assert!(e.to_string().contains(words), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * DAY)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Ok(Duration::from_millis(93_784_005))
        );
        for repeated in ["5s5s", "1m1m", "30m1h", "1s1m", "500ms1s", "1h1h30m"] {
            let e = parse_duration(repeated).unwrap_err();
            assert!(e.contains("at most once"), "{repeated}: {e}");
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn every_duration_key_has_a_range_that_holds_its_default() {
        let d = Config::default();
        let defaults = [
            d.request_timeout,
            d.header_read_timeout,
            d.shutdown_timeout,
            d.busy_timeout,
            d.connect_timeout,
            d.device_code_lifetime,
            d.poll_interval,
            d.access_token_lifetime,
            d.refresh_token_lifetime,
            d.untrusted_device_lifetime,
            d.trusted_device_lifetime,
            d.reaper_interval,
            d.session_lifetime,
        ];
        assert_eq!(DURATION_RANGES.len(), defaults.len());
        for (&(key, min, max), default) in DURATION_RANGES.iter().zip(defaults) {
            assert!(KEYS.contains(&key), "{key}");
            assert!((min..=max).contains(&default), "{key}");
            // The largest allowed value still fits the millisecond timestamps, added to now.
            assert!(crate::clock::now_ms()
                .checked_add(crate::clock::ms(max))
                .is_some());
            let mut c = Config::default();
            let at_max = format_duration(max);
            assert!(c.set(key, Raw::Env(&at_max)).is_ok(), "{key} = {at_max}");
            let e = c.set(key, Raw::Env("999999999999d")).unwrap_err();
            assert!(
                e.contains(key) && e.contains(&format!("to {at_max}")),
                "{key}: {e}"
            );
        }
        // Every key set with a duration is in the table (a key missing from it would take
        // any value).
        for key in KEYS {
            let mut c = Config::default();
            if c.set(key, Raw::Env("1s")).is_ok() && c.set(key, Raw::Env("1")).is_err() {
                assert!(
                    DURATION_RANGES.iter().any(|(k, _, _)| k == key),
                    "{key} takes a duration but has no range"
                );
            }
        }
    }

    #[test]
    fn file_then_env_override() {
        let text = "[oauth]\npoll_interval = \"7s\"\n[server]\nlisten = \"0.0.0.0:9\"\n";
        let c = Config::from_sources(
            Some(text),
            Some("x.toml"),
            &env(&[("HALLPASS_OAUTH_POLL_INTERVAL", "9s")]),
        )
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(9));
        assert_eq!(c.listen.port(), 9);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_sources(Some("[oauth]\nnope = 1\n"), Some("x.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("oauth.nope"), "{e}");
        let e = Config::from_sources(
            Some("[oauth]\npoll_interval = \"5 parsecs\"\n"),
            Some("x.toml"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("oauth.poll_interval"), "{e}");
        let e = Config::from_sources(Some("[oauth]\npoll_interval = 5\n"), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unit"), "{e}");
        let e = Config::from_sources(None, None, &env(&[("HALLPASS_NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HALLPASS_NOPE"), "{e}");
        let e = Config::from_sources(Some("listen = 1"), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("section"), "{e}");
        let e = Config::from_sources(Some("[nope]\n"), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[nope]"), "{e}");
        let e = Config::from_sources(Some("server = 1\n"), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server"), "{e}");
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_one() {
        let e = |toml: &str| {
            Config::from_sources(Some(toml), Some("x.toml"), &[])
                .unwrap_err()
                .to_string()
        };
        let m = e("[oauth]\npoll_intervall = \"5s\"\n");
        assert!(
            m.contains("unknown key `oauth.poll_intervall`; did you mean `oauth.poll_interval`?"),
            "{m}"
        );
        assert!(!m.contains("server.listen"), "not every key: {m}");
        let m = e("[oauth]\npoll-interval = \"5s\"\n");
        assert!(m.contains("did you mean `oauth.poll_interval`?"), "{m}");
        let m = e("[server]\npoll_interval = \"5s\"\n");
        assert!(m.contains("did you mean `oauth.poll_interval`?"), "{m}");
        // Nothing close: the keys of that section only.
        let m = e("[reaper]\nzzzzzzzzzz = 1\n");
        assert!(m.contains("[reaper] has interval, batch_size"), "{m}");
        assert!(!m.contains("did you mean"), "{m}");
        let m = e("[oath]\npoll_interval = \"5s\"\n");
        assert!(
            m.contains("unknown section [oath]; did you mean [oauth]?"),
            "{m}"
        );
        let m = Config::from_sources(None, None, &env(&[("HALLPASS_OAUTH_POLL_INTERVALL", "5s")]))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("did you mean HALLPASS_OAUTH_POLL_INTERVAL?"),
            "{m}"
        );
    }

    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../config.example.toml");
        let c = Config::from_sources(Some(text), Some("config.example.toml"), &[]).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        for key in KEYS {
            let (section, name) = key.split_once('.').unwrap();
            assert!(
                text.contains(&format!("[{section}]")) && text.contains(&format!("\n{name} = ")),
                "config.example.toml does not document {key}"
            );
        }
        // Each duration key's range is shown in the comment above it.
        for (key, min, max) in DURATION_RANGES {
            let (section, name) = key.split_once('.').unwrap();
            let from = text.find(&format!("[{section}]")).unwrap();
            let at = from + text[from..].find(&format!("\n{name} = ")).unwrap();
            let comment = &text[text[..at].rfind("\n\n").unwrap()..at];
            let range = format!("[{} to {}", format_duration(*min), format_duration(*max));
            assert!(
                comment.contains(&range),
                "config.example.toml: {key} should say {range}]"
            );
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains("10.9.9.9".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(one.contains("192.0.2.1".parse().unwrap()));
        let h: Cidr = "::1".parse().unwrap();
        assert!(h.contains("::1".parse().unwrap()));
        assert!(!h.contains("::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        let e = Config::from_sources(
            None,
            None,
            &env(&[("HALLPASS_SERVER_TRUSTED_PROXIES", "127.0.0.1, ::1")]),
        )
        .unwrap();
        assert_eq!(e.trusted_proxies.len(), 2);
    }

    #[test]
    fn database_urls_keep_their_password_out_of_every_message() {
        let url = DatabaseUrl::parse(
            "postgres://hall:s3cr%40t-pw@db.example.org:5433/hallpass?sslmode=verify-full\
             &application_name=a&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(url.sslmode(), SslMode::VerifyFull);
        assert_eq!(
            url.ca(None),
            Some(&CaSource::File(PathBuf::from("/etc/ca.pem")))
        );
        assert_eq!(
            url.expose_for_driver(),
            "postgres://hall:s3cr%40t-pw@db.example.org:5433/hallpass?application_name=a"
        );
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(
            shown.contains("postgres://hall:***@db.example.org:5433/hallpass"),
            "{shown}"
        );

        for (text, kept) in [
            ("postgres://u:p@ss/w?rd@h/db", "postgres://u:***@h/db"),
            (
                "postgresql://u@h/db?password=pw-Hush42&x=1",
                "postgresql://u@h/db?password=***&x=1",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://u:@h/db", "postgres://u:***@h/db"),
        ] {
            assert_eq!(redact_url(text), kept);
        }
        // Refusals name the URL, never its password.
        for (text, words) in [
            ("mysql://u:pw-Hush42@h/db", "not a PostgreSQL URL"),
            (
                "postgres://u:pw-Hush42@h/db?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            (
                "postgres://u:pw-Hush42@h/db?sslmode=maybe",
                "sslmode must be",
            ),
            (
                "postgres://u:pw-Hush42@h/db?sslcert=/c.pem",
                "`sslcert` is not supported",
            ),
            ("postgres://u:pw?Hush42@h/db", "percent-encode"),
            (
                "postgres://u:pw-Hush42@h/db?password=pw-Hush42&sslmode=x",
                "sslmode must be",
            ),
        ] {
            let e = Config::from_sources(None, None, &env(&[("HALLPASS_DATABASE_URL", text)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(words), "{text}: {e}");
            assert!(e.contains("database.url"), "{text}: {e}");
            assert!(!e.contains("Hush42"), "{text}: {e}");
        }
        // The configuration's Debug (logged by nothing, but printed by tests) hides it too.
        let c = Config::from_sources(
            None,
            None,
            &env(&[("HALLPASS_DATABASE_URL", "postgres://u:pw-Hush42@h/db")]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("Hush42"));
    }

    #[test]
    fn tls_settings_must_fit_together() {
        let load = |pairs: &[(&str, &str)]| Config::from_sources(None, None, &env(pairs));
        let url = |mode: &str| format!("postgres://u@db.example.org/h?sslmode={mode}");
        // No sslmode: libpq's default, prefer.
        let c = load(&[("HALLPASS_DATABASE_URL", "postgres://u@h/db")]).unwrap();
        assert_eq!(c.database_url.unwrap().sslmode(), SslMode::Prefer);
        for mode in ["verify-ca", "verify-full"] {
            let e = load(&[("HALLPASS_DATABASE_URL", &url(mode))])
                .unwrap_err()
                .to_string();
            assert!(e.contains("set database.ca_file"), "{mode}: {e}");
            let c = load(&[
                ("HALLPASS_DATABASE_URL", &url(mode)),
                ("HALLPASS_DATABASE_CA_FILE", "/etc/ssl/provider-ca.pem"),
            ])
            .unwrap();
            assert_eq!(
                c.database_ca,
                Some(CaSource::File("/etc/ssl/provider-ca.pem".into()))
            );
        }
        assert!(load(&[
            ("HALLPASS_DATABASE_URL", &url("verify-full")),
            ("HALLPASS_DATABASE_CA_FILE", "system"),
        ])
        .is_ok());
        for mode in ["require", "verify-ca", "prefer"] {
            let e = load(&[
                ("HALLPASS_DATABASE_URL", &url(mode)),
                ("HALLPASS_DATABASE_CA_FILE", "system"),
            ])
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("only used with sslmode=verify-full"),
                "{mode}: {e}"
            );
        }
        let e = load(&[
            (
                "HALLPASS_DATABASE_URL",
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=/a.pem",
            ),
            ("HALLPASS_DATABASE_CA_FILE", "/b.pem"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("in one place"), "{e}");
        // An empty URL is SQLite.
        let c = Config::from_sources(Some("[database]\nurl = \"\"\n"), None, &[]).unwrap();
        assert!(c.database_url.is_none());
    }

    #[test]
    fn every_key_is_settable() {
        for key in KEYS {
            let mut c = Config::default();
            // Setting must never say "unknown key"; the value may be refused for its kind.
            if let Err(e) = c.set(key, Raw::Env("1")) {
                assert!(!e.contains("unknown key"), "{key}: {e}");
            }
        }
    }
}
