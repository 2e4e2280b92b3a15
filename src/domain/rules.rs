//! The pure decisions of the product, shared by every storage backend and every front end:
//! who may still hold tokens, which scope a grant gets and which one a token reports now. A
//! backend reads the rows; these functions decide.

use crate::domain::model::{Device, DeviceStatus, User};
use crate::protocol::scope::{self, Scope};

/// The rule checked at exchange, at every refresh and at every introspection — not only at
/// approval: the device is approved (not pending), not locked, not expired, and its user exists
/// and is not disabled. Returns the user when all hold; `find_user` reads a user by id, and is
/// called only when the device itself passes.
pub fn device_holder<E>(
    device: &Device,
    now: i64,
    find_user: impl FnOnce(&str) -> Result<Option<User>, E>,
) -> Result<Option<User>, E> {
    if matches!(device.status, DeviceStatus::Pending | DeviceStatus::Locked)
        || device.expires <= now
    {
        return Ok(None);
    }
    let Some(user_id) = &device.user_id else {
        return Ok(None);
    };
    Ok(find_user(user_id)?.filter(|u| !u.disabled))
}

/// The scope actually granted: what was asked, within what the client may have now (changing a
/// client's scopes affects future grants and refreshes), and `admin` only for an admin.
pub fn effective_scope(asked: &Scope, client_allowed: &str, user_is_admin: bool) -> Scope {
    let allowed = Scope::parse(client_allowed).unwrap_or_default();
    let granted = asked.intersect(&allowed);
    if user_is_admin {
        granted
    } else {
        granted.without(scope::ADMIN)
    }
}

/// The scope a token reports now: what it was granted, less `admin` once its user is no admin
/// (issue 18 §5: a demotion takes effect at once, as at the management API), and less both
/// reserved scopes for a client's own token, which acts for no person.
pub fn current_scope(granted: &str, user: Option<&User>) -> String {
    let scope = Scope::parse(granted).unwrap_or_default();
    match user {
        Some(u) if u.is_admin => return granted.to_string(),
        Some(_) => scope.without(scope::ADMIN),
        None => scope.without(scope::ADMIN).without(scope::DEVICES),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_scope_needs_an_admin() {
        let asked = Scope::parse("read admin").unwrap();
        assert_eq!(
            effective_scope(&asked, "read admin", false).to_string(),
            "read"
        );
        assert_eq!(
            effective_scope(&asked, "read admin", true).to_string(),
            "admin read"
        );
        assert_eq!(effective_scope(&asked, "read", true).to_string(), "read");
    }
}
