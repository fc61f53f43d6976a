//! INVITE handling in the UAS core: new calls once `admission.rs` has let them in (offer/answer,
//! ringing, answer), final responses on the INVITE server transaction, CANCEL (§9.2) and ACK
//! (§13.3.1.4, §17.2.1). An INVITE inside a dialog goes on to `reinvite.rs`.

use super::calls::{Call, CallState};
use super::dispatch::{ALLOW, RequestCtx};
use super::hangup::{mask_uri, transport_param};
use super::{
    CallHandle, CallInfo, Destination, EndReason, Endpoint, Inbound, InviteTxnEntry, Output,
    RtpPortSource, TimerKey, Transmission,
};
use crate::sip::dialog::Dialog;
use crate::sip::header::Transport;
use crate::sip::message::Request;
use crate::sip::method::Method;
use crate::sip::response::{ResponseParts, build_response, reason_phrase};
use crate::sip::sdp::{self, Direction, LocalMedia, OfferAnswer};
use crate::sip::transaction::{InviteServerState, InviteServerTxn};
use bytes::Bytes;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Instant;

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
        if !self.cfg.is_trusted(inbound.source.ip()) {
            return self.refuse_untrusted(now, &inbound, &req, &ctx, dest);
        }
        let mut txn = InviteServerTxn::new(self.cfg.timers, inbound.transport.is_unreliable());
        if ctx.to_tag.is_some() {
            return self.on_reinvite(now, &inbound, req, &ctx, key, txn, dest);
        }
        self.counters.calls_offered += 1;
        if let Err(refusal) = self.per_source.admit_invite(inbound.source.ip(), now) {
            self.counters.overload_rejected += 1;
            tracing::debug!(source = %inbound.source.ip(), call_id = %ctx.call_id, "INVITE over the per-source rate; 503");
            return self.refuse_over_source_rate(&inbound, &req, dest, refusal);
        }
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
            self.transmit_response(dest.clone(), &Method::Invite, 100, bytes);
        }
        match self.admit_call(&req, &ctx, inbound.source.ip(), ports) {
            Ok(call) => self.start_call(now, inbound, req, key, txn, dest, call, ports),
            Err(refusal) => {
                if refusal.code == 503 {
                    let caller = req
                        .headers
                        .get("From")
                        .and_then(|f| crate::sip::header::NameAddr::parse(f, "From").ok())
                        .map(|n| n.uri)
                        .unwrap_or_default();
                    self.outputs.push_back(Output::CallRefused {
                        call_id: ctx.call_id.clone(),
                        caller,
                        called: req.uri.clone(),
                        trunk: inbound.source.ip(),
                        received: now,
                    });
                }
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
            received: now,
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
                self.transmit_response(dest.clone(), &Method::Invite, 180, bytes);
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
        // Counted by the same field the hang-up uncounts.
        self.per_source.call_started(call.info.trunk);
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
        // The 200 goes to the driver with the call instead of out at once: the driver sends it
        // once the call's crash marker is durable, so that a caller who saw the call answered
        // always gets a case. Should the driver never send it, the transaction's 2xx
        // retransmission (RFC 3261 §13.3.1.4, from T1 on) still does.
        let Some(first) = self.final_on(now, &key, 200, bytes) else {
            return;
        };
        self.counters.calls_answered += 1;
        self.outputs.push_back(Output::CallStarted {
            call: handle,
            info,
            answer: first,
        });
    }

    fn contact_uri(&self, local: SocketAddr, transport: Transport) -> String {
        format!(
            "sip:{}@{local}{}",
            self.cfg.contact_user,
            transport_param(transport)
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_invite_txn(
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
            self.transmit_response(dest.clone(), &Method::Invite, code, out);
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
        // §9.2: the 200 to a CANCEL SHOULD carry the To tag of the INVITE's responses.
        let dialog_tag = found
            .and_then(|(_, call)| call)
            .and_then(|handle| self.calls.get(&handle))
            .map(|call| call.dialog.id.local_tag.clone());
        let reply = (code, dialog_tag.as_deref());
        self.respond_non_invite(now, inbound, req, ctx, dest, reply);
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
        self.send_final_on(now, &invite_key, 487, bytes);
        self.end_call(now, handle, EndReason::Cancelled, ports);
    }

    /// Sends a final response on the existing INVITE transaction `key` and arms its timers.
    /// Returns false when the transaction is gone.
    pub(super) fn send_final_on(
        &mut self,
        now: Instant,
        key: &str,
        code: u16,
        bytes: Bytes,
    ) -> bool {
        match self.final_on(now, key, code, bytes) {
            None => false,
            Some(None) => true,
            Some(Some(Transmission { to, bytes })) => {
                self.transmit(to, bytes);
                true
            }
        }
    }

    /// Hands `bytes` to the INVITE server transaction `key` as its final response (it then
    /// retransmits and times out on its own) and returns the first transmission for the caller
    /// to send, counted as sent. `None` when the transaction is gone.
    fn final_on(
        &mut self,
        now: Instant,
        key: &str,
        code: u16,
        bytes: Bytes,
    ) -> Option<Option<Transmission>> {
        let entry = self.invite_txns.get_mut(key)?;
        let sent = entry.txn.send_final(now, code, bytes);
        let (to, next) = (entry.reply_to.clone(), entry.txn.poll_timeout());
        self.arm(TimerKey::InviteTxn(key.to_string()), next);
        Some(sent.map(|bytes| {
            self.counters.responses.add(&Method::Invite, code);
            Transmission { to, bytes }
        }))
    }

    /// Answers a non-INVITE request (CANCEL) in its own server transaction with `code`; the To
    /// tag is `dialog_tag` when the request belongs to a dialog, a fixed one otherwise.
    fn respond_non_invite(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: &Request,
        ctx: &RequestCtx,
        dest: Destination,
        (code, dialog_tag): (u16, Option<&str>),
    ) {
        let parts = ResponseParts {
            source: Some(inbound.source),
            to_tag: ctx.to_tag.is_none().then_some(dialog_tag.unwrap_or("ivrd")),
            ..Default::default()
        };
        let bytes = build_response(req, code, reason_phrase(code), &parts);
        let mut txn = crate::sip::transaction::NonInviteServerTxn::new(
            self.cfg.timers,
            inbound.transport.is_unreliable(),
        );
        if let Some(out) = txn.send_response(now, code, bytes) {
            self.transmit_response(dest.clone(), &req.method, code, out);
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
}
