//! HTML for the pages: escaping, the shared layout, and the style sheet. No template engine and
//! no JavaScript: every page is a `format!` of escaped parts, so everything a device sent
//! (names, hostnames, OS strings) goes through [`esc`] before it reaches a page.

use std::fmt::Write;

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

/// The whole page around `body`. `title` is plain text (escaped here).
pub fn layout(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(v) = viewer {
        let _ = write!(
            nav,
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
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} · hallpass</title>
<link rel="stylesheet" href="/static/hallpass.css">
</head>
<body>
<header><span class="brand">hallpass</span>{nav}</header>
<main id="main">
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

/// How long from `now` to `then`, roughly: "in 9 minutes", "3 hours ago".
pub fn relative(then: i64, now: i64) -> String {
    let delta = (then - now) / 1000;
    if delta.abs() < 60 {
        return if delta >= 0 {
            "in under a minute"
        } else {
            "just now"
        }
        .to_string();
    }
    let (n, unit) = match delta.unsigned_abs() {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if delta >= 0 {
        format!("in {n} {unit}{plural}")
    } else {
        format!("{n} {unit}{plural} ago")
    }
}

/// The style sheet: one file, light and dark by `prefers-color-scheme`, readable at 360 px.
pub const CSS: &str = r#":root{--bg:#f7f7f5;--fg:#1b1b1b;--muted:#5d5d5d;--card:#fff;--line:#d9d9d4;--accent:#1c5fd6;--accent-fg:#fff;--ok:#0f7a3d;--warn:#8a5a00;--err:#b3261e;--focus:#f2b705}
@media (prefers-color-scheme:dark){:root{--bg:#141414;--fg:#ececec;--muted:#a8a8a8;--card:#1f1f1f;--line:#3a3a3a;--accent:#7aa7ff;--accent-fg:#0b0b0b;--ok:#5fd08f;--warn:#f0c060;--err:#ff8a80}}
*{box-sizing:border-box}
html{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:100%;line-height:1.5;color:var(--fg);background:var(--bg)}
body{margin:0}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;padding:.75rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
.brand{font-weight:700;letter-spacing:.02em}
nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center}
nav a,button.link{color:var(--accent);text-decoration:none;font:inherit;background:none;border:0;padding:.25rem 0;cursor:pointer}
nav a:hover,button.link:hover{text-decoration:underline}
.who{color:var(--muted)}
main{max-width:42rem;margin:0 auto;padding:1.25rem 1rem 3rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem;line-height:1.25}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
p{margin:.5rem 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:1rem;margin:1rem 0}
.card>h2:first-child{margin-top:0}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=password]{width:100%;font:inherit;font-size:1.1rem;padding:.6rem .7rem;border:1px solid var(--line);border-radius:.4rem;background:var(--bg);color:var(--fg)}
input.code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.4rem;letter-spacing:.12em;text-transform:uppercase}
button,.button{font:inherit;font-weight:600;padding:.6rem 1.1rem;border-radius:.4rem;border:1px solid var(--line);background:var(--card);color:var(--fg);cursor:pointer;min-height:2.75rem}
button.primary{background:var(--accent);color:var(--accent-fg);border-color:var(--accent)}
button.danger{color:var(--err);border-color:var(--err)}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1rem}
.inline{display:inline}
.hint{color:var(--muted);font-size:.925rem;margin:.25rem 0}
.check{display:flex;gap:.6rem;align-items:flex-start;font-weight:400;margin:1rem 0}
form.card>.check{margin-top:0}
.check input{width:1.25rem;height:1.25rem;margin-top:.15rem;flex:none}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:.5rem 0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
ul.scopes{padding-left:1.2rem;margin:.25rem 0}
ul.scopes code{font-weight:600}
.notice{border-radius:.4rem;padding:.75rem 1rem;margin:1rem 0;border:1px solid var(--line);background:var(--card)}
.notice.ok{border-color:var(--ok)}
.notice.warn{border-color:var(--warn)}
.notice.error{border-color:var(--err)}
.status{display:inline-block;font-size:.85rem;font-weight:600;padding:.05rem .5rem;border-radius:1rem;border:1px solid var(--line)}
.status.active,.status.verified{color:var(--ok);border-color:var(--ok)}
.status.locked{color:var(--err);border-color:var(--err)}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end}
.row .grow{flex:1 1 12rem}
code.usercode{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.2rem;letter-spacing:.1em}
table{border-collapse:collapse;width:100%;font-size:.925rem}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("a\u{0}b\u{1b}c"), "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn formats_times() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_795_000_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(relative(10 * 60_000, 0), "in 10 minutes");
        assert_eq!(relative(0, 3_600_000), "1 hour ago");
    }
}
