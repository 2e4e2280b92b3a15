//! The admins' page of device authorizations (Storyden's record): filtered by state and
//! application, paged, each row with the facts of its device (name, OS, address, location) and
//! its user, so an admin can tell which pending code is which. A table on a desktop, one card
//! per row on a phone (the same markup; the style sheet switches at 48 rem). Pending codes can
//! be denied, after a second click.

use std::fmt::Write;

use hyper::StatusCode;

use super::html::{self, esc, notice, relative, when};
use super::{csrf_ok, page, query, read_form, redirect, session, to_login, viewer};
use crate::app::AppState;
use crate::clock;
use crate::domain::model::{
    Actor, AuthorizationState, Client, DeviceAuthorization, Listing, Overview, StateCounts,
};
use crate::http::{Error, Request, Response};
use crate::protocol::codes::UserCode;

/// Rows per page: a screenful on a desktop, a few thumb-flicks of cards on a phone.
const PAGE_SIZE: u32 = 50;

/// The listings the page offers, as (query value, tab label, listing).
const LISTINGS: &[(&str, &str, Listing)] = &[
    ("live", "Live", Listing::Live),
    (
        "pending",
        "Pending",
        Listing::Only(AuthorizationState::Pending),
    ),
    (
        "approved",
        "Approved, not yet exchanged",
        Listing::Only(AuthorizationState::Approved),
    ),
    (
        "denied",
        "Denied",
        Listing::Only(AuthorizationState::Denied),
    ),
    (
        "consumed",
        "Used",
        Listing::Only(AuthorizationState::Consumed),
    ),
    (
        "expired",
        "Expired",
        Listing::Only(AuthorizationState::Expired),
    ),
    ("all", "All", Listing::All),
];

/// What the page was asked to show: `state`, `client` and `page` from the query.
#[derive(Debug, Clone)]
struct View {
    /// A key of [`LISTINGS`].
    state: &'static str,
    /// A client id, or none for every application.
    client: Option<String>,
    /// 1-based.
    page: u32,
}

impl View {
    fn parse(q: &crate::http::Form) -> Result<View, Error> {
        let state = match q.get("state") {
            None => "live",
            Some(s) => LISTINGS
                .iter()
                .find(|(key, _, _)| *key == s)
                .map(|(key, _, _)| *key)
                .ok_or_else(|| Error::bad_request("state", "No such state to show."))?,
        };
        let client = q.text("client", 64)?.filter(|c| !c.is_empty());
        let page = match q.get("page") {
            None => 1,
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| Error::bad_request("page", "A page is a number from 1."))?,
        };
        Ok(View {
            state,
            client,
            page,
        })
    }

    fn listing(&self) -> Listing {
        LISTINGS
            .iter()
            .find(|(key, _, _)| *key == self.state)
            .map_or(Listing::Live, |(_, _, l)| *l)
    }

    /// The query string of this view (defaults left out), starting with `sep`.
    fn query(&self, sep: char) -> String {
        let mut parts = Vec::new();
        if self.state != "live" {
            parts.push(format!("state={}", self.state));
        }
        if let Some(c) = &self.client {
            parts.push(format!("client={}", html::query_value(c)));
        }
        if self.page > 1 {
            parts.push(format!("page={}", self.page));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("{sep}{}", parts.join("&"))
        }
    }

    /// The page's address for this view (unescaped; escape it for an attribute).
    fn href(&self) -> String {
        format!("/admin/authorizations{}", self.query('?'))
    }
}

