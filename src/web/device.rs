//! The approval pages (RFC 8628 §3.3): enter the code, see what is asking, approve or deny; and
//! the QR code of `verification_uri_complete` for devices with a screen.

use std::fmt::Write;
use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

use super::html::{self, esc, notice, relative, when};
use super::{csrf_ok, page, query, read_form, session, to_login, viewer};
use crate::app::limits::{session_key, CodeEntry, Guesser};
use crate::app::AppState;
use crate::clock;
use crate::domain::model::{Actor, CodeProblem, Device, Pending, Session};
use crate::http::{Error, PeerAddr, Request, Response, ViaTrustedProxy};
use crate::protocol::codes::UserCode;
use crate::protocol::scope::{self, Scope};
use crate::store::{ApprovalRefused, CodeLookup};

/// Who enters a code on the pages: the address and the browser session.
fn guesser(s: &Session, ip: Option<std::net::IpAddr>) -> Guesser {
    Guesser {
        addr: ip,
        session: Some(session_key(&s.id_hash)),
        user: None,
    }
}

/// Reserves one failed code entry for this address and this session before the code is looked
/// up (see [`crate::app::limits::Limits::enter_code`]), so a burst gets exactly the limit; past it
/// the person is told how long to wait (429 + Retry-After).
async fn enter_code(state: &AppState, who: Guesser) -> Result<CodeEntry<'_>, Error> {
    state
        .limits
        .enter_code(&state.store, who)
        .await
        .map_err(Error::TooManyRequests)
}

fn peer(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<PeerAddr>().map(|p| p.0.ip())
}

/// `GET /device` (the verification_uri) and `GET /device?user_code=…` (the complete URI).
pub async fn enter(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let q = query(&req)?;
    let typed = q.text("user_code", 64)?.unwrap_or_default();
    if typed.trim().is_empty() {
        return Ok(entry_page(&s, StatusCode::OK, "", None));
    }
    // A malformed code cannot match anything: said plainly, and not counted as a guess.
    if let Some(problem) = UserCode::shape_problem(&typed) {
        return Ok(entry_page(
            &s,
            StatusCode::BAD_REQUEST,
            &typed,
            Some(notice("error", &esc(&problem))),
        ));
    }
    let entry = enter_code(&state, guesser(&s, peer(&req))).await?;
    let approver = Approver::of(&state, &req);
    let found = state
        .store
        .look_up_code(typed.clone(), Some(s.user.id.clone()), clock::now_ms())
        .await?;
    match found {
        CodeLookup::Pending {
            pending,
            client_name,
        } => {
            entry.not_a_guess().await;
            Ok(confirm_page(
                &state,
                &s,
                &pending,
                client_name.as_deref(),
                &approver,
            ))
        }
        CodeLookup::Problem {
            problem,
            approved_by_viewer: mine,
        } => Ok(match (problem, mine) {
            // A code this person approved themselves is no guess.
            (CodeProblem::AlreadyUsed, Some(at)) => {
                entry.not_a_guess().await;
                approved_by_you_page(&s, &typed, at, clock::now_ms())
            }
            _ => {
                drop(entry);
                problem_page(&s, &typed, &problem)
            }
        }),
    }
}

fn approved_by_you_page(s: &Session, typed: &str, at: i64, now: i64) -> Response {
    let text = format!(
        "This code has already been used. You approved it yourself {}; there is nothing more \
         to do. The device is in <a href=\"/devices\">My devices</a>.",
        esc(&relative(at, now))
    );
    entry_page(s, StatusCode::GONE, typed, Some(notice("ok", &text)))
}

/// Where the person approving is, to compare with where the device asked from: the request's
/// address (after trusted-proxy resolution) and, where known, its country.
pub struct Approver {
    /// The approver's address.
    pub ip: Option<IpAddr>,
    /// The approver's country, from the same sources as a device's location.
    pub country: Option<String>,
}

impl Approver {
    fn of(state: &AppState, req: &Request) -> Approver {
        let ip = peer(req);
        let via_proxy = req
            .extensions()
            .get::<ViaTrustedProxy>()
            .is_some_and(|v| v.0);
        let country = ip.and_then(|ip| state.locator.locate(ip, req.headers(), via_proxy).country);
        Approver { ip, country }
    }
}

