//! Where log lines go: tracing's formatter writes each line to stderr through [`Stderr`], which
//! never fails. A line that cannot be written (stderr a closed pipe, or a file on a full disk)
//! is dropped and counted (`hallpass_log_write_errors_total` in `/metrics`), never turned into
//! an error or a panic on the request's path: before this (issue 18), tracing-subscriber's
//! report of a failed write was itself an `eprintln!` to the same stderr, which panicked, so
//! with stderr closed every request was dropped unanswered, and with the log on a full disk the
//! group-commit writer thread died.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

/// The log's destination: stderr, counting the lines it had to drop.
#[derive(Debug, Clone, Default)]
pub struct Stderr {
    dropped: Arc<AtomicU64>,
}

impl Stderr {
    /// The count of dropped lines, shared with [`crate::metrics::Metrics`].
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            dropped: &self.dropped,
        }
    }
}

/// One log line on its way to stderr (the formatter writes each line with one `write_all`).
pub struct Line<'a> {
    dropped: &'a AtomicU64,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Stderr is not buffered; nothing to report.
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the process's log subscriber at `level` (or `HALLPASS_LOG`) in `format`, writing to
/// [`Stderr`]. Returns the count of dropped lines.
pub fn init(level: &str, format: crate::config::LogFormat) -> Arc<AtomicU64> {
    let stderr = Stderr::default();
    let dropped = stderr.dropped();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALLPASS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr)
        // Its reports of internal errors go to stderr with `eprintln!`, which panics when
        // stderr is gone; [`Line`] reports none anyway.
        .log_internal_errors(false);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_always_accepted() {
        let stderr = Stderr::default();
        let mut line = stderr.make_writer();
        // Whether or not this test's stderr is open, the formatter is never told of a failure.
        assert!(line.write_all(b"a log line from a unit test\n").is_ok());
        assert!(line.flush().is_ok());
    }
}
