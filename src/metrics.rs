//! Prometheus metrics, hand-written: counters are atomics, the per-route table a mutex-guarded
//! map with bounded keys (route templates, never raw paths), rendered in the text exposition
//! format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Outcomes of device authorizations.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A device asked for a code.
    Issued,
    /// A person approved.
    Approved,
    /// A person denied.
    Denied,
    /// The code expired unused (counted when the reaper removes it).
    Expired,
    /// The device exchanged the code for tokens.
    Exchanged,
}

const OUTCOMES: [&str; 5] = ["issued", "approved", "denied", "expired", "exchanged"];

/// Answers to device-code polls.
pub const POLL_ANSWERS: [&str; 7] = [
    "authorization_pending",
    "slow_down",
    "access_denied",
    "expired_token",
    "invalid_grant",
    "issued",
    "other",
];

/// Every metric of the process. One instance lives in `app::AppState`.
#[derive(Default)]
pub struct Metrics {
    /// (route template, status) → count and latency.
    requests: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    authorizations: [AtomicU64; 5],
    polls: [AtomicU64; 7],
    refreshes_ok: AtomicU64,
    refreshes_failed: AtomicU64,
    reaped: Mutex<BTreeMap<&'static str, u64>>,
    pool_waits: AtomicU64,
    pool_wait_micros: AtomicU64,
    write_batches: AtomicU64,
    write_jobs: AtomicU64,
    write_replays: AtomicU64,
    open_connections: AtomicU64,
    requests_seen: AtomicU64,
    /// Log lines dropped because stderr could not take them (counted by
    /// [`crate::logging::Stderr`], which exists before the metrics do).
    log_write_errors: std::sync::Arc<AtomicU64>,
    /// Pending codes ended to share a client's cap (see `app::limits::PendingCap`).
    pending_evicted: AtomicU64,
}

impl Metrics {
    /// Metrics that also report `log_write_errors`, the count of dropped log lines kept by
    /// [`crate::logging::Stderr`].
    pub fn with_log_write_errors(log_write_errors: std::sync::Arc<AtomicU64>) -> Metrics {
        Metrics {
            log_write_errors,
            ..Metrics::default()
        }
    }

