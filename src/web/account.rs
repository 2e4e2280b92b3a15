//! Sign-in and sign-out, "My devices", and the admins' list of live device authorizations.

use std::fmt::Write;

use hyper::header;
use hyper::StatusCode;

use super::html::{self, esc, notice, relative, when};
use super::{
    cookie, csrf_ok, local_path, login_cookie_name, page, query, read_form, redirect, session,
    session_cookie_name, set_cookie, to_login, viewer,
};
use crate::db::device_authorizations::{self as auths, AuthorizationState};
use crate::db::devices::{self as rows, Device};
use crate::db::sessions::{self, Session};
use crate::db::{self, clients, users};
use crate::devices::{self as manage, Actor};
use crate::http::{Error, Request, Response};
use crate::state::AppState;

/// `GET /login`: the sign-in form (or straight on, when already signed in).
pub async fn login_form(state: AppState, req: Request) -> Result<Response, Error> {
    let q = query(&req)?;
    let next = local_path(q.get("next"));
    if session(&state, req.headers()).await?.is_some() {
        return Ok(redirect(&next));
    }
    Ok(login_page(&state, StatusCode::OK, &next, "", None))
}

/// The sign-in page with a fresh double-submit token (cookie + hidden field).
fn login_page(
    state: &AppState,
    status: StatusCode,
    next: &str,
    username: &str,
    problem: Option<&str>,
) -> Response {
    let token = crate::secrets::new_token();
    let problem = problem
        .map(|p| notice("error", &esc(p)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1>
{problem}<form method="post" action="/login" class="card">
<input type="hidden" name="csrf" value="{token}">
<input type="hidden" name="next" value="{next}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{username}" autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<div class="actions"><button type="submit" class="primary">Sign in</button></div>
</form>"#,
        next = esc(next),
        username = esc(username),
    );
    let mut resp = page(status, html::layout("Sign in", None, &body));
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, login_cookie_name(state), &token, 3600),
    );
    resp
}

/// `POST /login`: checks the password (as slowly for an unknown name as for a wrong password),
/// then starts a new session; at most `limits.sign_in_per_minute` attempts per address.
pub async fn login(state: AppState, req: Request) -> Result<Response, Error> {
    let (headers, peer, form) = read_form(&state, req).await?;
    let next = local_path(form.get("next"));
    let username = form.text("username", 100)?.unwrap_or_default();
    // Double-submit: the form's token must equal the cookie set with the form (login CSRF).
    let cookie_token = cookie(&headers, login_cookie_name(&state)).unwrap_or("");
    let form_token = form.get("csrf").unwrap_or("");
    if cookie_token.is_empty()
        || !crate::secrets::constant_time_eq(cookie_token.as_bytes(), form_token.as_bytes())
    {
        return Ok(login_page(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            &username,
            Some("This sign-in form expired or came from another site. Please sign in again."),
        ));
    }
    if let Some(p) = peer {
        state
            .limits
            .sign_in
            .check(p.0.ip())
            .map_err(Error::TooManyRequests)?;
    }
    let password = form.get("password").unwrap_or("").to_string();
    let name = username.trim().to_string();
    let user = state
        .db
        .run(move |conn| users::find_by_username(conn, &name))
        .await?;
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| crate::secrets::dummy_password_hash().to_string());
    let password_ok =
        tokio::task::spawn_blocking(move || crate::secrets::verify_password(&password, &stored))
            .await
            .unwrap_or(false);
    let user = match user {
        Some(u) if password_ok && !u.disabled => u,
        _ => {
            return Ok(login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                &next,
                &username,
                Some("Wrong username or password."),
            ))
        }
    };
    let id = crate::secrets::new_token();
    let csrf = crate::secrets::new_token();
    let hash = crate::secrets::hash_token(&id);
    let lifetime = state.config.session_lifetime;
    let user_id = user.id.clone();
    state
        .db
        .run(move |conn| {
            let now = db::now_ms();
            sessions::insert(conn, &hash, &user_id, &csrf, now, now + db::ms(lifetime))
        })
        .await?;
    let mut resp = redirect(&next);
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, session_cookie_name(&state), &id, lifetime.as_secs()),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, login_cookie_name(&state), "", 0),
    );
    Ok(resp)
}