/// `GET /admin/authorizations`: admins only.
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
    let mut view = View::parse(&q)?;
    let listing = view.listing();
    let found = state
        .store
        .authorizations_page(
            listing,
            view.client.clone(),
            clock::now_ms(),
            view.page,
            PAGE_SIZE,
        )
        .await?;
    let (counts, rows, all_clients) = (found.counts, found.rows, found.clients);
    view.page = found.page;
    let now = clock::now_ms();
    let mut body = String::from("<h1>Device authorizations</h1>");
    if q.get("done") == Some("denied") {
        body.push_str(&notice(
            "ok",
            "The authorization was denied. The device is told <code>access_denied</code> at its next poll.",
        ));
    }
    body.push_str(
        "<p class=\"hint\">Every code a device asked for: waiting for a person, approved but not yet exchanged for tokens, and (until they are cleaned up after expiring) denied, used and expired ones.</p>",
    );
    body.push_str(&filters(&view, &all_clients));
    body.push_str(&tabs(&view, &counts));
    let total = counts.of(listing);
    if rows.is_empty() {
        body.push_str("<p>None.</p>");
    } else {
        let first = u64::from(view.page - 1) * u64::from(PAGE_SIZE) + 1;
        let _ = write!(
            body,
            "<p class=\"hint\">Showing {}–{} of {}, newest first.</p>",
            first,
            first + rows.len() as u64 - 1,
            total
        );
        body.push_str(&table(&view, &rows, &s.csrf_token, now));
        body.push_str(&pager(&view, total));
    }
    Ok(page(
        StatusCode::OK,
        html::layout_wide("Device authorizations", Some(&viewer(&s)), &body),
    ))
}

/// The application filter (a GET form: works without JavaScript), keeping the state.
fn filters(view: &View, all: &[Client]) -> String {
    let mut options = String::from("<option value=\"\">All applications</option>");
    for c in all {
        let selected = if view.client.as_deref() == Some(c.client_id.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            options,
            "<option value=\"{}\"{selected}>{}</option>",
            esc(&c.client_id),
            esc(&c.name)
        );
    }
    format!(
        r#"<form method="get" action="/admin/authorizations" class="filters"><input type="hidden" name="state" value="{state}"><div><label for="client">Application</label><select id="client" name="client">{options}</select></div><button type="submit">Show</button></form>"#,
        state = view.state,
    )
}

/// One link per state, each with its count; the current one marked.
fn tabs(view: &View, counts: &StateCounts) -> String {
    let mut out = String::from("<ul class=\"tabs\" aria-label=\"Show\">");
    for (key, label, listing) in LISTINGS {
        let target = View {
            state: key,
            client: view.client.clone(),
            page: 1,
        };
        let current = if *key == view.state {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<li><a href=\"{}\"{current}>{} ({})</a></li>",
            esc(&target.href()),
            esc(label),
            counts.of(*listing)
        );
    }
    out.push_str("</ul>");
    out
}

/// Newer / older links and where this page is.
fn pager(view: &View, total: u64) -> String {
    let pages = total.div_ceil(u64::from(PAGE_SIZE)).max(1);
    if pages == 1 {
        return String::new();
    }
    let link = |page: u32, label: &str, rel: &str| {
        let target = View {
            page,
            ..view.clone()
        };
        format!(
            "<a class=\"button\" rel=\"{rel}\" href=\"{}\">{label}</a>",
            esc(&target.href())
        )
    };
    let newer = if view.page > 1 {
        link(view.page - 1, "← Newer", "prev")
    } else {
        "<span></span>".to_string()
    };
    let older = if u64::from(view.page) < pages {
        link(view.page + 1, "Older →", "next")
    } else {
        "<span></span>".to_string()
    };
    format!(
        "<nav class=\"pager\" aria-label=\"Pages\">{newer}<span class=\"nowrap\">Page {} of {pages}</span>{older}</nav>",
        view.page
    )
}

/// The state of an authorization now, as the page names it: (CSS class, words).
fn state_of(a: &DeviceAuthorization, now: i64) -> (&'static str, &'static str) {
    if a.denied_at.is_some() {
        ("denied", "denied")
    } else if a.consumed_at.is_some() {
        ("consumed", "used")
    } else if a.expires_at <= now {
        ("expired", "expired")
    } else if a.approved_at.is_some() {
        ("approved", "approved")
    } else {
        ("pending", "waiting")
    }
}

