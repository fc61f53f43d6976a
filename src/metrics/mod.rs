//! Every Prometheus metric ivrd exports, defined once, in one registry of its own.
//!
//! Where it sits: the tokio drivers (SIP driver, call tasks, recorder, outbox worker, reload) call
//! the one-line helpers on [`Metrics`]; `runtime::http` renders the registry for `GET /metrics`.
//! The sans-IO core never sees this module: the SIP endpoint keeps plain [`SipCounters`] that the
//! driver hands to [`Metrics::observe_sip_counters`].
//!
//! Naming follows the Prometheus conventions: prefix `ivrd_`, counters end in `_total`, durations
//! are `_seconds` in base units, `_info` gauges carry build and dialplan identity as labels.
//!
//! Labels are bounded. Fixed sets are typed enums ([`RejectReason`], [`CallOutcome`], …) and every
//! value of them is created at zero on start-up. SIP methods come from `Method::metric_label()`
//! (extensions collapse into `other`) and response codes are 100–699. Node ids, request types and
//! domain codes come from the loaded dialplan and taxonomy, so their number is bounded by the plans
//! loaded since the process started. Caller numbers and call ids are never labels.
//!
//! [`SipCounters`]: crate::sip::uas::SipCounters

mod calls;
mod labels;
mod media;
pub use media::WriterOpTimes;
mod outbox;
mod register;
mod sip;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use prometheus::{IntCounterVec, IntGaugeVec, Registry, TextEncoder};

pub use labels::{
    CallOutcome, DeadLetterReason, RecordingKind, RejectReason, TransferResult, TransferTarget,
};
use register::Reg;

/// The version and commit stamped in at build time (see `build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The short git commit of the build, or "unknown" outside a checkout.
pub const GIT_SHA: &str = env!("IVRD_GIT_SHA");

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric definition was refused (bad name, duplicate registration).
    #[error("defining metric {name}: {source}")]
    Define {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
    /// The registry could not be encoded in the text exposition format.
    #[error("encoding metrics as text: {source}")]
    Encode {
        #[source]
        source: prometheus::Error,
    },
}

/// All of ivrd's metrics and the registry that holds them.
///
/// Shared as `Arc<Metrics>`; every helper takes `&self` and is safe from any task. Helpers that
/// take a fixed label (an enum) touch only atomics; helpers with a dialplan label (node id) also
/// look the series up under a read lock, which is fine per event but not per packet.
pub struct Metrics {
    registry: Registry,
    info: InfoMetrics,
    sip: sip::SipMetrics,
    calls: calls::CallMetrics,
    ivr: calls::IvrMetrics,
    media: media::MediaMetrics,
    recording: media::RecordingMetrics,
    outbox: outbox::OutboxMetrics,
    /// Tokio tasks alive now, set at each scrape: a soak run's leak detector (a task per call
    /// that never ends shows as a count that does not return to idle).
    tasks_alive: prometheus::IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Build and dialplan identity, and reload results.
struct InfoMetrics {
    dialplan: IntGaugeVec,
    reloads: IntCounterVec,
}

impl InfoMetrics {
    fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let build = reg.gauge_vec(
            "ivrd_build_info",
            "Build of the running ivrd; always 1.",
            &["version", "git_sha"],
        )?;
        build.with_label_values(&[VERSION, GIT_SHA]).set(1);
        let dialplan = reg.gauge_vec(
            "ivrd_dialplan_info",
            "Dialplan that new calls use; always 1, one series.",
            &["name", "version", "hash"],
        )?;
        let reloads = reg.counter_vec(
            "ivrd_dialplan_reloads_total",
            "Dialplan reloads by result (succeeded, failed).",
            &["result"],
        )?;
        register::touch(&reloads, &[["succeeded"], ["failed"]]);
        Ok(InfoMetrics { dialplan, reloads })
    }
}

impl Metrics {
    /// Defines every metric in a fresh registry (not the process-global default one) and sets
    /// `ivrd_build_info`. Fails only on a definition bug, which the unit tests catch.
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
        let registry = Registry::new();
        let reg = Reg::new(&registry);
        let metrics = Metrics {
            info: InfoMetrics::register(&reg)?,
            sip: sip::SipMetrics::register(&reg)?,
            calls: calls::CallMetrics::register(&reg)?,
            ivr: calls::IvrMetrics::register(&reg)?,
            media: media::MediaMetrics::register(&reg)?,
            recording: media::RecordingMetrics::register(&reg)?,
            outbox: outbox::OutboxMetrics::register(&reg)?,
            tasks_alive: reg.gauge(
                "ivrd_runtime_tasks_alive",
                "Tokio tasks alive in the daemon's runtime, sampled when /metrics is scraped.",
            )?,
            registry,
        };
        Ok(Arc::new(metrics))
    }

    /// The whole registry in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> Result<String, MetricsError> {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(|source| MetricsError::Encode { source })
    }

    /// Replaces `ivrd_dialplan_info` with the plan new calls now use (at start-up and after each
    /// successful reload). `hash` is the content hash the cases record. A scrape that races the
    /// swap may see no series for an instant, never two.
    pub fn set_dialplan(&self, name: &str, version: &str, hash: &str) {
        self.info.dialplan.reset();
        self.info
            .dialplan
            .with_label_values(&[name, version, hash])
            .set(1);
    }

    /// Sets the alive-task gauge (from `tokio::runtime::Handle::metrics`).
    pub fn set_runtime_tasks_alive(&self, tasks: usize) {
        self.tasks_alive.set(register::as_gauge(tasks));
    }

    /// Counts a reload that replaced the plan (`ivrd_dialplan_reloads_total{result="succeeded"}`).
    pub fn dialplan_reload_succeeded(&self) {
        self.info.reloads.with_label_values(&["succeeded"]).inc();
    }

    /// Counts a reload refused because the new plan was invalid; the old plan keeps serving.
    pub fn dialplan_reload_failed(&self) {
        self.info.reloads.with_label_values(&["failed"]).inc();
    }
}
