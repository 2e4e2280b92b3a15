//! HTML for the pages: escaping, the shared layout, and the style sheet. No template engine and
//! no JavaScript: every page is a `format!` of escaped parts, so everything a device sent
//! (names, hostnames, OS strings) goes through [`esc`] before it reaches a page.

use std::fmt::Write;
use std::time::Duration;

use crate::domain::model::{Device, DeviceStatus};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (other than tab and newline) have no business on a page, nor
            // have invisible ones that reorder or hide text (crate::text; refused on input, so
            // this only shows rows stored before that as what they are).
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c if crate::text::is_hidden(c) && !c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `s` like [`esc`], keeping each short word with a hyphen (a hostname, a code,
/// `build-agent-07`) on one line: browsers may break a line after a hyphen, which in a table
/// column reads as a word cut in two. Longer words are left breakable, so they still fit a
/// phone's width.
pub fn words(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains('-') && word.chars().count() <= 22 {
            out.push_str("<span class=\"nowrap\">");
            out.push_str(&esc(word));
            out.push_str("</span>");
        } else {
            out.push_str(&esc(word));
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn query_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The signed-in person as the layout shows them.
pub struct Viewer<'a> {
    /// Shown in the header.
    pub username: &'a str,
    /// Admins get the authorizations link.
    pub is_admin: bool,
    /// For the sign-out form.
    pub csrf: &'a str,
}

/// What the header's navigation offers.
pub enum Nav<'a> {
    /// Nothing (the sign-in page, which is where the links would lead).
    None,
    /// A visitor who is not signed in: the way to sign in.
    SignedOut,
    /// A signed-in person: their pages and sign-out.
    SignedIn(&'a Viewer<'a>),
}

impl<'a> From<Option<&'a Viewer<'a>>> for Nav<'a> {
    fn from(v: Option<&'a Viewer<'a>>) -> Self {
        v.map_or(Nav::None, Nav::SignedIn)
    }
}

/// The whole page around `body`. `title` is plain text (escaped here).
pub fn layout<'a>(title: &str, nav: impl Into<Nav<'a>>, body: &str) -> String {
    page_html(title, nav.into(), "", body)
}

/// [`layout`] with the main column as wide as the window allows (up to 80 rem): for tables.
pub fn layout_wide<'a>(title: &str, nav: impl Into<Nav<'a>>, body: &str) -> String {
    page_html(title, nav.into(), " class=\"wide\"", body)
}

fn page_html(title: &str, nav: Nav<'_>, main_class: &str, body: &str) -> String {
    let mut links = String::new();
    match nav {
        Nav::None => {}
        Nav::SignedOut => links.push_str(
            r#"<nav aria-label="Main"><a href="/device">Enter a code</a><a href="/login">Sign in</a></nav>"#,
        ),
        Nav::SignedIn(v) => {
            let _ = write!(
                links,
                r#"<nav aria-label="Main"><a href="/device">Enter a code</a><a href="/devices">My devices</a>{admin}<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="link">Sign out <span class="who">{user}</span></button></form></nav>"#,
                admin = if v.is_admin {
                    r#"<a href="/admin/authorizations">Authorizations</a>"#
                } else {
                    ""
                },
                csrf = esc(v.csrf),
                user = esc(v.username),
            );
        }
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} · hallpass</title>
<link rel="stylesheet" href="/static/hallpass.css">
<link rel="icon" href="/favicon.ico">
</head>
<body>
<header><a class="brand" href="/device">hallpass</a>{links}</header>
<main id="main"{main_class}>
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    )
}

