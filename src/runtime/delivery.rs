//! The delivery worker: POSTs spooled cases to `[intake] url` and records what happened.
//!
//! Data flow: [`Outbox`] (due cases) ─▶ up to `concurrency` attempt tasks ─▶ HTTP POST ─▶
//! [`RetryPolicy::decide`] (sans-IO) ─▶ the spool removes, reschedules or dead-letters the case.
//!
//! Each request carries `Content-Type: application/json`, `Idempotency-Key: <case_id>` (a case can
//! be sent more than once — after a timeout whose request did arrive, or a crash between the 2xx and
//! the file removal — and the receiver uses this key to drop repeats) and, with a secret,
//! `X-Ivrd-Signature: sha256=<hex HMAC-SHA256 of the body>`. Redirects are not followed (a POST
//! silently turned into a GET would lose the case), so 3xx dead-letters like other non-retryable
//! statuses.
//!
//! The worker sleeps until the next case is due, an `enqueue` wakes it, an attempt finishes, or the
//! periodic rescan (cases requeued by `ivrd outbox` in another process) is due.

use crate::case::CaseId;
use crate::case::retry::{Attempt, AttemptOutcome, Decision, RetryPolicy, parse_retry_after};
use crate::case::signature::{SIGNATURE_HEADER, signature_header_value};
use crate::runtime::outbox::{DeliveryMeta, Finish, Outbox, OutboxEvent, unix_ms};
use std::time::{Duration, SystemTime};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// The header carrying the case id so the receiver can recognise repeats.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Where and how to deliver. Plain configuration, so its fields are public.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The intake endpoint (`http://` or `https://`).
    pub url: String,
    /// HMAC key for the signature header; `None` sends no signature.
    pub secret: Option<String>,
    /// Limit for one attempt, connect to response headers.
    pub timeout: Duration,
    /// Attempts in flight at once (at least 1).
    pub concurrency: usize,
    /// Backoff and dead-letter limits.
    pub retry: RetryPolicy,
    /// How often to look for pending files this process did not enqueue.
    pub rescan_interval: Duration,
}

impl DeliveryConfig {
    /// Defaults for production: 10 s timeout, 4 in flight, [`RetryPolicy::default`], 30 s rescan.
    pub fn new(url: impl Into<String>, secret: Option<String>) -> DeliveryConfig {
        DeliveryConfig {
            url: url.into(),
            secret,
            timeout: Duration::from_secs(10),
            concurrency: 4,
            retry: RetryPolicy::default(),
            rescan_interval: Duration::from_secs(30),
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("intake url {url:?} is not an http(s) URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {source}")]
    Client { source: reqwest::Error },
}

/// Starts the worker as a tokio task, or — with no config (no `[intake] url`) — only logs where the
/// cases stay. The task ends after `shutdown` once in-flight attempts have stopped.
pub fn spawn_delivery(
    outbox: Outbox,
    config: Option<DeliveryConfig>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<Result<(), DeliveryError>>> {
    match config {
        None => {
            tracing::info!(
                spool = %outbox.pending_dir().display(),
                "no [intake] url: cases stay in the spool for a file-based integration"
            );
            None
        }
        Some(config) => Some(tokio::spawn(run_delivery(outbox, config, shutdown))),
    }
}

/// Everything one attempt needs, shared by all attempt tasks.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<String>,
    retry: RetryPolicy,
}

/// Runs the worker until `shutdown`; attempts in flight are abandoned (the cases stay pending and
/// are sent again later, with the same idempotency key).
pub async fn run_delivery(
    outbox: Outbox,
    config: DeliveryConfig,
    shutdown: CancellationToken,
) -> Result<(), DeliveryError> {
    let sender = build_sender(&config)?;
    let concurrency = config.concurrency.max(1);
    tracing::info!(url = %sender.url, concurrency, "case delivery started");
    let mut tasks = JoinSet::new();
    let mut next_rescan = tokio::time::Instant::now() + config.rescan_interval;
    loop {
        let now = unix_ms(SystemTime::now());
        for (case_id, meta) in outbox.take_due(now, concurrency - tasks.len()) {
            let job = attempt(
                outbox.clone(),
                sender.clone(),
                case_id,
                meta,
                shutdown.clone(),
            );
            tasks.spawn(job);
        }
        // With every slot busy, a due case must wait for a finished attempt, not spin the loop.
        let wake = match outbox.next_due() {
            Some(due) if tasks.len() < concurrency => {
                let until_due =
                    tokio::time::Instant::now() + Duration::from_millis(due.saturating_sub(now));
                until_due.min(next_rescan)
            }
            _ => next_rescan,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "case delivery attempt task failed");
                }
            }
            _ = outbox.enqueued() => {}
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= next_rescan {
                    next_rescan = tokio::time::Instant::now() + config.rescan_interval;
                    rescan(&outbox).await;
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("case delivery stopped");
    Ok(())
}

fn build_sender(config: &DeliveryConfig) -> Result<Sender, DeliveryError> {
    let bad_url = |reason: String| DeliveryError::BadUrl {
        url: config.url.clone(),
        reason,
    };
    let url = reqwest::Url::parse(&config.url).map_err(|e| bad_url(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad_url(format!("scheme {:?}", url.scheme())));
    }
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ivrd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| DeliveryError::Client { source })?;
    Ok(Sender {
        client,
        url,
        secret: config.secret.clone(),
        retry: config.retry,
    })
}

