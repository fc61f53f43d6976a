//! SIP signalling metrics, and the bridge from the sans-IO endpoint's plain counters.

use std::sync::Mutex;

use prometheus::{IntCounter, IntCounterVec};

use super::register::{self, Reg};
use super::{Metrics, MetricsError, RejectReason};
use crate::sip::method::Method;
use crate::sip::uas::{ResponseTally, SipCounters};

/// Methods whose series exist at zero from start-up (the ones a trunk sends to a UAS).
const COMMON_METHODS: [&str; 9] = [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "REFER", "NOTIFY",
];

/// The `limit` label values of `ivrd_sip_source_limited_total`.
const SOURCE_LIMITS: [&str; 3] = ["calls", "invite_rate", "request_rate"];

/// The SIP group.
pub(super) struct SipMetrics {
    requests: IntCounterVec,
    responses: IntCounterVec,
    retransmissions: IntCounter,
    parse_errors: IntCounter,
    dropped: IntCounter,
    acl_rejections: IntCounter,
    source_limited: IntCounterVec,
    transaction_timeouts: IntCounter,
    /// The endpoint's counters at the previous [`Metrics::observe_sip_counters`] call.
    last: Mutex<SipCounters>,
}

impl SipMetrics {
    pub(super) fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let requests = reg.counter_vec(
            "ivrd_sip_requests_received_total",
            "SIP requests received, by method (extension methods count as other).",
            &["method"],
        )?;
        register::touch(&requests, &COMMON_METHODS.map(|m| [m]));
        let source_limited = reg.counter_vec(
            "ivrd_sip_source_limited_total",
            "Requests from a trusted source refused with 503 by a per-source limit: calls held \
             (calls) or new INVITEs a second (invite_rate), both also counted in \
             ivrd_calls_rejected_total{reason=\"overload\"}; or out-of-dialog non-INVITE \
             requests a second (request_rate).",
            &["limit"],
        )?;
        register::touch(&source_limited, &SOURCE_LIMITS.map(|l| [l]));
        Ok(SipMetrics {
            requests,
            responses: reg.counter_vec(
                "ivrd_sip_responses_sent_total",
                "SIP responses sent, by request method, status class (2xx) and status code.",
                &["method", "class", "code"],
            )?,
            retransmissions: reg.counter(
                "ivrd_sip_retransmissions_sent_total",
                "SIP requests and responses retransmitted by our transactions (RFC 3261 §17).",
            )?,
            parse_errors: reg.counter(
                "ivrd_sip_parse_errors_total",
                "Received SIP messages that could not be parsed.",
            )?,
            dropped: reg.counter(
                "ivrd_sip_messages_dropped_total",
                "Malformed SIP messages dropped without a response.",
            )?,
            acl_rejections: reg.counter(
                "ivrd_sip_acl_rejections_total",
                "INVITEs refused with 403 because the source is not trusted.",
            )?,
            source_limited,
            transaction_timeouts: reg.counter(
                "ivrd_sip_transaction_timeouts_total",
                "SIP transactions that ended by timer (no ACK, no response).",
            )?,
            last: Mutex::new(SipCounters::default()),
        })
    }
}

/// The `class` and `code` labels of a status code; anything outside 100–699 (never sent by a
/// correct core) collapses into `other` so it cannot grow the label set.
fn status_labels(code: u16, buf: &mut [u8; 3]) -> (&'static str, &str) {
    const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
    if !(100..=699).contains(&code) {
        return ("other", "other");
    }
    // Three ASCII digits formatted in place: no allocation per response.
    for (slot, div) in buf.iter_mut().zip([100u16, 10, 1]) {
        *slot = b'0' + u8::try_from(code / div % 10).unwrap_or(0);
    }
    let class = CLASSES[usize::from(code / 100 - 1)];
    (class, std::str::from_utf8(buf).unwrap_or("other"))
}

/// How much a cumulative counter grew since the last look. A smaller value means the endpoint was
/// replaced and started from zero again, so all of it is new.
fn delta(now: u64, before: u64) -> u64 {
    if now >= before { now - before } else { now }
}

impl Metrics {
    /// Counts one SIP request received (`ivrd_sip_requests_received_total{method}`).
    pub fn sip_request(&self, method: &Method) {
        self.sip
            .requests
            .with_label_values(&[method.metric_label()])
            .inc();
    }

