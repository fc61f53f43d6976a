//! Feeds the outbox's events and spool counts into the metrics: deliveries by result, delivery
//! latency (spooled → accepted), and the pending / dead / oldest-age gauges.
//!
//! Where it sits: [`Outbox`] broadcasts [`OutboxEvent`]s as the delivery worker finishes attempts;
//! this task turns them into [`Metrics`] calls, and refreshes the gauges once a second (dead
//! letters can also change under `ivrd outbox --requeue`, in another process).

use crate::case::CaseId;
use crate::metrics::{DeadLetterReason, Metrics};
use crate::runtime::outbox::{Outbox, OutboxEvent, unix_ms};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Starts the task; it ends with `stop`.
pub fn spawn(outbox: Outbox, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut events = outbox.subscribe();
    // Spool times of pending cases (Unix ms), for the latency; bounded by the pending count.
    let mut spooled: HashMap<CaseId, u64> = outbox
        .pending_entries()
        .into_iter()
        .map(|(id, meta)| (id, meta.first_enqueued_unix_ms))
        .collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => refresh_gauges(&outbox, &metrics),
                event = events.recv() => match event {
                    Ok(event) => on_event(&metrics, &mut spooled, event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "outbox metrics fell behind; some deliveries not counted");
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
    });
}

fn on_event(metrics: &Metrics, spooled: &mut HashMap<CaseId, u64>, event: OutboxEvent) {
    let now = unix_ms(SystemTime::now());
    match event {
        OutboxEvent::Enqueued { case_id } => {
            spooled.insert(case_id, now);
        }
        OutboxEvent::Delivered { case_id, .. } => {
            let since = spooled.remove(&case_id).unwrap_or(now);
            metrics.outbox_delivered(Duration::from_millis(now.saturating_sub(since)));
        }
        OutboxEvent::RetryScheduled { .. } => metrics.outbox_retry(),
        OutboxEvent::DeadLettered { case_id, reason } => {
            spooled.remove(&case_id);
            // The reason text starts with the policy's own words (see `DeadReason`'s Display).
            let why = if reason.starts_with("rejected") {
                DeadLetterReason::Rejected
            } else {
                DeadLetterReason::Expired
            };
            metrics.outbox_dead_lettered(why);
        }
    }
}

fn refresh_gauges(outbox: &Outbox, metrics: &Metrics) {
    match outbox.counts() {
        Ok(c) => metrics.set_outbox_state(c.pending, c.dead, c.oldest_pending_age),
        Err(error) => tracing::warn!(%error, "outbox counts unavailable for metrics"),
    }
}