/// How close two addresses are: the same, on the same network (IPv4 /24, IPv6 /64: a home or
/// office network as the outside world sees it), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closeness {
    /// The very same address (one NAT, or one machine).
    SameAddress,
    /// Same /24 (IPv4) or /64 (IPv6).
    SameNetwork,
    /// Anything else, including one IPv4 and one IPv6 address.
    Different,
}

/// Compares two addresses; IPv4-mapped IPv6 addresses count as IPv4.
pub fn closeness(a: IpAddr, b: IpAddr) -> Closeness {
    match (a.to_canonical(), b.to_canonical()) {
        (a, b) if a == b => Closeness::SameAddress,
        (IpAddr::V4(a), IpAddr::V4(b)) if a.octets()[..3] == b.octets()[..3] => {
            Closeness::SameNetwork
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if a.segments()[..4] == b.segments()[..4] => {
            Closeness::SameNetwork
        }
        _ => Closeness::Different,
    }
}

/// The confirmation page's words on where the device asked from, compared with where the
/// approver is (HTML). Said plainly when the network or the country differs: approving a
/// stranger's code sent by mail or chat is how device-code phishing works (RFC 8628 §5.4).
fn origin_notice(device: &Device, approver: &Approver) -> String {
    let device_ip = device
        .ip_address
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let (Some(device_ip), Some(mine)) = (device_ip, approver.ip) else {
        return String::new();
    };
    let other_country = match (&device.country, &approver.country) {
        (Some(d), Some(a)) if !d.eq_ignore_ascii_case(a) => Some((d, a)),
        _ => None,
    };
    let closeness = closeness(device_ip, mine);
    if closeness == Closeness::Different || other_country.is_some() {
        let mut text = String::new();
        if let Some((d, a)) = other_country {
            let _ = write!(
                text,
                "<p><strong>This device asked from another country: {}. You appear to be in \
                 {}.</strong></p>",
                esc(d),
                esc(a)
            );
        }
        if closeness == Closeness::Different {
            let _ = write!(
                text,
                "<p><strong>This device asked from a different network than the one you are \
                 using.</strong> It asked from {}; you are at {}.</p>",
                esc(&device_ip.to_string()),
                esc(&mine.to_string())
            );
        }
        text.push_str(
            "<p>That can be fine (a phone on mobile data approving a device at home), but if \
             someone sent you this code or link and you did not start this on a device of \
             your own, they may be trying to get into your account: deny it.</p>",
        );
        notice("warn", &text)
    } else {
        let how = match closeness {
            Closeness::SameAddress => "the same address as you",
            _ => "the same network as you",
        };
        notice(
            "ok",
            &format!(
                "This device asked from {how} ({}).",
                esc(&device_ip.to_string())
            ),
        )
    }
}

/// The code entry form, with an optional problem above it.
fn entry_page(s: &Session, status: StatusCode, typed: &str, problem: Option<String>) -> Response {
    let problem = problem.unwrap_or_default();
    let body = format!(
        r#"<h1>Connect a device</h1>
<p>Enter the code your device shows. Capitals, spaces and the dash do not matter.</p>
{problem}<form method="get" action="/device" class="card">
<label for="user_code">Code</label>
<input type="text" id="user_code" name="user_code" class="code" value="{typed}" placeholder="WDJB-MJHT" autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="64" required autofocus>
<div class="actions"><button type="submit" class="primary">Continue</button></div>
</form>"#,
        typed = esc(typed),
    );
    page(
        status,
        html::layout("Connect a device", Some(&viewer(s)), &body),
    )
}

/// What a problem with a code tells the person (HTML). The same words whether or not other
/// codes exist, and nothing about whose code it was.
fn problem_text(problem: &CodeProblem) -> (StatusCode, &'static str) {
    match problem {
        CodeProblem::Unknown => (
            StatusCode::NOT_FOUND,
            "This code is not valid. Check the code on your device and type it again.",
        ),
        CodeProblem::Expired => (
            StatusCode::GONE,
            "This code has expired. Start again on your device to get a new code.",
        ),
        CodeProblem::AlreadyUsed => (
            StatusCode::GONE,
            "This code has already been used. If you did not approve it, check <a href=\"/devices\">My devices</a>.",
        ),
        CodeProblem::Denied => (
            StatusCode::GONE,
            "This code was denied. Start again on your device to get a new code.",
        ),
        CodeProblem::NeedsAdmin => (
            StatusCode::FORBIDDEN,
            "This device asks for administrator access, which only an administrator can approve.",
        ),
    }
}

fn problem_page(s: &Session, typed: &str, problem: &CodeProblem) -> Response {
    let (status, text) = problem_text(problem);
    entry_page(s, status, typed, Some(notice("error", text)))
}

/// What each scope allows, in words, for the confirmation page (HTML, escaped): the operator's
/// `[scopes]` text, else hallpass's own words for its reserved scopes, else a plain sentence
/// naming the application, which alone knows what its scope means.
fn describe_scope(config: &crate::config::Config, name: &str, client: &str) -> String {
    if let Some(text) = config.scope_descriptions.get(name) {
        return esc(text);
    }
    match name {
        scope::DEVICES => "See and manage the devices signed in to your account.".into(),
        scope::ADMIN => {
            "Administer hallpass: every user, application, signing key and device.".into()
        }
        other => format!(
            "Access that {} calls “{}”; it has no description here.",
            esc(client),
            esc(other)
        ),
    }
}

/// The confirmation page: who is asking, for what, from where; trust; Approve and Deny.
fn confirm_page(
    state: &AppState,
    s: &Session,
    p: &Pending,
    client: Option<&str>,
    approver: &Approver,
) -> Response {
    let now = clock::now_ms();
    let d = &p.device;
    let a = &p.authorization;
    let client = client.unwrap_or("An application");
    let code = UserCode::from_stored(a.user_code.clone()).to_string();
    let mut facts = String::new();
    let mut fact = |k: &str, v: &str| {
        let _ = write!(facts, "<dt>{}</dt><dd>{}</dd>", esc(k), html::words(v));
    };
    fact("Device name", d.name.as_deref().unwrap_or("(not given)"));
    fact("Operating system", d.os.as_deref().unwrap_or("(not given)"));
    fact("Hostname", d.hostname.as_deref().unwrap_or("(not given)"));
    fact("IP address", d.ip_address.as_deref().unwrap_or("(unknown)"));
    fact(
        "Location",
        &html::location(d).unwrap_or_else(|| "(unknown)".into()),
    );
    fact(
        "Asked",
        &format!("{} ({})", relative(a.created_at, now), when(a.created_at)),
    );
    fact(
        "Code valid",
        &format!(
            "{} (until {})",
            relative(a.expires_at, now).replacen("in ", "for ", 1),
            when(a.expires_at)
        ),
    );
    let scopes = Scope::parse(&a.scope).unwrap_or_default();
    let mut scope_list = String::new();
    for name in scopes.iter() {
        let _ = write!(
            scope_list,
            "<li><code>{}</code>: {}</li>",
            esc(name),
            describe_scope(&state.config, name, client)
        );
    }
    if scope_list.is_empty() {
        scope_list.push_str("<li>Sign in as you, with no extra permissions.</li>");
    }
    // Only an admin may approve administrator access: others see why, and only Deny.
    let needs_admin = scopes.contains(scope::ADMIN) && !s.user.is_admin;
    let admin_warning = if needs_admin {
        notice(
            "error",
            "<strong>This device asks for administrator access</strong>, which only an administrator can approve. You can deny it.",
        )
    } else if scopes.contains(scope::ADMIN) {
        notice(
            "warn",
            "<strong>This device asks for administrator access.</strong> Approve only if you started this yourself.",
        )
    } else {
        String::new()
    };
    let approve = if needs_admin {
        ""
    } else {
        r#"<button type="submit" name="action" value="approve" class="primary">Approve</button>"#
    };
    let body = format!(
        r#"<h1>Approve this device?</h1>
<p><strong>{client}</strong> on the device below wants to sign in as <strong>{user}</strong>.</p>
<p>Check that the device shows the code <code class="usercode">{code}</code>. If you did not start this, deny it.</p>
{admin_warning}{origin}<section class="card" aria-labelledby="facts">
<h2 id="facts">The device</h2>
<dl class="facts">{facts}</dl>
<p class="hint">The name, operating system and hostname are what the device says about itself.</p>
</section>
<section class="card" aria-labelledby="perm">
<h2 id="perm">It asks for</h2>
<ul class="scopes">{scope_list}</ul>
</section>
<form method="post" action="/device" class="card">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="user_code" value="{code}">
<label class="check"><input type="checkbox" name="trusted" value="on"><span><strong>Trust this device</strong><br><span class="hint">Keeps it signed in for {trusted} instead of {untrusted}. Only trust a device you own and keep secure.</span></span></label>
<div class="actions">{approve}<button type="submit" name="action" value="deny" class="danger">Deny</button></div>
</form>"#,
        client = esc(client),
        user = esc(&s.user.username),
        code = esc(&code),
        csrf = esc(&s.csrf_token),
        trusted = html::human(state.config.trusted_device_lifetime),
        untrusted = html::human(state.config.untrusted_device_lifetime),
        origin = origin_notice(d, approver),
    );
    page(
        StatusCode::OK,
        html::layout("Approve this device?", Some(&viewer(s)), &body),
    )
}

/// `POST /device`: approve or deny, then 303 to a page that says what happened
/// (post/redirect/get: reloading it, or going Back to it, sends nothing again).
pub async fn decide(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(super::redirect("/login?next=%2Fdevice"));
    };
    let ip = peer(&req);
    let ip_text = super::peer_ip(&req);
    let (_, _, form) = read_form(&state, req).await?;
    if !csrf_ok(&s, form.get("csrf")) {
        return Err(super::csrf_refused());
    }
    let typed = form.text("user_code", 64)?.unwrap_or_default();
    let approve = match form.get("action") {
        Some("approve") => true,
        Some("deny") => false,
        _ => return Err(Error::bad_request("action", "Choose Approve or Deny.")),
    };
    let trusted = form.get("trusted") == Some("on");
    if let Some(problem) = UserCode::shape_problem(&typed) {
        return Ok(entry_page(
            &s,
            StatusCode::BAD_REQUEST,
            &typed,
            Some(notice("error", &esc(&problem))),
        ));
    }
    let entry = enter_code(&state, guesser(&s, ip)).await?;
    let user_id = s.user.id.clone();
    let result = if approve {
        let approval = crate::app::authorize::approval(
            &state.config,
            typed.clone(),
            user_id,
            trusted,
            ip_text,
        );
        match state.store.approve(approval).await? {
            Ok(d) => Ok(Some(d.id)),
            Err(ApprovalRefused::Code(problem)) => Err(problem),
            // Only an approval naming a device is refused for its device.
            Err(_) => Err(CodeProblem::Unknown),
        }
    } else {
        let actor = Actor {
            user_id: Some(user_id),
            ip_address: ip_text,
        };
        let now = clock::now_ms();
        state
            .store
            .deny(typed.clone(), actor, now)
            .await?
            .map(|()| None)
    };
    let device_id = match result {
        Ok(id) => {
            entry.not_a_guess().await;
            // Polls answered from memory must see the decision at once.
            state.polls.decided(&typed);
            id
        }
        Err(problem) => {
            // Approve pressed again on a page the browser kept (Back): say who did it.
            let mine = match problem {
                CodeProblem::AlreadyUsed => {
                    state
                        .store
                        .approved_by(typed.clone(), s.user.id.clone())
                        .await?
                }
                _ => None,
            };
            // Refused for the approver's role, or a code this person approved themselves: no
            // guess.
            if problem == CodeProblem::NeedsAdmin || mine.is_some() {
                entry.not_a_guess().await;
            } else {
                drop(entry);
            }
            if let Some(at) = mine {
                return Ok(approved_by_you_page(&s, &typed, at, clock::now_ms()));
            }
            return Ok(problem_page(&s, &typed, &problem));
        }
    };
    state.metrics.authorization(if approve {
        crate::metrics::Outcome::Approved
    } else {
        crate::metrics::Outcome::Denied
    });
    Ok(super::redirect(&match device_id {
        Some(id) => format!("/device/approved?device={}", html::query_value(&id)),
        None => "/device/denied".to_string(),
    }))
}

