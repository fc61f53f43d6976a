//! The operator's HTTP listener (`[metrics] listen`): `GET /metrics` for Prometheus, `GET /healthz`
//! (the process answers) and `GET /readyz` (SIP bound, dialplan loaded, not draining).
//!
//! Where it sits: beside the SIP server, driven by the same shutdown token. It only reads the
//! shared [`Metrics`] and [`Readiness`]; the rest of the runtime writes them. The caller binds the
//! listener, so tests use port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotReady {
    /// The SIP sockets are not bound yet.
    SipNotBound,
    /// No dialplan has been loaded yet.
    NoDialplan,
    /// The daemon is draining and takes no new calls.
    Draining,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotReady::SipNotBound => "sip sockets not bound",
            NotReady::NoDialplan => "no dialplan loaded",
            NotReady::Draining => "draining",
        })
    }
}

/// Whether ivrd should receive new calls; a cheap-clone handle shared by the server (writes) and
/// `/readyz` (reads). Starts not ready: nothing bound, no plan, not draining.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<ReadyFlags>,
}

#[derive(Debug, Default)]
struct ReadyFlags {
    sip_bound: AtomicBool,
    dialplan_loaded: AtomicBool,
    draining: AtomicBool,
    /// Woken on every change, for [`Readiness::ready`].
    changed: tokio::sync::Notify,
}

impl Readiness {
    /// A handle in the not-ready start state.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Records whether the SIP sockets are bound.
    pub fn set_sip_bound(&self, bound: bool) {
        self.inner.sip_bound.store(bound, Ordering::Release);
        self.inner.changed.notify_waiters();
    }

    /// Records whether a dialplan is loaded for new calls.
    pub fn set_dialplan_loaded(&self, loaded: bool) {
        self.inner.dialplan_loaded.store(loaded, Ordering::Release);
        self.inner.changed.notify_waiters();
    }

    /// Records that the daemon is draining (or no longer is).
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.store(draining, Ordering::Release);
        self.inner.changed.notify_waiters();
    }

    /// Every reason ivrd is not ready now, in a stable order; empty when ready.
    pub fn not_ready(&self) -> Vec<NotReady> {
        let flags = &self.inner;
        let mut reasons = Vec::new();
        if !flags.sip_bound.load(Ordering::Acquire) {
            reasons.push(NotReady::SipNotBound);
        }
        if !flags.dialplan_loaded.load(Ordering::Acquire) {
            reasons.push(NotReady::NoDialplan);
        }
        if flags.draining.load(Ordering::Acquire) {
            reasons.push(NotReady::Draining);
        }
        reasons
    }

    /// True when SIP is bound, a dialplan is loaded and ivrd is not draining.
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_empty()
    }

    /// Returns once ivrd is ready (at once when it already is).
    pub async fn ready(&self) {
        loop {
            // Registered before the check: a change between the check and the await still
            // wakes it.
            let changed = self.inner.changed.notified();
            if self.is_ready() {
                return;
            }
            changed.await;
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Readiness,
}

/// The routes, separate from `serve` so they can be mounted elsewhere if ever needed.
pub fn router(metrics: Arc<Metrics>, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready })
}

/// Serves the routes on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish. Returns the accept loop's I/O error if it fails.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics and health endpoints listening");
    }
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn scrape(State(state): State<AppState>) -> Response {
    // Sampled here rather than on a timer: the value is only ever read by a scrape.
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    state.metrics.set_runtime_tasks_alive(tasks);
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "rendering /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let reasons = state.ready.not_ready();
    if reasons.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let body: String = reasons.iter().map(|r| format!("{r}\n")).collect();
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Status code, headers (lower-cased) and body of a raw HTTP/1.1 GET.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: ivrd\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn ready_returns_only_once_every_flag_is_set() {
        let ready = Readiness::new();
        let waiter = tokio::spawn({
            let ready = ready.clone();
            async move { ready.ready().await }
        });
        ready.set_sip_bound(true);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "ready with no dialplan");
        ready.set_dialplan_loaded(true);
        waiter.await.unwrap();
        // Already ready: returns at once; not while draining.
        ready.ready().await;
        ready.set_draining(true);
        let pending = tokio::time::timeout(std::time::Duration::ZERO, ready.ready()).await;
        assert!(pending.is_err(), "ready while draining");
    }

    /// A server on an ephemeral loopback port and the handles a test drives it with.
    struct Running {
        addr: std::net::SocketAddr,
        metrics: Arc<Metrics>,
        ready: Readiness,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Running {
        async fn start() -> Running {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let metrics = Metrics::new().unwrap();
            let ready = Readiness::new();
            let stop = CancellationToken::new();
            let task = tokio::spawn(serve(
                listener,
                metrics.clone(),
                ready.clone(),
                stop.clone(),
            ));
            Running {
                addr,
                metrics,
                ready,
                stop,
                task,
            }
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_registry_as_text() {
        let srv = Running::start().await;
        let (addr, metrics) = (srv.addr, srv.metrics.clone());
        metrics.media_timeout();
        metrics.media_timeout();
        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.lines().any(|l| l == "ivrd_media_timeouts_total 2"),
            "{body}"
        );
        srv.stop().await;
    }

    #[tokio::test]
    async fn healthz_answers_ok_and_unknown_paths_404() {
        let srv = Running::start().await;
        let addr = srv.addr;
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/healthz").await.2, "ok\n");
        assert_eq!(get(addr, "/nope").await.0, 404);
        srv.stop().await;
    }

    #[tokio::test]
    async fn readyz_follows_the_readiness_flags() {
        let srv = Running::start().await;
        let (addr, ready) = (srv.addr, srv.ready.clone());
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "sip sockets not bound\nno dialplan loaded\n");

        ready.set_sip_bound(true);
        ready.set_dialplan_loaded(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);

        ready.set_draining(true);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "draining\n");
        srv.stop().await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let srv = Running::start().await;
        let addr = srv.addr;
        srv.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