/// `POST /logout`: ends the session (CSRF-checked, so no other site can sign you out).
pub async fn logout(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(redirect("/login"));
    };
    let (_, _, form) = read_form(&state, req).await?;
    if !csrf_ok(&s, form.get("csrf")) {
        return Err(csrf_refused());
    }
    let hash = s.id_hash.clone();
    state
        .db
        .run(move |conn| sessions::delete(conn, &hash))
        .await?;
    let mut resp = redirect("/login");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, session_cookie_name(&state), "", 0),
    );
    Ok(resp)
}

/// The refusal of a form without a valid CSRF token.
pub fn csrf_refused() -> Error {
    Error::Forbidden(
        "This form expired or came from another site, so nothing was changed. Reload the page and try again."
            .into(),
    )
}

/// `GET /devices`: the person's devices, each with rename, lock/unlock and remove.
pub async fn devices(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let q = query(&req)?;
    let user_id = s.user.id.clone();
    let (list, client_names) = state
        .db
        .run(move |conn| {
            let list = rows::list_for_user(conn, &user_id)?;
            let mut names = std::collections::HashMap::new();
            for d in &list {
                if !names.contains_key(&d.client_id) {
                    let name = clients::find(conn, &d.client_id)?.map(|c| c.name);
                    names.insert(d.client_id.clone(), name);
                }
            }
            Ok((list, names))
        })
        .await?;
    let now = db::now_ms();
    let mut body = String::from("<h1>My devices</h1>");
    if let Some(done) = q.get("done") {
        let text = match done {
            "renamed" => "The device was renamed.",
            "locked" => {
                "The device is locked: its tokens stopped working and it cannot refresh them."
            }
            "unlocked" => "The device is unlocked and may refresh its tokens again.",
            "removed" => "The device was removed and signed out.",
            _ => "",
        };
        if !text.is_empty() {
            body.push_str(&notice("ok", text));
        }
    }
    let live: Vec<&Device> = list.iter().filter(|d| d.expires > now).collect();
    if live.is_empty() {
        body.push_str(
            "<p>No device is signed in to your account. When you approve a device, it shows up here.</p>",
        );
    }
    for d in live {
        let client = client_names
            .get(&d.client_id)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "(deleted application)".into());
        body.push_str(&device_card(&s, d, &client, now));
    }
    Ok(page(
        StatusCode::OK,
        html::layout("My devices", Some(&viewer(&s)), &body),
    ))
}

