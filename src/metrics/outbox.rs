//! Outbox metrics: cases waiting for the intake backend, and how delivering them goes.

use std::time::Duration;

use prometheus::{Gauge, Histogram, IntCounterVec, IntGauge};

use super::register::{self, Reg};
use super::{DeadLetterReason, Metrics, MetricsError};

/// From a case spooled to its 2xx: sub-second when the backend is up, up to hours when it was down
/// (retries with backoff), so the buckets span 50 ms to 2 h.
const LATENCY_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 7200.0,
];

/// The `result` values of `ivrd_outbox_deliveries_total`.
const RESULTS: [&str; 4] = ["delivered", "retry", "rejected", "expired"];

/// The outbox group.
pub(super) struct OutboxMetrics {
    pending: IntGauge,
    dead: IntGauge,
    oldest_pending_age: Gauge,
    deliveries: IntCounterVec,
    latency: Histogram,
}

impl OutboxMetrics {
    pub(super) fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let deliveries = reg.counter_vec(
            "ivrd_outbox_deliveries_total",
            "Case delivery attempts by result: delivered, retry (will try again), \
             rejected (4xx, dead-lettered), expired (limits reached, dead-lettered).",
            &["result"],
        )?;
        register::touch(&deliveries, &RESULTS.map(|r| [r]));
        Ok(OutboxMetrics {
            pending: reg.gauge(
                "ivrd_outbox_pending_cases",
                "Cases in the spool not yet delivered.",
            )?,
            dead: reg.gauge(
                "ivrd_outbox_dead_cases",
                "Cases in the dead-letter directory.",
            )?,
            oldest_pending_age: reg.float_gauge(
                "ivrd_outbox_oldest_pending_age_seconds",
                "Age of the oldest undelivered case; 0 when none is pending.",
            )?,
            deliveries,
            latency: reg.histogram(
                "ivrd_outbox_delivery_latency_seconds",
                "Time from a case being spooled to its successful delivery, retries included.",
                &LATENCY_BUCKETS,
            )?,
        })
    }
}

impl Metrics {
    /// Sets the spool gauges from a scan: pending and dead-letter counts, and the age of the
    /// oldest pending case (`None` when nothing is pending).
    pub fn set_outbox_state(&self, pending: usize, dead: usize, oldest_pending: Option<Duration>) {
        self.outbox.pending.set(register::as_gauge(pending));
        self.outbox.dead.set(register::as_gauge(dead));
        let age = oldest_pending.map_or(0.0, |d| d.as_secs_f64());
        self.outbox.oldest_pending_age.set(age);
    }

    /// Counts a case the backend accepted, `latency` after it was spooled.
    pub fn outbox_delivered(&self, latency: Duration) {
        self.outbox
            .deliveries
            .with_label_values(&["delivered"])
            .inc();
        self.outbox.latency.observe(latency.as_secs_f64());
    }

    /// Counts an attempt that failed in a way worth retrying (network, timeout, 429, 5xx).
    pub fn outbox_retry(&self) {
        self.outbox.deliveries.with_label_values(&["retry"]).inc();
    }

    /// Counts a case moved to the dead-letter directory.
    pub fn outbox_dead_lettered(&self, reason: DeadLetterReason) {
        self.outbox
            .deliveries
            .with_label_values(&[reason.as_str()])
            .inc();
    }
}