/// "City, Region, Country" from what is known.
fn place(o: &Overview) -> Option<String> {
    let parts: Vec<&str> = [&o.city, &o.region, &o.country]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The rows: a table with a label on each cell, which the style sheet shows as cards on a phone
/// (each cell a two-column grid of its label and its one `<div>` of content).
fn table(view: &View, rows: &[Overview], csrf: &str, now: i64) -> String {
    let mut out = String::from(
        "<table class=\"list\"><thead><tr><th scope=\"col\">Code</th><th scope=\"col\">State</th><th scope=\"col\">Device</th><th scope=\"col\">From</th><th scope=\"col\">User</th><th scope=\"col\">Application</th><th scope=\"col\">Asked</th><th scope=\"col\">Expires</th><th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th></tr></thead><tbody>",
    );
    for o in rows {
        let a = &o.authorization;
        let code = UserCode::from_stored(a.user_code.clone()).to_string();
        let (class, words) = state_of(a, now);
        let device = {
            let name = o.device_name.as_deref().unwrap_or("Unnamed device");
            // One line each: a hostname never shares a line it could be broken to fit.
            let mut cell = format!("<span class=\"strong\">{}</span>", html::words(name));
            for detail in [o.os.as_deref(), o.hostname.as_deref()]
                .into_iter()
                .flatten()
            {
                let _ = write!(cell, "<span class=\"sub\">{}</span>", html::words(detail));
            }
            cell
        };
        let from = {
            let mut cell = esc(o.ip_address.as_deref().unwrap_or("unknown"));
            if let Some(p) = place(o) {
                let _ = write!(cell, "<span class=\"sub\">{}</span>", esc(&p));
            }
            cell
        };
        let user = match &o.username {
            Some(u) => html::words(u),
            None => "<span class=\"sub\">nobody yet</span>".into(),
        };
        let client = html::words(o.client_name.as_deref().unwrap_or(&a.client_id));
        let polled = match a.last_polled_at {
            Some(t) => format!("last poll {}", relative(t, now)),
            None => "not polled yet".into(),
        };
        let asked = format!(
            "<span title=\"{}\">{}</span><span class=\"sub\">{}, every {} s</span>",
            esc(&when(a.created_at)),
            esc(&relative(a.created_at, now)),
            esc(&polled),
            a.poll_interval_seconds
        );
        let expires = format!(
            "<span title=\"{}\">{}</span>",
            esc(&when(a.expires_at)),
            esc(&relative(a.expires_at, now))
        );
        let action = if class == "pending" {
            html::confirm(
                "Deny…",
                &format!(
                    "Deny code <strong class=\"nowrap\">{code}</strong>? The device is told no \
                     and the code stops working.",
                    code = esc(&code)
                ),
                &format!(
                    r#"<form method="post" action="/admin/authorizations/{id}/deny"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="back" value="{back}"><button type="submit" class="danger">Deny code</button></form>"#,
                    id = esc(&a.id),
                    csrf = esc(csrf),
                    back = esc(&view.query('?')),
                ),
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr><td data-label=\"Code\"><div><code class=\"usercode\">{code}</code></div></td><td data-label=\"State\"><div><span class=\"status {class}\">{words}</span></div></td><td data-label=\"Device\"><div>{device}</div></td><td data-label=\"From\"><div>{from}</div></td><td data-label=\"User\"><div>{user}</div></td><td data-label=\"Application\"><div>{client}</div></td><td data-label=\"Asked\"><div>{asked}</div></td><td data-label=\"Expires\"><div>{expires}</div></td><td class=\"act\">{action}</td></tr>",
            code = esc(&code),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// `POST /admin/authorizations/{id}/deny`, then 303 back to the list the admin was on.
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
    let ip = super::peer_ip(&req);
    let (_, _, form) = read_form(&state, req).await?;
    if !csrf_ok(&s, form.get("csrf")) {
        return Err(super::csrf_refused());
    }
    // Back to the same state, application and page: only a query of the page's own keys.
    let back = form
        .get("back")
        .and_then(|b| b.strip_prefix('?'))
        .and_then(|b| crate::http::Form::parse(b.as_bytes()).ok())
        .and_then(|f| View::parse(&f).ok())
        .map(|v| v.query('&'))
        .unwrap_or_default();
    let actor = Actor {
        user_id: Some(s.user.id.clone()),
        ip_address: ip,
    };
    let denied = state
        .store
        .deny_authorization(id, actor, clock::now_ms())
        .await?
        .map(|result| match result {
            Ok(a) => {
                // Polls answered from memory must see the decision at once.
                state.polls.decided(&a.user_code);
                true
            }
            Err(_) => false,
        });
    match denied {
        None => Err(Error::NotFound("no such device authorization")),
        Some(false) => Err(Error::Conflict(
            "This authorization is no longer pending.".into(),
        )),
        Some(true) => {
            state.metrics.authorization(crate::metrics::Outcome::Denied);
            Ok(redirect(&format!(
                "/admin/authorizations?done=denied{back}"
            )))
        }
    }
}