fn device_card(s: &Session, d: &Device, client: &str, now: i64) -> String {
    let name = d.name.as_deref().unwrap_or("Unnamed device");
    let mut facts = String::new();
    let mut fact = |k: &str, v: &str| {
        let _ = write!(facts, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    };
    fact("Application", client);
    fact(
        "Trusted",
        if d.trusted_device {
            "Yes (longer lifetime)"
        } else {
            "No"
        },
    );
    if let Some(os) = &d.os {
        fact("Operating system", os);
    }
    if let Some(h) = &d.hostname {
        fact("Hostname", h);
    }
    if let Some(ip) = &d.ip_address {
        fact("IP address", ip);
    }
    if let Some(loc) = location(d) {
        fact("Location", &loc);
    }
    fact(
        "Last sign-in",
        &d.last_login
            .map(|t| format!("{} ({})", when(t), relative(t, now)))
            .unwrap_or_else(|| "Not yet".into()),
    );
    fact(
        "Expires",
        &format!("{} ({})", when(d.expires), relative(d.expires, now)),
    );
    let status = d.status.as_str();
    let csrf = esc(&s.csrf_token);
    let id = esc(&d.id);
    let lock = if status == "locked" {
        format!(
            r#"<form method="post" action="/devices/{id}/unlock" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Unlock</button></form>"#
        )
    } else {
        format!(
            r#"<form method="post" action="/devices/{id}/lock" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Lock</button></form>"#
        )
    };
    format!(
        r#"<section class="card" aria-labelledby="d-{id}">
<h2 id="d-{id}">{name} <span class="status {status}">{status}</span></h2>
<dl class="facts">{facts}</dl>
<form method="post" action="/devices/{id}/rename" class="row">
<input type="hidden" name="csrf" value="{csrf}">
<div class="grow"><label for="n-{id}">Name</label><input type="text" id="n-{id}" name="name" value="{name}" maxlength="100" required></div>
<button type="submit">Rename</button>
</form>
<div class="actions">{lock}<form method="post" action="/devices/{id}/remove" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger">Remove and sign out</button></form></div>
</section>"#,
        name = esc(name),
    )
}

/// "City, Region, Country" from what is known.
pub fn location(d: &Device) -> Option<String> {
    let parts: Vec<&str> = [&d.city, &d.region, &d.country]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `POST /devices/{id}/{rename|lock|unlock|remove}` for the person's own device.
pub async fn device_action(state: AppState, req: Request, rest: String) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let Some((id, action)) = rest.split_once('/') else {
        return Err(Error::NotFound("no such page"));
    };
    let (id, action) = (id.to_string(), action.to_string());
    if !matches!(action.as_str(), "rename" | "lock" | "unlock" | "remove") {
        return Err(Error::NotFound("no such page"));
    }
    let ip = super::device::peer_ip(&req);
    let (_, _, form) = read_form(&state, req).await?;
    if !csrf_ok(&s, form.get("csrf")) {
        return Err(csrf_refused());
    }
    let name = if action == "rename" {
        if let Some(why) = form
            .get("name")
            .and_then(|n| crate::text::hidden_refusal("A device name", n))
        {
            return Err(Error::bad_request("name", format!("{why}.")));
        }
        let n = form.text("name", 100)?.unwrap_or_default();
        let n = n.trim().to_string();
        if n.is_empty() {
            return Err(Error::bad_request("name", "A device needs a name."));
        }
        Some(n)
    } else {
        None
    };
    let owner = s.user.id.clone();
    let act = action.clone();
    let found = state
        .db
        .run(move |conn| {
            let now = db::now_ms();
            let actor = Actor {
                user_id: Some(&owner),
                ip_address: ip.as_deref(),
            };
            Ok(match act.as_str() {
                "rename" => match manage::find_managed(conn, &id, Some(&owner))? {
                    Some(_) => {
                        rows::update(conn, &id, Some(name.as_deref()), None, now)?;
                        true
                    }
                    None => false,
                },
                "lock" | "unlock" => {
                    manage::set_locked(conn, &id, Some(&owner), act == "lock", actor, now)?
                        .is_some()
                }
                _ => manage::remove(conn, &id, Some(&owner), actor, now)?,
            })
        })
        .await?;
    if !found {
        return Err(Error::NotFound("no such device"));
    }
    let done = match action.as_str() {
        "rename" => "renamed",
        "lock" => "locked",
        "unlock" => "unlocked",
        _ => "removed",
    };
    Ok(redirect(&format!("/devices?done={done}")))
}

/// `GET /admin/authorizations`: every live device authorization (Storyden's record), pending
/// ones with a Deny button. Admins only.
pub async fn authorizations(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    if !s.user.is_admin {
        return Err(Error::Forbidden(
            "Only an administrator can see every device authorization.".into(),
        ));
    }
    let q = query(&req)?;
    let (pending, approved, names) = state
        .db
        .run(|conn| {
            let now = db::now_ms();
            let (pending, _) =
                auths::list(conn, Some(AuthorizationState::Pending), None, now, 0, 500)?;
            let (approved, _) =
                auths::list(conn, Some(AuthorizationState::Approved), None, now, 0, 500)?;
            // Client and approver names, once each.
            let mut names = std::collections::HashMap::new();
            for a in pending.iter().chain(approved.iter()) {
                if !names.contains_key(&a.client_id) {
                    names.insert(
                        a.client_id.clone(),
                        clients::find(conn, &a.client_id)?.map(|c| c.name),
                    );
                }
                if let Some(u) = &a.approved_by_account_id {
                    if !names.contains_key(u) {
                        names.insert(u.clone(), users::find_by_id(conn, u)?.map(|u| u.username));
                    }
                }
            }
            Ok((pending, approved, names))
        })
        .await?;
    let now = db::now_ms();
    let mut body = String::from("<h1>Device authorizations</h1>");
    if q.get("done") == Some("denied") {
        body.push_str(&notice("ok", "The authorization was denied."));
    }
    body.push_str("<p class=\"hint\">Live authorizations: codes waiting for a person, and approved codes the device has not yet exchanged for tokens.</p>");
    for (title, list, can_deny) in [
        ("Pending", &pending, true),
        ("Approved, not yet exchanged", &approved, false),
    ] {
        let _ = write!(body, "<h2>{} ({})</h2>", esc(title), list.len());
        if list.is_empty() {
            body.push_str("<p>None.</p>");
            continue;
        }
        body.push_str("<div class=\"scroll\"><table><thead><tr><th>User code</th><th>Client</th><th>Scope</th><th>Created</th><th>Expires</th><th>Poll interval</th><th>Last polled</th><th>Approved by</th><th></th></tr></thead><tbody>");
        for a in list.iter() {
            let client = names
                .get(&a.client_id)
                .cloned()
                .flatten()
                .unwrap_or_else(|| a.client_id.clone());
            let code = crate::oauth::codes::UserCode::from_stored(a.user_code.clone()).to_string();
            let deny = if can_deny {
                format!(
                    r#"<form method="post" action="/admin/authorizations/{id}/deny"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger">Deny</button></form>"#,
                    id = esc(&a.id),
                    csrf = esc(&s.csrf_token)
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr><td><code class=\"usercode\">{code}</code></td><td>{client}</td><td>{scope}</td><td>{created}</td><td>{expires}</td><td>{interval} s</td><td>{polled}</td><td>{by}</td><td>{deny}</td></tr>",
                code = esc(&code),
                client = esc(&client),
                scope = esc(if a.scope.is_empty() { "(none)" } else { &a.scope }),
                created = esc(&relative(a.created_at, now)),
                expires = esc(&relative(a.expires_at, now)),
                interval = a.poll_interval_seconds,
                polled = esc(&a.last_polled_at.map(|t| relative(t, now)).unwrap_or_else(|| "never".into())),
                by = esc(&a
                    .approved_by_account_id
                    .as_ref()
                    .map(|u| names.get(u).cloned().flatten().unwrap_or_else(|| u.clone()))
                    .unwrap_or_default()),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    Ok(page(
        StatusCode::OK,
        html::layout("Device authorizations", Some(&viewer(&s)), &body),
    ))
}

/// `POST /admin/authorizations/{id}/deny`.
pub async fn deny_authorization(
    state: AppState,
    req: Request,
    rest: String,
) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let Some(id) = rest.strip_suffix("/deny").map(str::to_string) else {
        return Err(Error::NotFound("no such page"));
    };
    if !s.user.is_admin {
        return Err(Error::Forbidden(
            "Only an administrator can deny other people's codes.".into(),
        ));
    }
    let ip = super::device::peer_ip(&req);
    let (_, _, form) = read_form(&state, req).await?;
    if !csrf_ok(&s, form.get("csrf")) {
        return Err(csrf_refused());
    }
    let admin_id = s.user.id.clone();
    let polls = state.polls.clone();
    let denied = state
        .db
        .run(move |conn| {
            let Some(a) = auths::find(conn, &id)? else {
                return Ok(None);
            };
            let actor = Actor {
                user_id: Some(&admin_id),
                ip_address: ip.as_deref(),
            };
            let denied = crate::flow::deny(conn, &a.user_code, actor, db::now_ms())?.is_ok();
            if denied {
                polls.decided(&a.user_code);
            }
            Ok(Some(denied))
        })
        .await?;
    match denied {
        None => Err(Error::NotFound("no such device authorization")),
        Some(false) => Err(Error::Conflict(
            "This authorization is no longer pending.".into(),
        )),
        Some(true) => {
            state.metrics.authorization(crate::metrics::Outcome::Denied);
            Ok(redirect("/admin/authorizations?done=denied"))
        }
    }
}
