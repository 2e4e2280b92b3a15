//! The accept loop: a connection cap, per-connection HTTP/1.1 with header-read timeouts, the
//! reaper alongside, and a graceful shutdown that stops accepting, drains in-flight requests
//! and gives up after `server.shutdown_timeout`. The [`router`] sends each request to its front
//! end.

pub mod router;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::app::AppState;
use crate::http::PeerAddr;

/// Serves `listener` until `shutdown` completes, then drains.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let config = state.config.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reaper = tokio::spawn(crate::app::reaper::run(
        state.store.clone(),
        state.polls.clone(),
        state.metrics.clone(),
        config.reaper_interval,
        config.reaper_batch_size,
        config.access_token_lifetime,
        stop_rx,
    ));
    let max_connections = connection_cap(config.max_connections);
    let limit = Arc::new(Semaphore::new(max_connections));
    let conn_metrics = state.metrics.clone();
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |mut req| {
            req.extensions_mut().insert(PeerAddr(peer));
            let state = state.clone();
            // Boxed: hyper moves the request's future around by value, and unboxed it is a few
            // KiB copied several times per request (issue 7: ~5% of a poll's CPU in memmove).
            Box::pin(
                async move { Ok::<_, std::convert::Infallible>(router::route(state, req).await) },
            )
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let metrics = conn_metrics.clone();
        metrics.connection(true);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics.connection(false);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!("gave up waiting for connections after {:?}", config.shutdown_timeout)
        }
    }
    let _ = reaper.await;
}

/// The connection cap: `configured`, within what the open-files limit allows. The soft limit is
/// raised to the hard one first (as Go's runtime does), since 1,024 — the usual soft limit —
/// is far too few for a server that must outlast a flood of slow connections; 64 descriptors
/// stay for the database files and logs.
fn connection_cap(configured: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit");
            return configured;
        }
    };
    let room = usize::try_from(limit.saturating_sub(64))
        .unwrap_or(usize::MAX)
        .max(1);
    if room < configured {
        tracing::warn!(
            configured,
            open_files_limit = limit,
            "server.max_connections lowered to fit the open-files limit ({room})"
        );
        room
    } else {
        configured
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