/// `GET /device/approved?device=ID`: what approving did, for the approver's own device.
pub async fn approved(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let id = query(&req)?.text("device", 64)?.unwrap_or_default();
    let d = state
        .store
        .device(id, Some(s.user.id.clone()))
        .await?
        .ok_or(Error::NotFound("no such device"))?;
    let lifetime = if d.trusted_device {
        state.config.trusted_device_lifetime
    } else {
        state.config.untrusted_device_lifetime
    };
    let body = format!(
        r#"<h1>Device approved</h1>
{}<p>You can return to your device. It stays signed in for {}{} unless you lock or remove it in <a href="/devices">My devices</a>.</p>
<p class="hint">Did not mean to approve it? Remove it in My devices: it is signed out at once.</p>"#,
        notice(
            "ok",
            &format!(
                "<strong>{}</strong> can now sign in as <strong>{}</strong>.",
                esc(d.name.as_deref().unwrap_or("The device")),
                esc(&s.user.username)
            )
        ),
        html::human(lifetime),
        if d.trusted_device {
            " (you trusted it)"
        } else {
            ""
        },
    );
    Ok(page(
        StatusCode::OK,
        html::layout("Device approved", Some(&viewer(&s)), &body),
    ))
}

/// `GET /device/denied`: what denying did, and what to do for a person who did not start the
/// request (someone sent them a code: nothing to undo, but look at their devices).
pub async fn denied(state: AppState, req: Request) -> Result<Response, Error> {
    let Some(s) = session(&state, req.headers()).await? else {
        return Ok(to_login(&req));
    };
    let body = format!(
        r#"<h1>Device denied</h1>
{}<section class="card" aria-labelledby="started">
<h2 id="started">Did you start this yourself?</h2>
<p>Start again on your device to get a new code. You can return to your device.</p>
</section>
<section class="card" aria-labelledby="not-me">
<h2 id="not-me">Did someone else give you this code?</h2>
<p>You do not need to do anything else: the code no longer works, and nothing from your account was shared with that device.</p>
<p>To be safe, check <a href="/devices">My devices</a> for a device you do not recognise, and remove it.</p>
</section>"#,
        notice(
            "ok",
            "The device was told no, and its code no longer works. Nothing was shared with it."
        ),
    );
    Ok(page(
        StatusCode::OK,
        html::layout("Device denied", Some(&viewer(&s)), &body),
    ))
}

