//! Sign-in and sign-out, "My devices", and the admins' list of live device authorizations.

use std::fmt::Write;

use hyper::header;
use hyper::StatusCode;

use super::html::{self, esc, notice, relative, when};
use super::{
    cookie, csrf_ok, local_path, login_cookie_name, notice_cookie_name, page, query, read_form,
    redirect, session, session_cookie_name, set_cookie, to_login, viewer,
};
use crate::app::AppState;
use crate::clock;
use crate::domain::model::{Actor, Device, Session};
use crate::http::{Error, Request, Response};
use crate::protocol::codes::UserCode;
use crate::store::{DeviceUpdate, NewSession};

/// `GET /login`: the sign-in form (or straight on, when already signed in). After signing out,
/// the one-time notice cookie makes it say so.
pub async fn login_form(state: AppState, req: Request) -> Result<Response, Error> {
    let q = query(&req)?;
    let next = local_path(q.get("next"));
    if session(&state, req.headers()).await?.is_some() {
        return Ok(redirect(&next));
    }
    let signed_out = cookie(req.headers(), notice_cookie_name(&state)) == Some("signed_out");
    let notice = signed_out.then(|| notice("ok", "You are signed out."));
    let mut resp = login_page(&state, StatusCode::OK, &next, "", notice, false);
    if signed_out {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(&state, notice_cookie_name(&state), "", 0),
        );
    }
    Ok(resp)
}

/// Why the sign-in page is shown, from where the person is going: "Sign in to approve device
/// KBVK-HQFS" for a complete verification URI.
fn sign_in_reason(next: &str) -> Option<String> {
    let (path, query) = next.split_once('?').unwrap_or((next, ""));
    match path {
        "/device" => {
            let typed = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "user_code")
                .map(|(_, v)| v.into_owned());
            Some(match typed.as_deref().and_then(UserCode::parse) {
                Some(code) => format!("Sign in to approve device {code}."),
                None => "Sign in to connect a device.".to_string(),
            })
        }
        "/devices" => Some("Sign in to see your devices.".into()),
        "/admin/authorizations" => Some("Sign in to see the device authorizations.".into()),
        _ => None,
    }
}

/// The sign-in page with a fresh double-submit token (cookie + hidden field). `problem` is a
/// notice (HTML); after a wrong password the password field has the focus, the name kept.
fn login_page(
    state: &AppState,
    status: StatusCode,
    next: &str,
    username: &str,
    problem: Option<String>,
    focus_password: bool,
) -> Response {
    let token = crate::secrets::new_token();
    let problem = problem.unwrap_or_default();
    let reason = sign_in_reason(next)
        .map(|r| format!("<p class=\"lead\">{}</p>", esc(&r)))
        .unwrap_or_default();
    let (focus_name, focus_pw) = if focus_password && !username.is_empty() {
        ("", " autofocus")
    } else {
        (" autofocus", "")
    };
    let body = format!(
        r#"<h1>Sign in</h1>
{reason}{problem}<form method="post" action="/login" class="card">
<input type="hidden" name="csrf" value="{token}">
<input type="hidden" name="next" value="{next}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{username}" autocomplete="username" autocapitalize="none" spellcheck="false" required{focus_name}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required{focus_pw}>
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
            Some(notice(
                "error",
                "This sign-in form expired or came from another site. Please sign in again.",
            )),
            false,
        ));
    }
    if let Some(p) = peer {
        state
            .limits
            .sign_in_attempt(&state.store, p.0.ip())
            .await
            .map_err(Error::TooManyRequests)?;
    }
    let password = form.get("password").unwrap_or("").to_string();
    let name = username.trim().to_string();
    let user = state.store.user_by_name(name).await?;
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
                Some(notice("error", "Wrong username or password.")),
                true,
            ))
        }
    };
    let id = crate::secrets::new_token();
    let csrf = crate::secrets::new_token();
    let hash = crate::secrets::hash_token(&id);
    let lifetime = state.config.session_lifetime;
    let user_id = user.id.clone();
    let now = clock::now_ms();
    state
        .store
        .create_session(NewSession {
            id_hash: hash,
            user_id,
            csrf_token: csrf,
            now,
            expires_at: now + clock::ms(lifetime),
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
        return Err(super::csrf_refused());
    }
    let hash = s.id_hash.clone();
    state.store.end_session(hash).await?;
    // 303 to the sign-in page, which says "You are signed out" once (a one-minute cookie it
    // clears), so a reload shows the plain form.
    let mut resp = redirect("/login");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, session_cookie_name(&state), "", 0),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, notice_cookie_name(&state), "signed_out", 60),
    );
    Ok(resp)
}

