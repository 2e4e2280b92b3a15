//! Scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of printable ASCII other than
//! `"` and `\`.
//!
//! Two scopes are reserved: [`DEVICES`] lets a token manage its user's own devices through the
//! management API, and [`ADMIN`] is granted only while the approving user is an admin.

use std::collections::BTreeSet;

/// Reserved scope: manage the user's own devices through `/api/v1/devices`.
pub const DEVICES: &str = "devices";

/// Reserved scope: administer hallpass. Only an admin can grant it.
pub const ADMIN: &str = "admin";

/// A parsed set of scope tokens, kept sorted so the stored form is canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    /// Parses a scope parameter; `None` if a token has a forbidden character.
    pub fn parse(s: &str) -> Option<Scope> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if !token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return None;
            }
            set.insert(token.to_string());
        }
        Some(Scope(set))
    }

    /// True when every token of `self` is in `allowed`.
    pub fn is_subset(&self, allowed: &Scope) -> bool {
        self.0.is_subset(&allowed.0)
    }

    /// The tokens of `self` not in `allowed`.
    pub fn outside<'a>(&'a self, allowed: &'a Scope) -> Vec<&'a str> {
        self.0.difference(&allowed.0).map(String::as_str).collect()
    }

    /// The tokens in both `self` and `other`.
    pub fn intersect(&self, other: &Scope) -> Scope {
        Scope(self.0.intersection(&other.0).cloned().collect())
    }

    /// `self` without `token`.
    pub fn without(mut self, token: &str) -> Scope {
        self.0.remove(token);
        self
    }

    /// Whether `token` is in the set.
    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// True for the empty scope.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tokens, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The space-separated canonical form.
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for t in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(t)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_subset() {
        let allowed = Scope::parse("read write devices").unwrap();
        let asked = Scope::parse("write  read").unwrap();
        assert!(asked.is_subset(&allowed));
        assert_eq!(asked.to_string(), "read write");
        let more = Scope::parse("read admin").unwrap();
        assert!(!more.is_subset(&allowed));
        assert_eq!(more.outside(&allowed), vec!["admin"]);
        assert!(Scope::parse("").unwrap().is_empty());
        assert!(Scope::parse("a\"b").is_none());
        assert!(Scope::parse("a\\b").is_none());
        assert!(Scope::parse("é").is_none());
        assert_eq!(allowed.intersect(&more).to_string(), "read");
        assert_eq!(allowed.clone().without("read").to_string(), "devices write");
        assert!(allowed.contains("devices"));
    }
}