/// A notice box: `kind` is `ok`, `warn` or `error`; `html` is already escaped.
pub fn notice(kind: &str, html: &str) -> String {
    let role = if kind == "error" { "alert" } else { "status" };
    format!(r#"<div class="notice {kind}" role="{role}">{html}</div>"#)
}

/// A UTC time for people: `2026-11-23 14:05 UTC`.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::http::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// How long from `now` to `then`, rounded to the nearest unit: "in 10 minutes", "3 hours
/// ago", "in 30 days" for a device that expires 30 days less a few seconds from now.
pub fn relative(then: i64, now: i64) -> String {
    let delta = (then - now) / 1000;
    if delta.abs() < 60 {
        return if then > now {
            "in under a minute"
        } else {
            "just now"
        }
        .to_string();
    }
    let secs = delta.unsigned_abs();
    // Rounded, and moved up a unit when the rounding reaches it (59.6 minutes is "1 hour").
    let round = |unit: u64| (secs + unit / 2) / unit;
    let (n, unit) = if round(60) < 60 {
        (round(60), "minute")
    } else if round(3600) < 24 {
        (round(3600), "hour")
    } else {
        (round(86_400), "day")
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta >= 0 {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// A device's status in plain words, for its badge (the CSS class stays the stored name).
pub fn status_words(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Pending => "waiting for approval",
        DeviceStatus::Verified => "approved, not signed in yet",
        DeviceStatus::Active => "active",
        DeviceStatus::Locked => "locked",
    }
}

/// A destructive action asked twice, without JavaScript: the first button (`summary`) opens a
/// `<details>` that says what will happen and holds the real form. `form` is the form's HTML,
/// `question` the explanation (both already escaped).
pub fn confirm(label: &str, question: &str, form: &str) -> String {
    format!(
        r#"<details class="confirm"><summary class="button danger">{label}</summary><div class="confirm-body"><p>{question}</p>{form}</div></details>"#,
        label = esc(label),
    )
}

/// The site icon, `/favicon.ico`: a 32×32 ICO (one 32-bit BMP image), drawn here so the repo
/// holds no binary file: a blue rounded square with a white pass on it.
pub fn favicon() -> &'static [u8] {
    static ICON: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ICON.get_or_init(|| {
        const N: i32 = 32;
        let blue = [0xd6, 0x5f, 0x1c, 0xff]; // BGRA of #1c5fd6
        let white = [0xff, 0xff, 0xff, 0xff];
        let clear = [0, 0, 0, 0];
        // Inside a rounded rectangle from (x0, y0) to (x1, y1) exclusive, corner radius r.
        let inside = |x: i32, y: i32, (x0, y0, x1, y1, r): (i32, i32, i32, i32, i32)| {
            if x < x0 || x >= x1 || y < y0 || y >= y1 {
                return false;
            }
            let cx = x.clamp(x0 + r, x1 - 1 - r);
            let cy = y.clamp(y0 + r, y1 - 1 - r);
            (x - cx).pow(2) + (y - cy).pow(2) <= r * r
        };
        // The pass: a white card with a photo (a blue square) and two lines of text.
        let on_pass = |x: i32, y: i32| {
            let photo = inside(x, y, (9, 13, 14, 19, 1));
            let text = (y == 14 && (16..23).contains(&x)) || (y == 17 && (16..21).contains(&x));
            inside(x, y, (6, 9, 26, 23, 2)) && !photo && !text
        };
        let pixel = |x: i32, y: i32| {
            if !inside(x, y, (0, 0, N, N, 6)) {
                clear
            } else if on_pass(x, y) {
                white
            } else {
                blue
            }
        };
        let mut out = Vec::with_capacity(4286);
        // ICONDIR, then one ICONDIRENTRY: 32×32, 32 bits, 4,264 bytes at offset 22.
        out.extend_from_slice(&[0, 0, 1, 0, 1, 0]);
        out.extend_from_slice(&[32, 32, 0, 0, 1, 0, 32, 0]);
        out.extend_from_slice(&4264u32.to_le_bytes());
        out.extend_from_slice(&22u32.to_le_bytes());
        // BITMAPINFOHEADER: the height counts the colour rows and the AND mask's.
        out.extend_from_slice(&40u32.to_le_bytes());
        out.extend_from_slice(&32i32.to_le_bytes());
        out.extend_from_slice(&64i32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(&[0; 24]);
        // Rows bottom-up, BGRA; then the AND mask (all zero: the alpha channel decides).
        for y in (0..N).rev() {
            for x in 0..N {
                out.extend_from_slice(&pixel(x, y));
            }
        }
        out.extend_from_slice(&[0; 32 * 4]);
        out
    })
}

/// The style sheet: one file, light and dark by `prefers-color-scheme`, readable at 360 px.
/// Tables (the admin list) become one card per row below 48 rem; no cell breaks inside a word
/// unless the word alone is wider than its cell (`overflow-wrap: break-word`, whose
/// min-content size is the longest word, so a table never squeezes a column into letters).
pub const CSS: &str = r#":root{--bg:#f7f7f5;--fg:#1b1b1b;--muted:#5d5d5d;--card:#fff;--line:#d9d9d4;--accent:#1c5fd6;--accent-fg:#fff;--ok:#0f7a3d;--warn:#8a5a00;--err:#b3261e;--focus:#f2b705}
@media (prefers-color-scheme:dark){:root{--bg:#141414;--fg:#ececec;--muted:#a8a8a8;--card:#1f1f1f;--line:#3a3a3a;--accent:#7aa7ff;--accent-fg:#0b0b0b;--ok:#5fd08f;--warn:#f0c060;--err:#ff8a80}}
*{box-sizing:border-box}
html{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:100%;line-height:1.5;color:var(--fg);background:var(--bg)}
body{margin:0}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;padding:.75rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
.brand{font-weight:700;letter-spacing:.02em;color:var(--fg);text-decoration:none}
nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center}
nav a,button.link{color:var(--accent);text-decoration:none;font:inherit;background:none;border:0;padding:.25rem 0;cursor:pointer;white-space:nowrap}
nav a:hover,button.link:hover{text-decoration:underline}
.who{color:var(--muted)}
main{max-width:42rem;margin:0 auto;padding:1.25rem 1rem 3rem}
main.wide{max-width:80rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem;line-height:1.25}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
p{margin:.5rem 0}
a{color:var(--accent)}
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:1rem;margin:1rem 0}
.card>h2:first-child{margin-top:0}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=password],select{width:100%;font:inherit;font-size:1.1rem;padding:.6rem .7rem;border:1px solid var(--line);border-radius:.4rem;background:var(--bg);color:var(--fg)}
input.code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.4rem;letter-spacing:.12em;text-transform:uppercase}
button,.button{display:inline-block;font:inherit;font-weight:600;padding:.6rem 1.1rem;border-radius:.4rem;border:1px solid var(--line);background:var(--card);color:var(--fg);cursor:pointer;min-height:2.75rem;text-decoration:none;white-space:nowrap;line-height:1.5}
button.primary,.button.primary{background:var(--accent);color:var(--accent-fg);border-color:var(--accent)}
button.danger,.button.danger{color:var(--err);border-color:var(--err)}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1rem;align-items:flex-start}
.inline{display:inline}
.hint{color:var(--muted);font-size:.925rem;margin:.25rem 0}
.check{display:flex;gap:.6rem;align-items:flex-start;font-weight:400;margin:1rem 0}
form.card>.check{margin-top:0}
.check input{width:1.25rem;height:1.25rem;margin-top:.15rem;flex:none}
dl.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.3rem 1rem;margin:.5rem 0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:break-word}
ul.scopes{padding-left:1.2rem;margin:.25rem 0}
ul.scopes code{font-weight:600}
.notice{border-radius:.4rem;padding:.75rem 1rem;margin:1rem 0;border:1px solid var(--line);border-left-width:.35rem;background:var(--card)}
.notice.ok{border-color:var(--ok)}
.notice.warn{border-color:var(--warn)}
.notice.error{border-color:var(--err)}
.notice p:first-child{margin-top:0}
.notice p:last-child,.notice ul:last-child{margin-bottom:0}
.status{display:inline-block;font-size:.85rem;font-weight:600;padding:.05rem .5rem;border-radius:1rem;border:1px solid var(--line);white-space:nowrap;vertical-align:.1em}
.status.active,.status.verified,.status.approved,.status.consumed{color:var(--ok);border-color:var(--ok)}
.status.pending{color:var(--warn);border-color:var(--warn)}
.status.locked,.status.denied{color:var(--err);border-color:var(--err)}
.status.expired{color:var(--muted)}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end}
.row .grow{flex:1 1 12rem}
code.usercode{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.2rem;letter-spacing:.1em;white-space:nowrap}
details.confirm>summary{list-style:none}
details.confirm>summary::-webkit-details-marker{display:none}
details.confirm[open]>summary{opacity:.6}
.confirm-body{margin-top:.5rem;padding:.75rem;border:1px solid var(--err);border-radius:.4rem;background:var(--bg);white-space:normal;min-width:14rem}
.confirm-body p{margin:0 0 .5rem}
.tabs{display:flex;flex-wrap:wrap;gap:.25rem .5rem;margin:.5rem 0 1rem;padding:0;list-style:none}
.tabs a{display:inline-block;padding:.3rem .7rem;border:1px solid var(--line);border-radius:1rem;text-decoration:none;white-space:nowrap;color:var(--fg);background:var(--card)}
.tabs a[aria-current]{background:var(--accent);border-color:var(--accent);color:var(--accent-fg)}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:flex-end;margin:0 0 1rem}
form.filters label{margin:0 0 .25rem}
form.filters select{width:auto;max-width:100%;font-size:1rem}
.pager{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;margin:1rem 0}
.nowrap{white-space:nowrap}
.strong{font-weight:600}
.sub{display:block;color:var(--muted);font-size:.85rem}
table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{text-align:left;padding:.5rem .6rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:break-word}
th{font-size:.85rem;color:var(--muted);font-weight:600;white-space:nowrap}
table.list{background:var(--card);border:1px solid var(--line)}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:47.99rem){
table.list,table.list tbody,table.list tr,table.list td{display:block;width:auto}
table.list{background:none;border:0}
table.list thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
table.list tr{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.5rem .85rem;margin:0 0 .75rem}
table.list td{display:grid;grid-template-columns:6.5rem minmax(0,1fr);gap:.75rem;border:0;padding:.25rem 0}
table.list td::before{content:attr(data-label);color:var(--muted);font-size:.85rem;padding-top:.1rem}
table.list td.act{display:block;padding-top:.5rem}
table.list td.act::before{content:none}
table.list td.act:empty{display:none}
}
"#;