/// `GET /devices`: the person's devices, each with rename, lock/unlock and remove.
pub async fn devices(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let q = query(&req)?;
    let user_id = s.user.id.clone();
    let mine = state.store.devices_of(user_id).await?;
    let (list, client_names) = (mine.devices, mine.client_names);
    let now = clock::now_ms();
    let mut body = String::from("<h1>My devices</h1>");
    if let Some(done) = q.get("done") {
        if let Some(text) = done_text(done, state.config.access_token_lifetime) {
            body.push_str(&notice("ok", &text));
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
        body.push_str(&device_card(&state, &s, d, &client, now));
    }
    Ok(page(
        StatusCode::OK,
        html::layout("My devices", Some(&viewer(&s)), &body),
    ))
}

/// What happened, for the notice after an action on /devices (HTML). Locking and removal say
/// what stops at once and what only when the access token the device holds expires.
fn done_text(done: &str, access_lifetime: std::time::Duration) -> Option<String> {
    let lifetime = html::human(access_lifetime);
    let later = format!(
        "An access token it already holds expires within {lifetime}: until then, a service \
         that checks tokens by their signature alone (without asking hallpass) may still \
         accept it."
    );
    Some(match done {
        "renamed" => "The device was renamed.".to_string(),
        "locked" => format!(
            "<p><strong>The device is locked.</strong> At once, it cannot refresh its tokens, \
             and hallpass answers that its tokens are inactive. {later}</p><p>Unlock it to \
             let it sign in again.</p>"
        ),
        "unlocked" => "The device is unlocked and may refresh its tokens again.".to_string(),
        "removed" => format!(
            "<p><strong>The device was removed and signed out.</strong> Its refresh token \
             stopped working at once, and hallpass answers that its tokens are inactive. \
             {later}</p>"
        ),
        _ => return None,
    })
}

fn device_card(state: &AppState, s: &Session, d: &Device, client: &str, now: i64) -> String {
    let name = d.name.as_deref().unwrap_or("Unnamed device");
    let mut facts = String::new();
    let mut fact = |k: &str, v: &str| {
        let _ = write!(facts, "<dt>{}</dt><dd>{}</dd>", esc(k), html::words(v));
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
    if let Some(loc) = html::location(d) {
        fact("Location", &loc);
    }
    fact(
        "Last sign-in",
        &d.last_login
            .map(|t| format!("{} ({})", relative(t, now), when(t)))
            .unwrap_or_else(|| "Not yet".into()),
    );
    fact(
        "Expires",
        &format!("{} ({})", relative(d.expires, now), when(d.expires)),
    );
    let status = d.status.as_str();
    let csrf = esc(&s.csrf_token);
    let id = esc(&d.id);
    let tokens = html::human(state.config.access_token_lifetime);
    let lock = if status == "locked" {
        format!(
            r#"<form method="post" action="/devices/{id}/unlock" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Unlock</button></form>"#
        )
    } else {
        format!(
            r#"<form method="post" action="/devices/{id}/lock" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Lock</button></form>"#
        )
    };
    let remove = html::confirm(
        "Remove and sign out…",
        &format!(
            "Remove <strong>{name}</strong>? It is signed out at once and must be approved \
             again to come back; an access token it holds expires within {tokens}.",
            name = esc(name)
        ),
        &format!(
            r#"<form method="post" action="/devices/{id}/remove"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger">Remove and sign out</button></form>"#
        ),
    );
    format!(
        r#"<section class="card" aria-labelledby="d-{id}">
<h2 id="d-{id}">{name} <span class="status {status}">{words}</span></h2>
<dl class="facts">{facts}</dl>
<form method="post" action="/devices/{id}/rename" class="row">
<input type="hidden" name="csrf" value="{csrf}">
<div class="grow"><label for="n-{id}">Name</label><input type="text" id="n-{id}" name="name" value="{name}" maxlength="100" required></div>
<button type="submit">Rename</button>
</form>
<div class="actions">{lock}{remove}</div>
</section>"#,
        name = esc(name),
        words = html::status_words(d.status),
    )
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
    let ip = super::peer_ip(&req);
    let (_, _, form) = read_form(&state, req).await?;
    if !csrf_ok(&s, form.get("csrf")) {
        return Err(super::csrf_refused());
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
    let owner = Some(s.user.id.clone());
    let now = clock::now_ms();
    let actor = Actor {
        user_id: owner.clone(),
        ip_address: ip,
    };
    let store = &state.store;
    let found = match action.as_str() {
        "rename" => store
            .update_device(DeviceUpdate {
                id,
                owner,
                name: Some(name),
                actor,
                now,
                ..DeviceUpdate::default()
            })
            .await?
            .is_ok(),
        "lock" | "unlock" => store
            .set_device_locked(id, owner, action == "lock", actor, now)
            .await?
            .is_some(),
        _ => store.remove_device(id, owner, actor, now).await?,
    };
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
