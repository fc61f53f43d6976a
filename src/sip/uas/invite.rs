//! INVITE handling in the UAS core: new calls (policy checks, offer/answer, ringing, answer),
//! CANCEL (§9.2), ACK (§13.3.1.4, §17.2.1), re-INVITE and UPDATE (§14, RFC 3311), and hang-up.

use super::calls::{Call, CallState};
use super::dispatch::{ALLOW, RequestCtx};
use super::{
    CallHandle, CallInfo, Destination, EndReason, Endpoint, Inbound, InviteTxnEntry, Output,
    RtpPortSource, TimerKey,
};
use crate::sip::dialog::Dialog;
use crate::sip::header::{Transport, host_ip};
use crate::sip::message::{Method, Request};
use crate::sip::response::{ResponseParts, build_response, reason_phrase};
use crate::sip::sdp::{self, Direction, LocalMedia, OfferAnswer};
use crate::sip::transaction::{InviteServerState, InviteServerTxn, NonInviteClientTxn};
use crate::sip::uri::SipUri;
use bytes::Bytes;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Instant;

/// A refusal of a new INVITE: status, reason and extra headers.
struct Refusal {
    code: u16,
    reason: String,
    extra: Vec<(&'static str, String)>,
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

pub(super) fn random_token() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

impl Endpoint {
    pub(super) fn on_invite(
        &mut self,
        now: Instant,
        inbound: Inbound<'_>,
        req: Request,
        ctx: RequestCtx,
        dest: Destination,
        ports: &mut dyn RtpPortSource,
    ) {
        let key = ctx.txn_key(&Method::Invite);
        if let Some(entry) = self.invite_txns.get(&key) {
            if let Some(bytes) = entry.txn.on_retransmitted_invite() {
                let to = entry.reply_to.clone();
                self.counters.retransmissions_sent += 1;
                self.transmit(to, bytes);
            }
            return;
        }
        let mut txn = InviteServerTxn::new(self.cfg.timers, inbound.transport.is_unreliable());
        if ctx.to_tag.is_some() {
            return self.on_reinvite(now, &inbound, req, &ctx, key, txn, dest);
        }
        self.counters.calls_offered += 1;
        // §17.2.1: a 100 Trying stops the INVITE retransmissions of the client transaction.
        let trying = build_response(
            &req,
            100,
            "Trying",
            &ResponseParts {
                source: Some(inbound.source),
                ..Default::default()
            },
        );
        if let Some(bytes) = txn.send_provisional(trying) {
            self.transmit(dest.clone(), bytes);
        }
        match self.admit_call(&inbound, &req, &ctx, ports) {
            Ok(call) => self.start_call(now, inbound, req, key, txn, dest, call, ports),
            Err(refusal) => {
                let extra: Vec<(&str, &str)> = refusal
                    .extra
                    .iter()
                    .map(|(n, v)| (*n, v.as_str()))
                    .collect();
                let parts = ResponseParts {
                    to_tag: Some(&random_token()),
                    source: Some(inbound.source),
                    extra: &extra,
                    ..Default::default()
                };
                let bytes = build_response(&req, refusal.code, &refusal.reason, &parts);
                self.finish_invite_txn(now, key, txn, None, dest, refusal.code, bytes);
            }
        }
    }

    /// Policy and negotiation for a new call, in the order a trunk operator expects the
    /// answers: who, where to, how many, what media.
    fn admit_call(
        &mut self,
        inbound: &Inbound<'_>,
        req: &Request,
        ctx: &RequestCtx,
        ports: &mut dyn RtpPortSource,
    ) -> Result<(Option<OfferAnswer>, u16), Refusal> {
        if !self.cfg.is_trusted(inbound.source.ip()) {
            self.counters.acl_rejected += 1;
            tracing::warn!(source = %inbound.source.ip(), call_id = %ctx.call_id, "INVITE from an untrusted source refused (403)");
            return Err(Refusal::new(403));
        }
        if SipUri::parse(&req.uri).is_err() {
            return Err(
                Refusal::new(416).with("Reason", "SIP;text=\"Unsupported URI scheme\"".into())
            );
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

    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        now: Instant,
        inbound: Inbound<'_>,
        req: Request,
        key: String,
        mut txn: InviteServerTxn,
        dest: Destination,
        (offer, rtp_port): (Option<OfferAnswer>, u16),
        ports: &mut dyn RtpPortSource,
    ) {
        let local_tag = random_token();
        let dialog = match Dialog::from_invite(&req, &local_tag) {
            Ok(d) => d,
            Err(err) => {
                // The port was reserved for a call that will not exist.
                ports.release(rtp_port);
                let bytes = build_response(
                    &req,
                    400,
                    &err.to_string(),
                    &ResponseParts {
                        source: Some(inbound.source),
                        ..Default::default()
                    },
                );
                return self.finish_invite_txn(now, key, txn, None, dest, 400, bytes);
            }
        };
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        let span = tracing::info_span!("call", call_id = %dialog.id.call_id);
        let our_direction = offer
            .as_ref()
            .map_or(Direction::SendRecv, |o| o.audio.peer_direction.answer_to());
        let info = CallInfo {
            call_id: dialog.id.call_id.clone(),
            caller: req
                .headers
                .get("From")
                .and_then(|f| crate::sip::header::NameAddr::parse(f, "From").ok())
                .map(|n| n.uri)
                .unwrap_or_default(),
            called: req.uri.clone(),
            trunk: inbound.source.ip(),
            rtp_port,
            local_ip: inbound.local.ip(),
            audio: offer.as_ref().map(|o| o.audio.clone()),
            our_direction,
        };
        span.in_scope(|| tracing::info!(caller = %mask_uri(&info.caller), called = %info.called, trunk = %info.trunk, rtp_port, "call offered"));
        let local_media = LocalMedia {
            addr: inbound.local.ip(),
            rtp_port,
            session_id: rand::rng().random_range(1..1u64 << 62),
            session_version: 1,
        };
        let ringing = !self.cfg.answer_delay.is_zero();
        if ringing {
            let contact = self.contact_uri(inbound.local, inbound.transport);
            let parts = ResponseParts {
                to_tag: Some(&local_tag),
                source: Some(inbound.source),
                contact: Some(&contact),
                record_route: true,
                ..Default::default()
            };
            if let Some(bytes) = txn.send_provisional(build_response(&req, 180, "Ringing", &parts))
            {
                self.transmit(dest.clone(), bytes);
            }
            self.arm(TimerKey::Answer(handle), Some(now + self.cfg.answer_delay));
        }
        self.dialogs.insert(
            (
                dialog.id.call_id.clone(),
                local_tag.clone(),
                dialog.id.remote_tag.clone(),
            ),
            handle,
        );
        self.invite_txns.insert(
            key.clone(),
            InviteTxnEntry {
                txn,
                call: Some(handle),
                reply_to: dest.clone(),
            },
        );
        let call = Call {
            dialog,
            state: CallState::Ringing,
            invite_key: key,
            invite: req,
            peer: dest,
            local_sip: inbound.local,
            local_media,
            offer,
            our_direction,
            reinvite_pending: false,
            transfer: None,
            info,
            span,
        };
        self.calls.insert(handle, call);
        if !ringing {
            self.answer(now, handle);
        }
    }

    pub(super) fn answer_due(
        &mut self,
        now: Instant,
        handle: CallHandle,
        _ports: &mut dyn RtpPortSource,
    ) {
        if self
            .calls
            .get(&handle)
            .is_some_and(|c| c.state == CallState::Ringing)
        {
            self.answer(now, handle);
        }
    }

    /// Sends the 200 with our SDP (answer, or offer for a late-offer INVITE).
    fn answer(&mut self, now: Instant, handle: CallHandle) {
        let contact_for = |c: &Call, user: &str| {
            format!(
                "sip:{user}@{}{}",
                c.local_sip,
                transport_param(c.peer.transport)
            )
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let body = match &call.offer {
            Some(oa) => sdp::write_answer(&call.local_media, oa, call.our_direction),
            None => sdp::write_offer(&call.local_media, &self.cfg.codecs, Direction::SendRecv),
        };
        let contact = contact_for(call, &self.cfg.contact_user);
        let extra = [("Allow", ALLOW), ("Supported", "")];
        let parts = ResponseParts {
            to_tag: Some(&call.dialog.id.local_tag),
            contact: Some(&contact),
            record_route: true,
            extra: &extra,
            body: Some(("application/sdp", body.as_bytes())),
            ..Default::default()
        };
        let bytes = build_response(&call.invite, 200, "OK", &parts);
        call.state = CallState::Answered;
        let info = call.info.clone();
        let key = call.invite_key.clone();
        call.span
            .in_scope(|| tracing::info!(late_offer = call.offer.is_none(), "call answered"));
        let Some(entry) = self.invite_txns.get_mut(&key) else {
            return;
        };
        let sent = entry.txn.send_final(now, 200, bytes);
        let (to, next) = (entry.reply_to.clone(), entry.txn.poll_timeout());
        if let Some(bytes) = sent {
            self.transmit(to, bytes);
        }
        self.arm(TimerKey::InviteTxn(key), next);
        self.counters.calls_answered += 1;
        self.outputs
            .push_back(Output::CallStarted { call: handle, info });
    }

    fn contact_uri(&self, local: SocketAddr, transport: Transport) -> String {
        format!(
            "sip:{}@{local}{}",
            self.cfg.contact_user,
            transport_param(transport)
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_invite_txn(
        &mut self,
        now: Instant,
        key: String,
        mut txn: InviteServerTxn,
        call: Option<CallHandle>,
        dest: Destination,
        code: u16,
        bytes: Bytes,
    ) {
        if let Some(out) = txn.send_final(now, code, bytes) {
            self.transmit(dest.clone(), out);
        }
        let next = txn.poll_timeout();
        self.invite_txns.insert(
            key.clone(),
            InviteTxnEntry {
                txn,
                call,
                reply_to: dest,
            },
        );
        self.arm(TimerKey::InviteTxn(key), next);
    }

    /// CANCEL (§9.2): 200 to the CANCEL; if the INVITE is still unanswered, 487 to it.
    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: &Request,
        ctx: &RequestCtx,
        dest: Destination,
        ports: &mut dyn RtpPortSource,
    ) {
        let invite_key = ctx.txn_key(&Method::Invite);
        let found = self
            .invite_txns
            .get(&invite_key)
            .map(|e| (e.txn.state(), e.call));
        let code = if found.is_some() { 200 } else { 481 };
        self.respond_non_invite(now, inbound, req, ctx, dest, code);
        let Some((InviteServerState::Proceeding, Some(handle))) = found else {
            return;
        };
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let parts = ResponseParts {
            to_tag: Some(&call.dialog.id.local_tag),
            source: Some(inbound.source),
            ..Default::default()
        };
        let bytes = build_response(&call.invite, 487, "Request Terminated", &parts);
        call.span
            .in_scope(|| tracing::info!("caller cancelled before answer"));
        if let Some(entry) = self.invite_txns.get_mut(&invite_key) {
            let sent = entry.txn.send_final(now, 487, bytes);
            let (to, next) = (entry.reply_to.clone(), entry.txn.poll_timeout());
            if let Some(bytes) = sent {
                self.transmit(to, bytes);
            }
            self.arm(TimerKey::InviteTxn(invite_key), next);
        }
        self.end_call(now, handle, EndReason::Cancelled, ports);
    }

    fn respond_non_invite(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: &Request,
        ctx: &RequestCtx,
        dest: Destination,
        code: u16,
    ) {
        let parts = ResponseParts {
            source: Some(inbound.source),
            to_tag: ctx.to_tag.is_none().then_some("ivrd"),
            ..Default::default()
        };
        let bytes = build_response(req, code, reason_phrase(code), &parts);
        let mut txn = crate::sip::transaction::NonInviteServerTxn::new(
            self.cfg.timers,
            inbound.transport.is_unreliable(),
        );
        if let Some(out) = txn.send_response(now, code, bytes) {
            self.transmit(dest.clone(), out);
        }
        let key = ctx.txn_key(&req.method);
        let next = txn.poll_timeout();
        self.non_invite_txns.insert(key.clone(), (txn, dest));
        self.arm(TimerKey::NonInviteTxn(key), next);
    }

    /// ACK: for a non-2xx final it matches the INVITE transaction; for a 2xx it matches the
    /// dialog (§13.3.1.4) and may carry the answer to our late offer (§13.2.1).
    pub(super) fn on_ack(&mut self, now: Instant, req: &Request, ctx: &RequestCtx) {
        let key = ctx.txn_key(&Method::Invite);
        if let Some(entry) = self.invite_txns.get_mut(&key) {
            if entry.txn.state() == InviteServerState::Completed {
                entry.txn.on_ack(now);
                let next = entry.txn.poll_timeout();
                self.arm(TimerKey::InviteTxn(key), next);
                return;
            }
        }
        let Some(handle) = ctx.dialog_key().and_then(|k| self.dialogs.get(&k).copied()) else {
            tracing::debug!(call_id = %ctx.call_id, "ACK for no dialog; dropped");
            return;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        call.reinvite_pending = false;
        let acked_key = call.invite_key.clone();
        let late_answer = (call.offer.is_none() || !req.body.is_empty()).then(|| req.body.clone());
        if let Some(entry) = self.invite_txns.get_mut(&acked_key) {
            entry.txn.on_ack(now);
        }
        if let Some(body) = late_answer.filter(|b| !b.is_empty()) {
            match sdp::read_answer(&body, &self.cfg.codecs) {
                Ok(audio) => {
                    let dir = audio.peer_direction.answer_to();
                    call.info.audio = Some(audio.clone());
                    call.our_direction = dir;
                    call.offer = Some(OfferAnswer::from_answer(audio.clone()));
                    self.outputs.push_back(Output::MediaChanged {
                        call: handle,
                        audio,
                        our_direction: dir,
                    });
                }
                Err(err) => call
                    .span
                    .in_scope(|| tracing::warn!(error = %err, "unusable SDP answer in ACK")),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_reinvite(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: Request,
        ctx: &RequestCtx,
        key: String,
        txn: InviteServerTxn,
        dest: Destination,
    ) {
        let handle = ctx.dialog_key().and_then(|k| self.dialogs.get(&k).copied());
        let outcome = match handle
            .and_then(|h| self.calls.get(&h).map(|c| (h, c.state, c.reinvite_pending)))
        {
            None => Err((481, reason_phrase(481).to_string(), None)),
            Some((_, CallState::Ringing, _)) | Some((_, _, true)) => {
                Err((491, reason_phrase(491).to_string(), None))
            }
            Some((h, _, false)) => self
                .calls
                .get_mut(&h)
                .ok_or((481, reason_phrase(481).to_string(), None))
                .and_then(|c| {
                    c.dialog.accept_remote_cseq(ctx.cseq.seq).map_err(|e| {
                        (
                            500,
                            "CSeq Out Of Order".to_string(),
                            Some(format!("399 ivrd \"{e}\"")),
                        )
                    })
                })
                .and_then(|()| {
                    self.session_update(h, &req)
                        .map_err(|(c, r, w)| (c, r, Some(w)))
                }),
        };
        let (code, bytes) = match (outcome, handle.and_then(|h| self.calls.get_mut(&h))) {
            (Ok(body), Some(call)) => {
                call.reinvite_pending = true;
                call.invite_key = key.clone();
                let body = body.unwrap_or_else(|| {
                    sdp::write_offer(&call.local_media, &self.cfg.codecs, call.our_direction)
                });
                let contact = format!(
                    "sip:{}@{}{}",
                    self.cfg.contact_user,
                    call.local_sip,
                    transport_param(call.peer.transport)
                );
                let parts = ResponseParts {
                    source: Some(inbound.source),
                    contact: Some(&contact),
                    body: Some(("application/sdp", body.as_bytes())),
                    ..Default::default()
                };
                (200, build_response(&req, 200, "OK", &parts))
            }
            (Err((code, reason, warning)), _) => {
                let warn = warning.unwrap_or_default();
                let extra = [("Warning", warn.as_str())];
                let parts = ResponseParts {
                    source: Some(inbound.source),
                    extra: if warn.is_empty() { &[] } else { &extra },
                    ..Default::default()
                };
                (code, build_response(&req, code, &reason, &parts))
            }
            (Ok(_), None) => (
                481,
                build_response(&req, 481, reason_phrase(481), &ResponseParts::default()),
            ),
        };
        let call = (code == 200).then_some(handle).flatten();
        self.finish_invite_txn(now, key, txn, call, dest, code, bytes);
    }

    /// Applies an offer from re-INVITE or UPDATE (RFC 3264 §8, RFC 3311): answers with our current
    /// address and the direction matching the peer's. No body: `Ok(None)` (the caller decides).
    /// A refused offer leaves the session as it was (§14.2) and yields 488 with a Warning.
    pub(super) fn session_update(
        &mut self,
        handle: CallHandle,
        req: &Request,
    ) -> Result<Option<String>, (u16, String, String)> {
        let Some(call) = self.calls.get_mut(&handle) else {
            return Err((481, reason_phrase(481).into(), String::new()));
        };
        call.dialog.refresh_target(req);
        if req.body.is_empty() {
            return Ok(None);
        }
        let oa = sdp::answer_offer(&req.body, &self.cfg.codecs)
            .map_err(|e| (488, reason_phrase(488).to_string(), e.warning("ivrd")))?;
        let direction = oa.audio.peer_direction.answer_to();
        let changed = call.offer.as_ref().map(|o| &o.audio) != Some(&oa.audio)
            || call.our_direction != direction;
        if changed {
            // RFC 4566 §5.2 / RFC 3264 §8: a changed description takes the next version.
            call.local_media.session_version += 1;
        }
        call.our_direction = direction;
        call.info.audio = Some(oa.audio.clone());
        let body = sdp::write_answer(&call.local_media, &oa, direction);
        let audio = oa.audio.clone();
        call.offer = Some(oa);
        call.span.in_scope(|| {
            tracing::info!(
                direction = direction.as_str(),
                "media updated by the caller"
            )
        });
        self.outputs.push_back(Output::MediaChanged {
            call: handle,
            audio,
            our_direction: direction,
        });
        Ok(Some(body))
    }

    /// Ends a call from our side: BYE when answered, 480 while ringing.
    pub fn hang_up(
        &mut self,
        now: Instant,
        handle: CallHandle,
        reason: EndReason,
        ports: &mut dyn RtpPortSource,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let _span = call.span.clone().entered();
        if call.state == CallState::Ringing {
            let parts = ResponseParts {
                to_tag: Some(&call.dialog.id.local_tag),
                ..Default::default()
            };
            let bytes = build_response(&call.invite, 480, "Temporarily Unavailable", &parts);
            let key = call.invite_key.clone();
            if let Some(entry) = self.invite_txns.get_mut(&key) {
                let sent = entry.txn.send_final(now, 480, bytes);
                let (to, next) = (entry.reply_to.clone(), entry.txn.poll_timeout());
                if let Some(b) = sent {
                    self.transmit(to, b);
                }
                self.arm(TimerKey::InviteTxn(key), next);
            }
        } else {
            let to = next_hop_for(&call.dialog, &call.peer);
            let via = format!("SIP/2.0/{} {}", to.transport.as_str(), call.local_sip);
            let branch = format!("z9hG4bK{}", random_token());
            let reason_header = [(
                "Reason",
                format!("SIP;cause=200;text=\"{}\"", reason.as_str()),
            )];
            let bye = Bytes::from(call.dialog.build_request(
                Method::Bye,
                &via,
                &branch,
                &reason_header,
                None,
            ));
            let txn = NonInviteClientTxn::start(
                now,
                self.cfg.timers,
                to.transport.is_unreliable(),
                bye.clone(),
            );
            let next = txn.poll_timeout();
            tracing::info!(reason = reason.as_str(), "hanging up (BYE)");
            self.client_txns.insert(
                branch.clone(),
                super::ClientTxnEntry {
                    txn,
                    to: to.clone(),
                    call: None,
                },
            );
            self.arm(TimerKey::ClientTxn(branch), next);
            self.transmit(to, bye);
        }
        self.end_call(now, handle, reason, ports);
    }

    /// Forgets a call, frees its port and tells the driver.
    pub(super) fn end_call(
        &mut self,
        _now: Instant,
        handle: CallHandle,
        reason: EndReason,
        ports: &mut dyn RtpPortSource,
    ) {
        let Some(call) = self.calls.remove(&handle) else {
            return;
        };
        let id = &call.dialog.id;
        self.dialogs.remove(&(
            id.call_id.clone(),
            id.local_tag.clone(),
            id.remote_tag.clone(),
        ));
        ports.release(call.info.rtp_port);
        call.span
            .in_scope(|| tracing::info!(reason = reason.as_str(), "call ended"));
        self.outputs.push_back(Output::CallEnded {
            call: handle,
            reason,
        });
    }
}

/// Where an in-dialog request goes: the next-hop URI when it names an IP literal, else the
/// address the dialog came from (ivrd does no DNS; trunks are configured by address).
pub(super) fn next_hop_for(dialog: &Dialog, peer: &Destination) -> Destination {
    let uri = dialog.next_hop_uri();
    let parsed = SipUri::parse(&uri).ok();
    let tcp =
        crate::sip::header::param(&uri, "transport").is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
    let transport = if tcp || peer.transport == Transport::Tcp {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    match parsed
        .as_ref()
        .and_then(|u| host_ip(&u.host).map(|ip| (ip, u.port)))
    {
        Some((ip, port)) if transport == peer.transport => Destination {
            transport,
            addr: SocketAddr::new(ip, port.unwrap_or(5060)),
            conn: peer.conn,
        },
        _ => peer.clone(),
    }
}

fn transport_param(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Udp => "",
    }
}

/// Masks a caller URI for logs: keeps the first 3 and last 2 digits of the number.
pub fn mask_uri(uri: &str) -> String {
    let user = SipUri::parse(uri)
        .ok()
        .and_then(|u| u.number())
        .unwrap_or_default();
    crate::sip::uas::calls::mask_number(&user)
}