    /// A new request id: unique within this process run, sent back as `X-Request-Id` and
    /// logged, so a client's report can be found in the log.
    pub fn next_request_id(&self) -> u64 {
        self.requests_seen.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records one finished request.
    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let mut map = self.requests.lock().expect("metrics poisoned");
        map.entry((route, status))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Records a device authorization outcome.
    pub fn authorization(&self, outcome: Outcome) {
        self.authorizations[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a poll's answer, one of [`POLL_ANSWERS`].
    pub fn poll(&self, answer: &str) {
        let i = POLL_ANSWERS
            .iter()
            .position(|a| *a == answer)
            .unwrap_or(POLL_ANSWERS.len() - 1);
        self.polls[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a refresh attempt.
    pub fn refresh(&self, ok: bool) {
        let c = if ok {
            &self.refreshes_ok
        } else {
            &self.refreshes_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Records rows the reaper deleted from `table`.
    pub fn reaped(&self, table: &'static str, rows: usize) {
        if rows > 0 {
            *self
                .reaped
                .lock()
                .expect("metrics poisoned")
                .entry(table)
                .or_default() += rows as u64;
        }
    }

    /// Records a wait for a pooled database connection that took `waited`.
    pub fn pool_wait(&self, waited: Duration) {
        if waited >= Duration::from_millis(1) {
            self.pool_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.pool_wait_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// A committed group-commit batch of `jobs` jobs; `replayed` when it had to run again
    /// guarded because one job needed an undo (src/db/writer.rs).
    pub fn write_batch(&self, jobs: usize, replayed: bool) {
        self.write_batches.fetch_add(1, Ordering::Relaxed);
        self.write_jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        if replayed {
            self.write_replays.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A pending code ended early to make room under `limits.max_pending_codes_per_client`
    /// for a device at a less busy address (limits::PendingCap).
    pub fn pending_code_evicted(&self) {
        self.pending_evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.open_connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.open_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let w = &mut out;
        let _ = writeln!(
            w,
            "# HELP hallpass_http_requests_total Requests by route and status."
        );
        let _ = writeln!(w, "# TYPE hallpass_http_requests_total counter");
        let requests = self.requests.lock().expect("metrics poisoned").clone();
        for ((route, status), h) in &requests {
            let _ = writeln!(
                w,
                "hallpass_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            w,
            "# HELP hallpass_http_request_duration_seconds Request latency by route."
        );
        let _ = writeln!(w, "# TYPE hallpass_http_request_duration_seconds histogram");
        let mut by_route: BTreeMap<&str, Histogram> = BTreeMap::new();
        for ((route, _), h) in &requests {
            let e = by_route.entry(route).or_default();
            for (i, c) in h.counts.iter().enumerate() {
                e.counts[i] += c;
            }
            e.count += h.count;
            e.sum += h.sum;
        }
        for (route, h) in &by_route {
            for (bound, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    w,
                    "hallpass_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {c}"
                );
            }
            let _ = writeln!(
                w,
                "hallpass_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                w,
                "hallpass_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                w,
                "hallpass_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        let counter =
            |w: &mut String, name: &str, help: &str, label: &str, rows: &[(&str, u64)]| {
                let _ = writeln!(w, "# HELP {name} {help}");
                let _ = writeln!(w, "# TYPE {name} counter");
                for (value, n) in rows {
                    let _ = writeln!(w, "{name}{{{label}=\"{value}\"}} {n}");
                }
            };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: Vec<_> = OUTCOMES
            .iter()
            .zip(&self.authorizations)
            .map(|(o, c)| (*o, load(c)))
            .collect();
        counter(
            w,
            "hallpass_device_authorizations_total",
            "Device authorizations by outcome.",
            "outcome",
            &rows,
        );
        let rows: Vec<_> = POLL_ANSWERS
            .iter()
            .zip(&self.polls)
            .map(|(a, c)| (*a, load(c)))
            .collect();
        counter(
            w,
            "hallpass_token_polls_total",
            "Device-code polls of the token endpoint by answer.",
            "answer",
            &rows,
        );
        counter(
            w,
            "hallpass_refreshes_total",
            "Refresh-token grants by result.",
            "result",
            &[
                ("ok", load(&self.refreshes_ok)),
                ("failed", load(&self.refreshes_failed)),
            ],
        );
        let reaped: Vec<_> = self
            .reaped
            .lock()
            .expect("metrics poisoned")
            .iter()
            .map(|(t, n)| (*t, *n))
            .collect();
        counter(
            w,
            "hallpass_reaper_deleted_rows_total",
            "Expired rows deleted by the reaper, by table.",
            "table",
            &reaped,
        );
        let _ = writeln!(w, "# HELP hallpass_db_pool_waits_total Database connection checkouts that waited 1 ms or more.");
        let _ = writeln!(w, "# TYPE hallpass_db_pool_waits_total counter");
        let _ = writeln!(w, "hallpass_db_pool_waits_total {}", load(&self.pool_waits));
        let _ = writeln!(w, "# HELP hallpass_db_pool_wait_seconds_total Time spent waiting for a database connection.");
        let _ = writeln!(w, "# TYPE hallpass_db_pool_wait_seconds_total counter");
        let _ = writeln!(
            w,
            "hallpass_db_pool_wait_seconds_total {}",
            load(&self.pool_wait_micros) as f64 / 1e6
        );
        for (name, help, value) in [
            (
                "hallpass_db_write_batches_total",
                "Transactions committed by the group-commit writer.",
                &self.write_batches,
            ),
            (
                "hallpass_db_write_jobs_total",
                "Write requests answered in those transactions (jobs / batches: the mean batch).",
                &self.write_jobs,
            ),
            (
                "hallpass_db_write_replays_total",
                "Committed batches that had to run a second time, one savepoint per job, because a job needed an undo.",
                &self.write_replays,
            ),
            (
                "hallpass_log_write_errors_total",
                "Log lines dropped because stderr could not take them (closed, or a full disk under it).",
                &*self.log_write_errors,
            ),
        ] {
            let _ = writeln!(w, "# HELP {name} {help}");
            let _ = writeln!(w, "# TYPE {name} counter");
            let _ = writeln!(w, "{name} {}", load(value));
        }
        let _ = writeln!(w, "# HELP hallpass_open_connections Open HTTP connections.");
        let _ = writeln!(w, "# TYPE hallpass_open_connections gauge");
        let _ = writeln!(
            w,
            "hallpass_open_connections {}",
            load(&self.open_connections)
        );
        let _ = writeln!(w, "# HELP hallpass_pending_codes_evicted_total Pending codes ended early to make room under limits.max_pending_codes_per_client for an address holding fewer (a flood from a few addresses).");
        let _ = writeln!(w, "# TYPE hallpass_pending_codes_evicted_total counter");
        let _ = writeln!(
            w,
            "hallpass_pending_codes_evicted_total {}",
            load(&self.pending_evicted)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("/oauth/token", 400, Duration::from_millis(3));
        m.request("/oauth/token", 200, Duration::from_millis(30));
        m.authorization(Outcome::Exchanged);
        m.poll("slow_down");
        m.poll("weird");
        m.reaped("devices", 3);
        m.connection(true);
        m.log_write_errors.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(
            text.contains("hallpass_http_requests_total{route=\"/oauth/token\",status=\"400\"} 1")
        );
        assert!(text.contains(
            "hallpass_http_request_duration_seconds_bucket{route=\"/oauth/token\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "hallpass_http_request_duration_seconds_bucket{route=\"/oauth/token\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("hallpass_device_authorizations_total{outcome=\"exchanged\"} 1"));
        assert!(text.contains("hallpass_token_polls_total{answer=\"slow_down\"} 1"));
        assert!(text.contains("hallpass_token_polls_total{answer=\"other\"} 1"));
        assert!(text.contains("hallpass_reaper_deleted_rows_total{table=\"devices\"} 3"));
        assert!(text.contains("hallpass_open_connections 1"));
        assert!(text.contains("hallpass_log_write_errors_total 2\n"));
    }
}
