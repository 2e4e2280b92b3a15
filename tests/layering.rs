//! The architecture, checked (issue 20): the layers of `src/` import only downwards, and
//! nothing outside a storage backend's folder names its driver or holds SQL.
//!
//! Each file of `src/` belongs to one layer (see [`LAYERS`]); every `crate::…` path in its code
//! (comments aside) must name a module of its own layer or of one below. Outside
//! `src/store/sqlite/`, no code may name the SQLite driver (`rusqlite`, `r2d2`), a `Connection`
//! or an SQLite error code (but for the copy into PostgreSQL, `src/store/postgres/copy.rs`);
//! outside the two backends' folders, no code may hold SQL or name the PostgreSQL driver; and
//! only `src/store/` may name a backend. A file that
//! breaks a rule is named with the line, so the fix is where the message says.

use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may use its own layer and those before it. Paths are
/// `crate::` paths (the first segments of a module's path); the longest that fits a file wins.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundations", &["clock", "secrets", "text", "metrics"]),
    ("protocol", &["protocol"]),
    ("configuration and domain", &["config", "domain"]),
    ("infrastructure", &["sealing", "location", "logging"]),
    ("storage", &["store"]),
    ("use cases", &["app"]),
    ("HTTP plumbing and the OAuth endpoints", &["http"]),
    ("front ends", &["web", "api"]),
    ("server", &["server"]),
    ("command line", &["cli"]),
];

/// What the code of a file says (its lines, comments removed), and where the file is.
struct Source {
    /// Path relative to the crate root, with `/`.
    path: String,
    /// (line number, code) of each line that is not a comment.
    lines: Vec<(usize, String)>,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let lines = text
                .lines()
                .enumerate()
                .map(|(i, l)| (i + 1, code_of(l)))
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            let path = f
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            Source { path, lines }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A line without its comment (`//` outside a string literal).
fn code_of(line: &str) -> String {
    let mut in_string = false;
    let mut escaped = false;
    let chars: Vec<char> = line.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '/' if !in_string && chars.get(i + 1) == Some(&'/') => {
                return chars[..i].iter().collect();
            }
            _ => {}
        }
    }
    line.to_string()
}

/// The module path of a file: `src/store/sqlite/flow.rs` → `store::sqlite::flow`.
fn module_of(path: &str) -> String {
    let p = path.trim_start_matches("src/").trim_end_matches(".rs");
    p.trim_end_matches("/mod").replace('/', "::")
}

/// The layer of a module path (`None`: the crate root, `main` or `lib`, above everything).
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| {
        mods.iter()
            .any(|m| module == *m || module.starts_with(&format!("{m}::")))
    })
}