    /// Counts one SIP response sent to a request of `method`
    /// (`ivrd_sip_responses_sent_total{method,class,code}`).
    pub fn sip_response(&self, method: &Method, code: u16) {
        let mut buf = [0u8; 3];
        let (class, code) = status_labels(code, &mut buf);
        self.sip
            .responses
            .with_label_values(&[method.metric_label(), class, code])
            .inc();
    }

    /// Brings the counters fed by the sans-IO endpoint up to date from its cumulative
    /// [`SipCounters`]: parse errors, dropped messages, ACL rejections, retransmissions,
    /// transaction timeouts, calls offered and answered, calls rejected for `acl`,
    /// `overload` and `codec`, requests by method and responses by method and code. Call it after each batch of endpoint work; it adds only what grew
    /// since the previous call, so calling it often costs nothing and never double-counts.
    /// (So do not also call [`Metrics::call_rejected`] for those three reasons.)
    pub fn observe_sip_counters(&self, now: &SipCounters) {
        let mut last = self.sip.last.lock().unwrap_or_else(|p| p.into_inner());
        let d = |f: fn(&SipCounters) -> u64| delta(f(now), f(&last));
        self.sip.parse_errors.inc_by(d(|c| c.parse_errors));
        self.sip.dropped.inc_by(d(|c| c.dropped));
        self.sip.acl_rejections.inc_by(d(|c| c.acl_rejected));
        let limited = [
            d(|c| c.source_limited_calls),
            d(|c| c.source_limited_invite_rate),
            d(|c| c.source_limited_requests),
        ];
        // The SIP driver calls this after every event; a label lookup (hash, lock) only where
        // a count grew.
        for (limit, n) in SOURCE_LIMITS
            .into_iter()
            .zip(limited)
            .filter(|&(_, n)| n > 0)
        {
            self.sip
                .source_limited
                .with_label_values(&[limit])
                .inc_by(n);
        }
        self.sip
            .retransmissions
            .inc_by(d(|c| c.retransmissions_sent));
        self.sip
            .transaction_timeouts
            .inc_by(d(|c| c.transaction_timeouts));
        self.calls.offered.inc_by(d(|c| c.calls_offered));
        self.calls.answered.inc_by(d(|c| c.calls_answered));
        let rejected = [
            (RejectReason::Acl, d(|c| c.acl_rejected)),
            (RejectReason::Overload, d(|c| c.overload_rejected)),
            (RejectReason::Codec, d(|c| c.codec_rejected)),
        ];
        for (reason, n) in rejected.into_iter().filter(|&(_, n)| n > 0) {
            self.calls.rejected_by(reason, n);
        }
        for ((label, n), (_, before)) in now.requests.iter().zip(last.requests.iter()) {
            if n != before {
                let n = delta(n, before);
                self.sip.requests.with_label_values(&[label]).inc_by(n);
            }
        }
        self.observe_responses(&now.responses, &last.responses);
        *last = now.clone();
    }

    /// The response part of [`Metrics::observe_sip_counters`]. Slots keep their key for the life
    /// of an endpoint, so entry `i` is compared with entry `i`; a different key there means the
    /// endpoint was replaced and the whole count is new.
    fn observe_responses(&self, now: &ResponseTally, last: &ResponseTally) {
        let mut before = last.iter();
        for (label, code, n) in now.iter() {
            let old = match before.next() {
                Some((l, c, old)) if l == label && c == code => old,
                _ => 0,
            };
            if n != old {
                let mut buf = [0u8; 3];
                let (class, code) = status_labels(code, &mut buf);
                self.sip
                    .responses
                    .with_label_values(&[label, class, code])
                    .inc_by(delta(n, old));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_cover_every_class_and_refuse_junk() {
        let mut buf = [0u8; 3];
        assert_eq!(status_labels(100, &mut buf), ("1xx", "100"));
        assert_eq!(status_labels(487, &mut buf), ("4xx", "487"));
        assert_eq!(status_labels(699, &mut buf), ("6xx", "699"));
        assert_eq!(status_labels(99, &mut buf), ("other", "other"));
        assert_eq!(status_labels(700, &mut buf), ("other", "other"));
    }

    #[test]
    fn delta_restarts_from_zero_when_the_source_was_replaced() {
        assert_eq!(delta(10, 4), 6);
        assert_eq!(delta(4, 4), 0);
        assert_eq!(delta(3, 10), 3);
    }
}