/// "30 days", "24 hours", "10 minutes".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s % 86_400 == 0 && s >= 86_400 {
        (s / 86_400, "day")
    } else if s % 3600 == 0 && s >= 3600 {
        (s / 3600, "hour")
    } else if s % 60 == 0 && s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_secs(30 * 86_400)), "30 days");
        assert_eq!(human(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human(Duration::from_secs(36 * 3600)), "36 hours");
        assert_eq!(human(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("a\u{0}b\u{1b}c"), "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn the_icon_is_a_32_pixel_ico() {
        let ico = favicon();
        assert_eq!(ico.len(), 6 + 16 + 40 + 32 * 32 * 4 + 32 * 4);
        assert_eq!(&ico[..6], &[0, 0, 1, 0, 1, 0]);
        let size = u32::from_le_bytes(ico[14..18].try_into().unwrap()) as usize;
        let offset = u32::from_le_bytes(ico[18..22].try_into().unwrap()) as usize;
        assert_eq!(offset + size, ico.len());
        // A corner is transparent, the middle of an edge blue.
        let at = |x: usize, y: usize| {
            let i = offset + 40 + ((31 - y) * 32 + x) * 4;
            &ico[i..i + 4]
        };
        assert_eq!(at(0, 0), &[0, 0, 0, 0]);
        assert_eq!(at(16, 2), &[0xd6, 0x5f, 0x1c, 0xff]);
        assert_eq!(at(20, 20), &[0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn hyphenated_words_stay_whole() {
        assert_eq!(
            words("build-agent-07 <x> ci-7.example.internal"),
            "<span class=\"nowrap\">build-agent-07</span> &lt;x&gt; <span class=\"nowrap\">ci-7.example.internal</span>"
        );
        let long = "a-very-long-hostname-that-would-not-fit.example";
        assert_eq!(words(long), long, "too long to keep whole on a phone");
    }

    #[test]
    fn formats_times() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_795_000_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(relative(10 * 60_000, 0), "in 10 minutes");
        assert_eq!(relative(0, 3_600_000), "1 hour ago");
        // Rounded, not cut: a 30-day device seconds after approval, a code asked 2.5 min ago.
        let day = 86_400_000;
        assert_eq!(relative(30 * day - 5_000, 0), "in 30 days");
        assert_eq!(relative(0, 150_000), "3 minutes ago");
        assert_eq!(relative(0, 130_000), "2 minutes ago");
        assert_eq!(relative(3_590_000, 0), "in 1 hour");
        assert_eq!(relative(24 * 3_600_000 - 60_000, 0), "in 1 day");
        assert_eq!(relative(0, 30_000), "just now");
        assert_eq!(relative(1_000, 1_400), "just now");
        assert_eq!(relative(1_000, 1_000), "just now");
        assert_eq!(relative(1_400, 1_000), "in under a minute");
        assert_eq!(relative(90_000, 0), "in 2 minutes");
    }
}