/// Every `crate::a::b` path in a line of code.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + "crate::".len()..];
        let end = tail
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            rest = &tail[end..];
            continue;
        }
        if end == 0 && tail.starts_with('{') {
            // `crate::{a, b::c}`: each first segment in the braces (on this line).
            let group = &tail[1..tail.find('}').unwrap_or(tail.len())];
            out.extend(
                group
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty()),
            );
        } else {
            out.push(tail[..end].trim_end_matches(':').to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_file_of_src_has_a_layer() {
    for s in sources() {
        let module = module_of(&s.path);
        if matches!(module.as_str(), "main" | "lib") {
            continue;
        }
        assert!(
            layer_of(&module).is_some(),
            "{} is in no layer of tests/layering.rs: put its module in LAYERS",
            s.path
        );
    }
}

#[test]
fn every_import_points_down_the_layers() {
    let mut wrong = Vec::new();
    for s in sources() {
        let module = module_of(&s.path);
        let Some(mine) = layer_of(&module) else {
            continue;
        };
        for (n, code) in &s.lines {
            for used in crate_paths(code) {
                let Some(theirs) = layer_of(&used) else {
                    continue;
                };
                if theirs > mine {
                    wrong.push(format!(
                        "{}:{n}: `crate::{used}` ({}) is above {} ({})",
                        s.path, LAYERS[theirs].0, module, LAYERS[mine].0
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn nothing_outside_the_storage_backend_speaks_sqlite() {
    // Words of the driver, its types and error codes, and the start of SQL statements in a
    // string literal.
    let driver = [
        "rusqlite",
        "r2d2",
        "Connection",
        "SQLITE_",
        "ErrorCode::DatabaseBusy",
    ];
    let sql = [
        "\"SELECT ",
        "\"INSERT ",
        "\"UPDATE ",
        "\"DELETE ",
        "\"CREATE ",
        "\"PRAGMA ",
        "\"BEGIN",
        "\"VACUUM",
    ];
    // The PostgreSQL driver's words, which only its backend may name.
    let pg_driver = ["tokio_postgres", "deadpool", "postgres::"];
    let mut wrong = Vec::new();
    for s in sources() {
        let in_sqlite = s.path.starts_with("src/store/sqlite/");
        let in_postgres = s.path.starts_with("src/store/postgres/");
        // `hallpass migrate-db` reads the SQLite file to copy it into PostgreSQL: the one file
        // of the PostgreSQL backend that speaks both.
        let bridge = s.path == "src/store/postgres/copy.rs";
        for (n, code) in &s.lines {
            if !in_sqlite && !bridge {
                for w in driver {
                    // The PostgreSQL backend names its own pooled connection type.
                    if in_postgres && w == "Connection" {
                        continue;
                    }
                    if code.contains(w) {
                        wrong.push(format!("{}:{n}: `{w}`", s.path));
                    }
                }
            }
            if !in_sqlite && !in_postgres {
                for w in sql {
                    if code.contains(w) {
                        wrong.push(format!("{}:{n}: `{}`", s.path, w.trim_start_matches('"')));
                    }
                }
                for w in pg_driver {
                    if code.contains(w) && s.path != "src/store/mod.rs" {
                        wrong.push(format!("{}:{n}: `{w}`", s.path));
                    }
                }
            }
            if !s.path.starts_with("src/store/")
                && (code.contains("store::sqlite") || code.contains("store::postgres"))
            {
                wrong.push(format!("{}:{n}: names a storage backend", s.path));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a driver or SQL outside its backend's folder:\n{}",
        wrong.join("\n")
    );
}

/// The three import circles of issue 20 stay gone (a narrower check than the layers': these
/// pairs share a layer).
#[test]
fn the_old_import_circles_stay_gone() {
    let all = sources();
    let uses = |file: &str, path: &str| {
        all.iter()
            .find(|s| s.path == file)
            .is_some_and(|s| s.lines.iter().any(|(_, l)| l.contains(path)))
    };
    assert!(
        !(uses("src/web/account.rs", "device::") && uses("src/web/device.rs", "account::")),
        "web/account and web/device import each other"
    );
    assert!(
        !uses("src/protocol/jwt.rs", "crate::store") && !uses("src/config.rs", "crate::store"),
        "the clock is crate::clock, not the store's"
    );
}

#[test]
fn the_checks_themselves_work() {
    assert_eq!(module_of("src/store/sqlite/mod.rs"), "store::sqlite");
    assert_eq!(module_of("src/app/limits.rs"), "app::limits");
    assert_eq!(layer_of("store::sqlite::db"), layer_of("store"));
    assert!(layer_of("app").unwrap() > layer_of("store").unwrap());
    assert_eq!(
        crate_paths("use crate::store::{Store, Stamp}; x = crate::clock::now_ms();"),
        ["store", "clock::now_ms"]
    );
    assert_eq!(
        crate_paths("use crate::{app, store::Store};"),
        ["app", "store::Store"]
    );
    assert_eq!(
        code_of(r#"let s = "a // b"; // c"#),
        r#"let s = "a // b"; "#
    );
}