async fn rescan(outbox: &Outbox) {
    let outbox = outbox.clone();
    match tokio::task::spawn_blocking(move || outbox.rescan()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(added)) => tracing::info!(added, "outbox: picked up pending cases found on disk"),
        Ok(Err(error)) => tracing::error!(%error, "outbox rescan failed"),
        Err(error) => tracing::error!(%error, "outbox rescan task failed"),
    }
}

/// One attempt for one case: read, POST, decide, record.
async fn attempt(
    outbox: Outbox,
    sender: Sender,
    case_id: CaseId,
    meta: DeliveryMeta,
    shutdown: CancellationToken,
) {
    let body = match tokio::fs::read(outbox.case_path(&case_id)).await {
        Ok(body) => body,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(%case_id, "outbox: case file gone, forgetting it");
            outbox.forget(&case_id);
            return;
        }
        Err(error) => {
            let detail = format!("cannot read the case file: {error}");
            record(
                &outbox,
                &sender,
                case_id,
                meta,
                AttemptOutcome::Network,
                detail,
            )
            .await;
            return;
        }
    };
    let sent = tokio::select! {
        sent = post(&sender, &case_id, body) => sent,
        _ = shutdown.cancelled() => {
            outbox.release(&case_id);
            return;
        }
    };
    let (outcome, detail) = sent;
    record(&outbox, &sender, case_id, meta, outcome, detail).await;
}

/// Sends the request; returns the outcome and a human-readable detail for the sidecar.
async fn post(sender: &Sender, case_id: &CaseId, body: Vec<u8>) -> (AttemptOutcome, String) {
    let mut request = sender
        .client
        .post(sender.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, case_id.as_str());
    if let Some(secret) = &sender.secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature_header_value(secret.as_bytes(), &body),
        );
    }
    match request.body(body).send().await {
        Ok(response) => {
            let code = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let outcome = AttemptOutcome::Status { code, retry_after };
            (outcome, outcome.to_string())
        }
        Err(error) if error.is_timeout() => (AttemptOutcome::Timeout, error_chain(&error)),
        Err(error) => (AttemptOutcome::Network, error_chain(&error)),
    }
}

/// Applies the policy's decision to the spool (on the blocking pool: it fsyncs) and reports it.
async fn record(
    outbox: &Outbox,
    sender: &Sender,
    case_id: CaseId,
    meta: DeliveryMeta,
    outcome: AttemptOutcome,
    detail: String,
) {
    let attempts = meta.attempts.saturating_add(1);
    let now = unix_ms(SystemTime::now());
    let facts = Attempt {
        number: attempts,
        first_enqueued_unix_ms: meta.first_enqueued_unix_ms,
        now_unix_ms: now,
    };
    let decision = sender.retry.decide(outcome, facts, rand::random());
    let (finish, event) = match decision {
        Decision::Delivered => {
            tracing::info!(%case_id, attempts, "case delivered");
            let event = OutboxEvent::Delivered {
                case_id: case_id.clone(),
                attempts,
            };
            (Finish::Delivered, event)
        }
        Decision::RetryIn(delay) => {
            tracing::warn!(%case_id, attempts, error = %detail, retry_in_ms = delay.as_millis() as u64,
                "case delivery failed, will retry");
            let next_due = now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            let meta = DeliveryMeta {
                attempts,
                first_enqueued_unix_ms: meta.first_enqueued_unix_ms,
                next_due_unix_ms: next_due,
                last_error: Some(detail.clone()),
            };
            let event = OutboxEvent::RetryScheduled {
                case_id: case_id.clone(),
                attempts,
                delay,
                error: detail,
            };
            (Finish::Retry(meta), event)
        }
        Decision::Dead(reason) => {
            tracing::error!(%case_id, attempts, %reason, error = %detail, "case dead-lettered");
            let text = format!("{reason}\nlast error: {detail}");
            let event = OutboxEvent::DeadLettered {
                case_id: case_id.clone(),
                reason: reason.to_string(),
            };
            (Finish::Dead(text), event)
        }
    };
    let spool = outbox.clone();
    let id = case_id.clone();
    match tokio::task::spawn_blocking(move || spool.finish(&id, finish)).await {
        Ok(Ok(())) => outbox.emit(event),
        Ok(Err(error)) => tracing::error!(%case_id, %error, "outbox: cannot record the attempt"),
        Err(error) => {
            tracing::error!(%case_id, %error, "outbox: recording task failed");
            outbox.release(&case_id);
        }
    }
}

/// The error and its sources on one line ("error sending request: ...: Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
