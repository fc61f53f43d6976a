//! Whether a new INVITE may become a call, decided before any call state exists: the trust list
//! and per-source rates (answered statelessly, so a flood costs no transaction), then the served
//! numbers, required extensions, draining, capacity, the offer's media and an RTP port. Each
//! refusal carries the status and headers the caller should see.
//!
//! Apart from `invite.rs` because this is policy, and `invite.rs` is the INVITE server
//! transaction's mechanics: 100 Trying, ringing, the 200, CANCEL and ACK.

use super::dispatch::RequestCtx;
use super::source_limits::SourceRefusal;
use super::{Destination, Endpoint, Inbound, RtpPortSource};
use crate::sip::message::Request;
use crate::sip::response::reason_phrase;
use crate::sip::sdp::{self, OfferAnswer};
use crate::sip::uri::SipUri;
use std::time::Instant;

/// A refusal of a new INVITE: status, reason and extra headers.
pub(super) struct Refusal {
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) extra: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(code: u16) -> Refusal {
        Refusal {
            code,
            reason: reason_phrase(code).to_string(),
            extra: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Refusal {
        self.extra.push((name, value));
        self
    }
}

impl Endpoint {
    /// An INVITE from a source that may not place calls: a stateless 403 (RFC 3261 §8.2.7 lets
    /// a UAS answer statelessly), so a flood creates no transaction and no retransmissions;
    /// beyond a per-source rate it is dropped. Never a call, always counted.
    pub(super) fn refuse_untrusted(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: &Request,
        ctx: &RequestCtx,
        dest: Destination,
    ) {
        // Offered and rejected{acl} both count it, so offered = answered + rejected + cancelled.
        self.counters.calls_offered += 1;
        self.counters.acl_rejected += 1;
        if !self.untrusted.allow(inbound.source.ip(), now) {
            self.counters.dropped += 1;
            return;
        }
        tracing::warn!(source = %inbound.source.ip(), call_id = %ctx.call_id, "INVITE from an untrusted source refused (403)");
        self.reject_stateless(req, inbound, dest, (403, reason_phrase(403)), &[]);
    }

    /// A trusted source sending new INVITEs, or other out-of-dialog requests, faster than its
    /// rate: a stateless 503 with Retry-After (RFC 3261 §21.5.4: "the server is temporarily
    /// unable to process the request due to a temporary overloading"; §20.33; §8.2.7 lets a UAS
    /// answer statelessly), so a runaway or spoofed trunk creates no transaction, no timers and
    /// no missed-call case per request. The trunk still gets an answer for each request, so its
    /// own transactions end at once.
    pub(super) fn refuse_over_source_rate(
        &mut self,
        inbound: &Inbound<'_>,
        req: &Request,
        dest: Destination,
        refusal: SourceRefusal,
    ) {
        self.count_source_limited(refusal);
        let retry = self.cfg.retry_after_secs.to_string();
        self.reject_stateless(
            req,
            inbound,
            dest,
            (503, reason_phrase(503)),
            &[("Retry-After", retry.as_str())],
        );
    }

    /// Policy and negotiation for a trusted trunk's new call, in the order an operator expects
    /// the answers: where to, how many, what media.
    pub(super) fn admit_call(
        &mut self,
        req: &Request,
        ctx: &RequestCtx,
        source: std::net::IpAddr,
        ports: &mut dyn RtpPortSource,
    ) -> Result<(Option<OfferAnswer>, u16), Refusal> {
        let Ok(uri) = SipUri::parse(&req.uri) else {
            return Err(
                Refusal::new(416).with("Reason", "SIP;text=\"Unsupported URI scheme\"".into())
            );
        };
        if !self.cfg.serves(&uri.number().unwrap_or_default()) {
            tracing::info!(call_id = %ctx.call_id, uri = %req.uri, "INVITE for a number ivrd does not serve (404)");
            return Err(Refusal::new(404));
        }
        if let Some(required) = req.headers.get("Require") {
            // §8.2.2.3: we support no extensions that a request could require.
            return Err(Refusal::new(420).with("Unsupported", required.to_string()));
        }
        let retry = self.cfg.retry_after_secs.to_string();
        if self.draining {
            self.counters.overload_rejected += 1;
            return Err(Refusal::new(503).with("Retry-After", retry));
        }
        if self.calls.len() >= self.cfg.max_calls {
            self.counters.overload_rejected += 1;
            tracing::warn!(active = self.calls.len(), "call limit reached; 503");
            return Err(Refusal::new(503).with("Retry-After", retry));
        }
        if let Err(refusal) = self.per_source.check_calls(source) {
            self.counters.overload_rejected += 1;
            self.count_source_limited(refusal);
            tracing::warn!(%source, held = self.per_source.calls_of(source), "per-source call limit reached; 503");
            return Err(Refusal::new(503).with("Retry-After", retry));
        }
        let offer = if req.body.is_empty() {
            None
        } else {
            let ctype = req.headers.get("Content-Type").unwrap_or_default();
            if !ctype
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
            {
                return Err(Refusal::new(415).with("Accept", "application/sdp".into()));
            }
            match sdp::answer_offer(&req.body, &self.cfg.codecs) {
                Ok(oa) => Some(oa),
                Err(err) => {
                    self.counters.codec_rejected += 1;
                    tracing::info!(call_id = %ctx.call_id, error = %err, "offer refused (488)");
                    return Err(Refusal::new(488).with("Warning", err.warning("ivrd")));
                }
            }
        };
        let Some(port) = ports.reserve() else {
            self.counters.overload_rejected += 1;
            tracing::warn!("RTP port pool exhausted; 503");
            return Err(Refusal::new(503).with("Retry-After", retry));
        };
        Ok((offer, port))
    }
}
