//! Call and IVR-journey metrics: what happened to each call, and where in the menus callers went,
//! gave up or got stuck.

use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use super::register::{self, Reg};
use super::{CallOutcome, Metrics, MetricsError, RejectReason, TransferResult, TransferTarget};
use crate::media::digit::DtmfMethod;

/// Whole calls last seconds to an hour; the interesting part is 30 s – 10 min.
const CALL_DURATION_BUCKETS: [f64; 11] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];
/// 12345 menus must be short (DOMAIN.md): most callers should leave the IVR within a minute.
const IVR_TIME_BUCKETS: [f64; 12] = [
    2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
];
/// GB/T 33358-2016 asks for an answer within 15 s, so buckets are dense around it.
const TIME_TO_AGENT_BUCKETS: [f64; 12] = [
    5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];

/// The call group.
pub(super) struct CallMetrics {
    pub(super) offered: IntCounter,
    pub(super) answered: IntCounter,
    rejected: IntCounterVec,
    active: IntGauge,
    ended: IntCounterVec,
    duration: Histogram,
    ivr_time: Histogram,
    time_to_agent: Histogram,
}

impl CallMetrics {
    pub(super) fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let rejected = reg.counter_vec(
            "ivrd_calls_rejected_total",
            "INVITEs refused before answer, by reason (acl, overload, codec, other).",
            &["reason"],
        )?;
        register::touch(&rejected, &RejectReason::ALL.map(|r| [r.as_str()]));
        let ended = reg.counter_vec(
            "ivrd_calls_ended_total",
            "Answered calls that ended, by outcome.",
            &["outcome"],
        )?;
        register::touch(&ended, &CallOutcome::ALL.map(|o| [o.as_str()]));
        Ok(CallMetrics {
            offered: reg.counter(
                "ivrd_calls_offered_total",
                "INVITEs that asked for a new call.",
            )?,
            answered: reg.counter("ivrd_calls_answered_total", "Calls answered with 200 OK.")?,
            rejected,
            active: reg.gauge("ivrd_calls_active", "Calls ringing or answered now.")?,
            ended,
            duration: reg.histogram(
                "ivrd_call_duration_seconds",
                "Answered call length, answer to hang-up.",
                &CALL_DURATION_BUCKETS,
            )?,
            ivr_time: reg.histogram(
                "ivrd_call_ivr_seconds",
                "Time a caller spent in the IVR, answer to transfer or hang-up.",
                &IVR_TIME_BUCKETS,
            )?,
            time_to_agent: reg.histogram(
                "ivrd_call_time_to_agent_seconds",
                "Time from answer until a transfer to a person succeeded.",
                &TIME_TO_AGENT_BUCKETS,
            )?,
        })
    }

    pub(super) fn rejected_by(&self, reason: RejectReason, n: u64) {
        self.rejected
            .with_label_values(&[reason.as_str()])
            .inc_by(n);
    }
}

/// The IVR journey group.
pub(super) struct IvrMetrics {
    node_entries: IntCounterVec,
    node_timeouts: IntCounterVec,
    node_invalid_keys: IntCounterVec,
    node_hangups: IntCounterVec,
    digits: IntCounterVec,
    classifications: IntCounterVec,
    transfers: IntCounterVec,
}

