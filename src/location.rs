//! Where a device asked from (city, region, country), for the approval page and the device
//! record. Two local sources, never a network call: headers set by a trusted reverse proxy
//! (`[location] city_header` …, believed only from `server.trusted_proxies`), else a
//! MaxMind-format database file (`[location] database`, read into memory at start-up).
//! Nothing configured: nothing known.

use std::net::IpAddr;

use hyper::header::HeaderMap;

use crate::config::LocationConfig;
pub use crate::domain::model::Location;

/// Looks addresses up; built once at start-up.
pub struct Locator {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
    config: LocationConfig,
}

impl Locator {
    /// Opens the configured database, if any. An unreadable or malformed file is an error
    /// (start-up stops with it), not a silent "unknown".
    pub fn open(config: &LocationConfig) -> Result<Locator, String> {
        let reader = match &config.database {
            Some(path) => Some(maxminddb::Reader::open_readfile(path).map_err(|e| {
                format!(
                    "key `location.database`: cannot read {}: {e}",
                    path.display()
                )
            })?),
            None => None,
        };
        Ok(Locator {
            reader,
            config: config.clone(),
        })
    }

    /// A locator that knows nothing (tests, and no configuration).
    pub fn none() -> Locator {
        Locator {
            reader: None,
            config: LocationConfig::default(),
        }
    }

    /// The location of `ip`. `headers` count only when `via_trusted_proxy`.
    pub fn locate(&self, ip: IpAddr, headers: &HeaderMap, via_trusted_proxy: bool) -> Location {
        if via_trusted_proxy {
            let header = |name: &Option<String>| {
                name.as_deref()
                    .and_then(|n| headers.get(n))
                    .and_then(|v| v.to_str().ok())
                    .and_then(clean)
            };
            let from_proxy = Location {
                city: header(&self.config.city_header),
                region: header(&self.config.region_header),
                country: header(&self.config.country_header),
            };
            if from_proxy != Location::default() {
                return from_proxy;
            }
        }
        self.lookup(ip).unwrap_or_default()
    }

    fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let reader = self.reader.as_ref()?;
        let result = reader.lookup(ip).ok()?;
        let city: maxminddb::geoip2::City<'_> = result.decode().ok()??;
        Some(Location {
            city: city.city.names.english.and_then(clean),
            region: city
                .subdivisions
                .first()
                .and_then(|s| s.names.english)
                .and_then(clean),
            country: city
                .country
                .names
                .english
                .or(city.country.iso_code)
                .and_then(clean),
        })
    }
}

/// Keeps a short, printable value; anything else is treated as unknown.
fn clean(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s.chars().count() <= 100 && !s.chars().any(char::is_control))
        .then(|| s.to_string())
}