/// `GET /device/qr?user_code=…`: an SVG QR code of the verification_uri_complete, for a device
/// with a screen to show. It looks nothing up, so it tells nobody whether a code exists.
pub async fn qr(state: AppState, req: Request) -> Result<Response, Error> {
    let q = query(&req)?;
    let typed = q.require("user_code")?;
    let code = UserCode::parse(typed)
        .ok_or_else(|| Error::bad_request("user_code", "that is not a user code"))?;
    let uri = format!("{}?user_code={code}", state.url("/device"));
    let svg = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M)
        .map_err(|_| Error::bad_request("user_code", "cannot encode"))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    let mut resp = Response::new(Full::new(Bytes::from(svg)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_compare_by_24_and_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = |a: &str, b: &str| closeness(ip(a), ip(b));
        assert_eq!(c("203.0.113.7", "203.0.113.7"), Closeness::SameAddress);
        assert_eq!(c("203.0.113.7", "203.0.113.200"), Closeness::SameNetwork);
        assert_eq!(c("203.0.113.7", "203.0.114.7"), Closeness::Different);
        assert_eq!(
            c("::ffff:203.0.113.7", "203.0.113.9"),
            Closeness::SameNetwork
        );
        assert_eq!(
            c("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"),
            Closeness::SameNetwork
        );
        assert_eq!(
            c("2001:db8:1:2::1", "2001:db8:1:3::1"),
            Closeness::Different
        );
        assert_eq!(c("2001:db8::1", "203.0.113.7"), Closeness::Different);
    }

    #[test]
    fn scope_descriptions_are_escaped() {
        let mut config = crate::config::Config::default();
        assert!(describe_scope(&config, "<b>", "cli").contains("&lt;b&gt;"));
        assert!(describe_scope(&config, "admin", "cli").contains("Administer"));
        assert_eq!(
            describe_scope(&config, "read", "<TV>"),
            "Access that &lt;TV&gt; calls “read”; it has no description here."
        );
        config
            .scope_descriptions
            .insert("read".into(), "Read <your> files".into());
        assert_eq!(
            describe_scope(&config, "read", "cli"),
            "Read &lt;your&gt; files"
        );
    }
}