impl IvrMetrics {
    pub(super) fn register(reg: &Reg<'_>) -> Result<Self, MetricsError> {
        let digits = reg.counter_vec(
            "ivrd_ivr_digits_total",
            "DTMF keys received, by the method that delivered them first.",
            &["method"],
        )?;
        let methods = [DtmfMethod::Rfc4733, DtmfMethod::Info, DtmfMethod::Inband];
        register::touch(&digits, &methods.map(|m| [m.as_str()]));
        let transfers = reg.counter_vec(
            "ivrd_ivr_transfers_total",
            "Transfers (REFER) finished, by target class and result.",
            &["target_class", "result"],
        )?;
        for t in TransferTarget::ALL {
            register::touch(
                &transfers,
                &TransferResult::ALL.map(|r| [t.as_str(), r.as_str()]),
            );
        }
        let node = ["node"];
        Ok(IvrMetrics {
            node_entries: reg.counter_vec(
                "ivrd_ivr_node_entries_total",
                "Times callers entered a dialplan node.",
                &node,
            )?,
            node_timeouts: reg.counter_vec(
                "ivrd_ivr_node_timeouts_total",
                "Menu or collect timeouts (caller pressed nothing), by node.",
                &node,
            )?,
            node_invalid_keys: reg.counter_vec(
                "ivrd_ivr_node_invalid_keys_total",
                "Keys a node did not accept, by node.",
                &node,
            )?,
            node_hangups: reg.counter_vec(
                "ivrd_ivr_node_hangups_total",
                "Callers who hung up while at a node, by node.",
                &node,
            )?,
            digits,
            classifications: reg.counter_vec(
                "ivrd_ivr_classifications_total",
                "Calls classified, by request type and level-1 domain code.",
                &["request_type", "domain"],
            )?,
            transfers,
        })
    }
}

impl Metrics {
    /// Counts a refusal that the SIP endpoint's counters do not carry (normally only
    /// [`RejectReason::Other`]; acl/overload/codec arrive via `observe_sip_counters`).
    pub fn call_rejected(&self, reason: RejectReason) {
        self.calls.rejected_by(reason, 1);
    }

    /// Sets `ivrd_calls_active` to the endpoint's current number of calls.
    pub fn set_active_calls(&self, n: usize) {
        self.calls.active.set(register::as_gauge(n));
    }

    /// Counts an answered call that ended, with its length from answer to hang-up.
    pub fn call_ended(&self, outcome: CallOutcome, duration: Duration) {
        self.calls
            .ended
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.calls.duration.observe(duration.as_secs_f64());
    }

    /// Records how long a caller spent in the IVR (answer to transfer or hang-up), once per call.
    pub fn ivr_time(&self, spent: Duration) {
        self.calls.ivr_time.observe(spent.as_secs_f64());
    }

    /// Records how long a caller took to reach a person (answer to successful transfer).
    pub fn time_to_agent(&self, waited: Duration) {
        self.calls.time_to_agent.observe(waited.as_secs_f64());
    }

    /// Counts a caller entering dialplan node `node` (an id from the loaded plan).
    pub fn ivr_node_entered(&self, node: &str) {
        self.ivr.node_entries.with_label_values(&[node]).inc();
    }

    /// Counts a timeout (no key) at `node`.
    pub fn ivr_node_timeout(&self, node: &str) {
        self.ivr.node_timeouts.with_label_values(&[node]).inc();
    }

    /// Counts a key that `node` did not accept.
    pub fn ivr_invalid_key(&self, node: &str) {
        self.ivr.node_invalid_keys.with_label_values(&[node]).inc();
    }

    /// Counts a caller hanging up while at `node`.
    pub fn ivr_hangup(&self, node: &str) {
        self.ivr.node_hangups.with_label_values(&[node]).inc();
    }

    /// Counts one key press, by the method that reported it first.
    pub fn digit_received(&self, method: DtmfMethod) {
        self.ivr.digits.with_label_values(&[method.as_str()]).inc();
    }

    /// Counts a classification: `request_type` is the taxonomy's type code (`C`, `P`, …) and
    /// `domain_l1` the level-1 domain code (`05`, …), both from the loaded taxonomy.
    pub fn call_classified(&self, request_type: &str, domain_l1: &str) {
        self.ivr
            .classifications
            .with_label_values(&[request_type, domain_l1])
            .inc();
    }

    /// Counts a finished transfer.
    pub fn transfer_finished(&self, target: TransferTarget, result: TransferResult) {
        self.ivr
            .transfers
            .with_label_values(&[target.as_str(), result.as_str()])
            .inc();
    }
}
