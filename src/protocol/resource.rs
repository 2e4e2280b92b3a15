//! Resource indicators (RFC 8707) and the `aud` claim they decide (RFC 9068 §2.2, §3).
//!
//! A client may name the resources (APIs) it wants a token for with `resource`, repeated for
//! several, on the device authorization request and on the token request. Each must be an
//! absolute URI without a fragment (RFC 8707 §2) and one the client may ask for: one of its
//! `allowed_resources`, or its default audience. Otherwise the answer is `invalid_target`.
//!
//! The resources named at the device authorization are the grant's: every access token of the
//! grant (the exchange and each refresh) is for them, or for a subset named on that token
//! request (RFC 8707 §2.2), and the refresh token keeps them all. A grant that named none is
//! for the client's default audience, and a token request may name any resource the client may
//! ask for. When nothing is named the `aud` is the default audience (RFC 9068 §3: "the
//! authorization server MUST use a default resource indicator"): the client's own, else the
//! server's `oauth.audience`, else the issuer URL, that is hallpass itself, whose management API
//! accepts its tokens.
//!
//! Resources are compared as exact strings (RFC 3986 §6.2.1), as resource servers compare
//! `aud`. What a client may ask for is checked again at every exchange and refresh, so an
//! administrator who removes a resource from a client ends it for future tokens.

use std::borrow::Cow;

/// At most this many `resource` parameters in one request.
pub const MAX_RESOURCES: usize = 10;

/// At most this many characters in one resource indicator (and in a configured audience).
pub const MAX_LEN: usize = 512;

/// Why a resource indicator or audience is malformed, for `invalid_target` or the admin API.
pub fn check_uri(uri: &str) -> Result<(), Cow<'static, str>> {
    if uri.is_empty() || uri.chars().count() > MAX_LEN {
        return Err(format!("a resource must be 1 to {MAX_LEN} characters").into());
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Err("a resource must not contain spaces, quotes or control characters".into());
    }
    // RFC 3986 §4.3: absolute-URI = scheme ":" hier-part [ "?" query ]; scheme = ALPHA
    // *( ALPHA / DIGIT / "+" / "-" / "." ).
    let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or("");
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || uri.len() == scheme.len() + 1 {
        return Err(format!("`{uri}` is not an absolute URI (RFC 8707 §2)").into());
    }
    if uri.contains('#') {
        return Err(format!("`{uri}` has a fragment, which RFC 8707 §2 forbids").into());
    }
    Ok(())
}

/// Checks an audience an administrator sets: an absolute URI as for `resource`, or a plain
/// name without `:` (RFC 7519's StringOrURI: a string with a colon must be a URI).
pub fn check_audience(aud: &str) -> Result<(), Cow<'static, str>> {
    if aud.contains(':') {
        return check_uri(aud);
    }
    if aud.is_empty()
        || aud.chars().count() > MAX_LEN
        || aud
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
    {
        return Err(format!(
            "an audience is 1 to {MAX_LEN} characters without spaces, quotes or control characters"
        )
        .into());
    }
    Ok(())
}

/// The `resource` parameters of a request, checked and without repeats (first kept); `None`
/// when there is none.
pub fn parse_params<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Vec<String>>, Cow<'static, str>> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        check_uri(v)?;
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
        if out.len() > MAX_RESOURCES {
            return Err(format!("at most {MAX_RESOURCES} resources per request").into());
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Resources as stored: space-separated (a URI cannot contain a space).
pub fn to_stored(resources: &[String]) -> String {
    resources.join(" ")
}

/// Resources from their stored form.
pub fn from_stored(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_string).collect()
}

/// What a client may ask for now: its allowed resources and its default audience.
pub struct Allowed<'a> {
    /// The client's `allowed_resources`.
    pub resources: &'a [String],
    /// The default audience: the client's, else the server's, else the issuer.
    pub default: &'a str,
}

impl Allowed<'_> {
    /// Whether the client may ask for `resource`.
    pub fn contains(&self, resource: &str) -> bool {
        resource == self.default || self.resources.iter().any(|r| r == resource)
    }

    /// Checks the resources of a device authorization request (RFC 8707 §2).
    pub fn check(&self, asked: &[String]) -> Result<(), Cow<'static, str>> {
        match asked.iter().find(|r| !self.contains(r)) {
            Some(r) => Err(format!("this client may not ask for the resource `{r}`").into()),
            None => Ok(()),
        }
    }

    /// The audience of one access token: `asked` (the token request's `resource`s), within
    /// what `granted` (the grant's resources, `None` when it named none) covers and the client
    /// may still ask for; without `asked`, the grant's resources, or the default audience.
    /// An `Err` is `invalid_target`.
    pub fn audience(
        &self,
        asked: Option<&[String]>,
        granted: Option<&[String]>,
    ) -> Result<Vec<String>, Cow<'static, str>> {
        let covered: Option<Vec<&String>> =
            granted.map(|g| g.iter().filter(|r| self.contains(r)).collect());
        if let Some(asked) = asked {
            for r in asked {
                let ok = match &covered {
                    Some(c) => c.contains(&r),
                    None => self.contains(r),
                };
                if !ok {
                    return Err(match covered {
                        Some(_) => format!(
                            "the resource `{r}` is not one this grant was issued for (RFC 8707 §2.2)"
                        ),
                        None => format!("this client may not ask for the resource `{r}`"),
                    }
                    .into());
                }
            }
            return Ok(asked.to_vec());
        }
        match covered {
            Some(c) if c.is_empty() => {
                Err("none of the resources this grant was issued for is allowed for the client any more".into())
            }
            Some(c) => Ok(c.into_iter().cloned().collect()),
            None => Ok(vec![self.default.to_string()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resource_indicators_are_absolute_uris_without_fragments() {
        for ok in [
            "https://api.example.com",
            "https://api.example.com/v1?x=1",
            "urn:example:api",
            "http://127.0.0.1:8080",
        ] {
            assert!(check_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "api.example.com",
            "/relative",
            "https://api.example.com#frag",
            "https://a b",
            "1http://x",
            "https:",
            ":x",
        ] {
            assert!(check_uri(bad).is_err(), "{bad:?}");
        }
        assert!(check_uri(&format!("https://{}", "a".repeat(MAX_LEN))).is_err());
        assert!(check_audience("my-api").is_ok());
        assert!(check_audience("https://api").is_ok());
        assert!(check_audience("not a uri: x").is_err());
        assert!(check_audience("a:b#c").is_err());
    }

    #[test]
    fn parameters_are_checked_and_deduplicated() {
        assert_eq!(parse_params([]).unwrap(), None);
        assert_eq!(
            parse_params(["https://a", "https://b", "https://a"]).unwrap(),
            Some(v(&["https://a", "https://b"]))
        );
        assert!(parse_params(["https://a", "nope"]).is_err());
        let many: Vec<String> = (0..=MAX_RESOURCES)
            .map(|i| format!("https://r{i}"))
            .collect();
        assert!(parse_params(many.iter().map(String::as_str)).is_err());
        assert_eq!(
            from_stored(&to_stored(&v(&["https://a", "urn:b"]))),
            v(&["https://a", "urn:b"])
        );
    }

    #[test]
    fn the_audience_follows_rfc_8707() {
        let resources = v(&["https://a", "https://b"]);
        let allowed = Allowed {
            resources: &resources,
            default: "https://issuer",
        };
        // Nothing asked, no grant resources: the default.
        assert_eq!(
            allowed.audience(None, None).unwrap(),
            v(&["https://issuer"])
        );
        // Asked at the token request, no grant resources: anything the client may have.
        assert_eq!(
            allowed.audience(Some(&v(&["https://b"])), None).unwrap(),
            v(&["https://b"])
        );
        assert!(allowed.audience(Some(&v(&["https://c"])), None).is_err());
        // A grant for a and b: by default both; a token request narrows to one.
        let grant = v(&["https://a", "https://b"]);
        assert_eq!(allowed.audience(None, Some(&grant)).unwrap(), grant);
        assert_eq!(
            allowed
                .audience(Some(&v(&["https://a"])), Some(&grant))
                .unwrap(),
            v(&["https://a"])
        );
        // A grant for a only cannot widen to b, nor to the default.
        let only_a = v(&["https://a"]);
        assert!(allowed
            .audience(Some(&v(&["https://b"])), Some(&only_a))
            .is_err());
        assert!(allowed
            .audience(Some(&v(&["https://issuer"])), Some(&only_a))
            .is_err());
        // The client lost b: a grant for a and b goes on for a; a grant for b alone stops.
        let fewer = v(&["https://a"]);
        let now = Allowed {
            resources: &fewer,
            default: "https://issuer",
        };
        assert_eq!(now.audience(None, Some(&grant)).unwrap(), v(&["https://a"]));
        assert!(now.audience(None, Some(&v(&["https://b"]))).is_err());
        // The device authorization's own check.
        assert!(allowed.check(&v(&["https://a", "https://issuer"])).is_ok());
        assert!(allowed.check(&v(&["https://a", "https://x"])).is_err());
    }
}
