//! Routing of received messages: parse, find the transaction or dialog, or answer statelessly.
//! INVITE-specific handling lives in `invite.rs`.

use super::invite::random_token;
use super::{Destination, Endpoint, Inbound, Output, RtpPortSource, TimerKey};
use crate::sip::header::{CSeq, HeaderError, NameAddr, Transport, Via, split_list};
use crate::sip::message::{self, Headers, Message, Request, Response};
use crate::sip::method::Method;
use crate::sip::response::{ResponseParts, build_response, reason_phrase};
use crate::sip::transaction::NonInviteServerTxn;
use std::time::Instant;

/// A response decided for a non-INVITE request: code, reason, extra headers, typed body.
type Reply = (
    u16,
    String,
    Vec<(&'static str, String)>,
    Option<(String, String)>,
);

/// The methods ivrd accepts (RFC 3261 §20.5 Allow).
pub(super) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY";

/// The headers every request must carry (RFC 3261 §8.1.1), interpreted.
pub(super) struct RequestCtx {
    pub via: Via,
    pub call_id: String,
    pub cseq: CSeq,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
}

impl RequestCtx {
    fn from_request(req: &Request, via: Via) -> Result<RequestCtx, HeaderError> {
        // RFC 3261 §7.3: these may appear once; two that disagree leave no dialog to trust
        // (RFC 4475 §3.3.8 `multi01`).
        for name in ["Call-ID", "CSeq", "From", "To"] {
            if req.headers.get_all(name).nth(1).is_some() {
                return Err(HeaderError::Repeated(name));
            }
        }
        let call_id = req
            .headers
            .get("Call-ID")
            .filter(|c| !c.is_empty())
            .ok_or(HeaderError::Missing("Call-ID"))?;
        let cseq = CSeq::parse(
            req.headers
                .get("CSeq")
                .ok_or(HeaderError::Missing("CSeq"))?,
        )?;
        let from = NameAddr::parse(
            req.headers
                .get("From")
                .ok_or(HeaderError::Missing("From"))?,
            "From",
        )?;
        let to = NameAddr::parse(
            req.headers.get("To").ok_or(HeaderError::Missing("To"))?,
            "To",
        )?;
        Ok(RequestCtx {
            via,
            call_id: call_id.to_string(),
            cseq,
            from_tag: from.tag().map(str::to_string),
            to_tag: to.tag().map(str::to_string),
        })
    }

    /// The dialog this request belongs to, as (Call-ID, our tag, their tag).
    pub fn dialog_key(&self) -> Option<(String, String, String)> {
        Some((
            self.call_id.clone(),
            self.to_tag.clone()?,
            self.from_tag.clone()?,
        ))
    }

    /// The server transaction key (RFC 3261 §17.2.3): branch, sent-by and method, where ACK
    /// and CANCEL look up the INVITE with `as_method`. Pre-RFC 3261 branches fall back to the
    /// §17.2.3 older matching fields.
    pub fn txn_key(&self, as_method: &Method) -> String {
        let sent_by = format!("{}:{}", self.via.host, self.via.port.unwrap_or(5060));
        match (&self.via.branch, self.via.has_rfc3261_branch()) {
            (Some(branch), true) => format!("{branch}|{sent_by}|{as_method}"),
            _ => format!(
                "{}|{}|{}|{}|{sent_by}|{as_method}",
                self.call_id,
                self.cseq.seq,
                self.from_tag.as_deref().unwrap_or(""),
                self.via.branch.as_deref().unwrap_or("")
            ),
        }
    }
}

impl Endpoint {
    /// Handles one received message.
    pub fn handle_inbound(
        &mut self,
        now: Instant,
        inbound: Inbound<'_>,
        ports: &mut dyn RtpPortSource,
    ) {
        match message::parse(inbound.data) {
            Ok(Message::Request(req)) => self.on_request(now, inbound, req, ports),
            Ok(Message::Response(resp)) => self.on_response(now, resp),
            Err(err) => {
                self.counters.parse_errors += 1;
                self.reject_unparsable(inbound, &err);
            }
        }
    }

    /// A message that did not parse gets a 400 when enough of it can be read to address one
    /// (RFC 3261 §8.2 needs Via, From, To, Call-ID, CSeq to be copied); otherwise it is dropped.
    fn reject_unparsable(&mut self, inbound: Inbound<'_>, err: &message::ParseError) {
        let text = String::from_utf8_lossy(
            &inbound.data[..inbound.data.len().min(message::MAX_MESSAGE_BYTES)],
        );
        let mut lines = text.lines();
        let start = lines.next().unwrap_or_default();
        let mut headers = Headers::default();
        for line in lines
            .take_while(|l| !l.is_empty())
            .take(message::MAX_HEADERS)
        {
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim();
                if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
                {
                    headers.push(name, value.trim());
                }
            }
        }
        let is_ack = start.starts_with("ACK ");
        let via = headers
            .get("Via")
            .and_then(|v| split_list(v).next())
            .and_then(|v| Via::parse(v).ok());
        let complete = ["From", "To", "Call-ID", "CSeq"]
            .iter()
            .all(|h| headers.get(h).is_some());
        let (Some(via), true, false, false) = (via, complete, is_ack, start.starts_with("SIP/"))
        else {
            self.counters.dropped += 1;
            tracing::debug!(source = %inbound.source, error = %err, "dropped unparsable message");
            return;
        };
        let req = Request {
            method: Method::Other(String::new()),
            uri: String::new(),
            headers,
            body: Default::default(),
        };
        let (code, _) = err.status();
        let reason = err.to_string();
        tracing::debug!(source = %inbound.source, error = %err, code, "rejected malformed request");
        let bytes = build_response(
            &req,
            code,
            &reason,
            &ResponseParts {
                source: Some(inbound.source),
                ..Default::default()
            },
        );
        let method = Method::from_token(start.split(' ').next().unwrap_or_default());
        self.transmit_response(reply_destination(&inbound, &via), &method, code, bytes);
    }

    fn on_request(
        &mut self,
        now: Instant,
        inbound: Inbound<'_>,
        req: Request,
        ports: &mut dyn RtpPortSource,
    ) {
        self.counters.requests.add(&req.method);
        let top_via = req
            .headers
            .get("Via")
            .and_then(|v| split_list(v).next())
            .map(Via::parse);
        let Some(Ok(via)) = top_via else {
            self.counters.parse_errors += 1;
            self.counters.dropped += 1;
            tracing::debug!(source = %inbound.source, "dropped request without a usable Via");
            return;
        };
        let dest = reply_destination(&inbound, &via);
        let ctx = match RequestCtx::from_request(&req, via) {
            Ok(ctx) if ctx.cseq.method == req.method || req.method == Method::Ack => ctx,
            Ok(_) => {
                return self.reject_stateless(
                    &req,
                    &inbound,
                    dest,
                    (400, "CSeq method does not match the request"),
                    &[],
                );
            }
            Err(err) => {
                self.counters.parse_errors += 1;
                if req.method == Method::Ack {
                    self.counters.dropped += 1;
                    return;
                }
                return self.reject_stateless(&req, &inbound, dest, (400, &err.to_string()), &[]);
            }
        };
        if req.method != Method::Ack {
            if let Err((code, reason)) = check_request_uri(&req.uri) {
                return self.reject_stateless(&req, &inbound, dest, (code, reason), &[]);
            }
        }
        if !matches!(req.method, Method::Invite | Method::Ack)
            && !self.cfg.is_trusted(inbound.source.ip())
        {
            return self.refuse_untrusted_request(now, &inbound, &req, dest);
        }
        match req.method {
            Method::Ack => self.on_ack(now, &req, &ctx),
            Method::Invite => self.on_invite(now, inbound, req, ctx, dest, ports),
            Method::Cancel => self.on_cancel(now, &inbound, &req, &ctx, dest, ports),
            _ => self.on_non_invite(now, &inbound, req, &ctx, dest, ports),
        }
    }

    /// A request other than INVITE or ACK from a source that may not place calls: it can have
    /// no dialog with us, so it is answered like an untrusted INVITE — a stateless 403 (RFC 3261
    /// §8.2.7 allows stateless answers), within the per-source rate of refusals, else dropped and
    /// counted. No transaction is created, so an OPTIONS or BYE flood holds no memory for the
    /// 64*T1 of Timer J, and a stranger who learnt a dialog's identifiers cannot end the call,
    /// send it keys (INFO) or report a transfer outcome (NOTIFY).
    fn refuse_untrusted_request(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: &Request,
        dest: Destination,
    ) {
        if !self.untrusted.allow(inbound.source.ip(), now) {
            self.counters.dropped += 1;
            return;
        }
        self.reject_stateless(req, inbound, dest, (403, reason_phrase(403)), &[]);
    }

    /// Answers `req` without a transaction (RFC 3261 §8.2.7), with a fresh To tag when the
    /// request has none (§8.2.6.2) and any `extra` headers (e.g. Retry-After).
    pub(super) fn reject_stateless(
        &mut self,
        req: &Request,
        inbound: &Inbound<'_>,
        dest: Destination,
        (code, reason): (u16, &str),
        extra: &[(&str, &str)],
    ) {
        tracing::debug!(source = %inbound.source, code, reason, "rejected request");
        let method = req.method.clone();
        let tag = random_token();
        let bytes = build_response(
            req,
            code,
            reason,
            &ResponseParts {
                to_tag: Some(&tag),
                source: Some(inbound.source),
                extra,
                ..Default::default()
            },
        );
        self.transmit_response(dest, &method, code, bytes);
    }

    fn on_non_invite(
        &mut self,
        now: Instant,
        inbound: &Inbound<'_>,
        req: Request,
        ctx: &RequestCtx,
        dest: Destination,
        ports: &mut dyn RtpPortSource,
    ) {
        let key = ctx.txn_key(&req.method);
        if let Some((txn, to)) = self.non_invite_txns.get(&key) {
            if let Some(bytes) = txn.on_retransmitted_request() {
                let to = to.clone();
                self.counters.retransmissions_sent += 1;
                self.transmit(to, bytes);
            }
            return;
        }
        let call = ctx.dialog_key().and_then(|k| self.dialogs.get(&k).copied());
        if call.is_none() {
            // Out of dialog, each of these would hold a transaction for Timer J (64*T1), and a
            // trusted address is easy to spoof over UDP: charge the source's request rate.
            if let Err(refusal) = self.per_source.admit_request(inbound.source.ip(), now) {
                tracing::debug!(source = %inbound.source.ip(), method = %req.method, "request over the per-source rate; 503");
                return self.refuse_over_source_rate(inbound, &req, dest, refusal);
            }
        }
        let source = Some(inbound.source);
        let (code, reason, extra, body): Reply = match (&req.method, call) {
            (Method::Options, _) => (
                200,
                "OK".into(),
                vec![
                    ("Allow", ALLOW.into()),
                    (
                        "Accept",
                        "application/sdp, application/dtmf-relay, application/dtmf".into(),
                    ),
                    ("Supported", "".into()),
                ],
                None,
            ),
            (Method::Bye | Method::Info | Method::Update | Method::Notify, None) => {
                (481, reason_phrase(481).into(), vec![], None)
            }
            (Method::Bye | Method::Info | Method::Update | Method::Notify, Some(call)) => {
                match self.in_dialog(now, call, &req, ctx, ports) {
                    Ok(body) => (
                        200,
                        "OK".into(),
                        vec![],
                        body.map(|b| ("application/sdp".to_string(), b)),
                    ),
                    Err((code, reason, warning)) => {
                        let extra = warning.map(|w| vec![("Warning", w)]).unwrap_or_default();
                        (code, reason, extra, None)
                    }
                }
            }
            (Method::Other(_), _) => (501, reason_phrase(501).into(), vec![], None),
            _ => (
                405,
                reason_phrase(405).into(),
                vec![("Allow", ALLOW.into())],
                None,
            ),
        };
        let extra_refs: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let local_tag = call
            .and_then(|c| self.calls.get(&c))
            .map(|c| c.dialog.id.local_tag.clone());
        let parts = ResponseParts {
            to_tag: local_tag
                .as_deref()
                .or(Some("ivrd"))
                .filter(|_| ctx.to_tag.is_none()),
            source,
            extra: &extra_refs,
            body: body.as_ref().map(|(t, b)| (t.as_str(), b.as_bytes())),
            ..Default::default()
        };
        let bytes = build_response(&req, code, &reason, &parts);
        let mut txn = NonInviteServerTxn::new(self.cfg.timers, inbound.transport.is_unreliable());
        if let Some(out) = txn.send_response(now, code, bytes) {
            self.transmit_response(dest.clone(), &req.method, code, out);
        }
        let next = txn.poll_timeout();
        self.non_invite_txns.insert(key.clone(), (txn, dest));
        self.arm(TimerKey::NonInviteTxn(key), next);
    }

    /// A non-INVITE request inside a known dialog. Returns an SDP body for a 200, or the error
    /// response (code, reason, Warning).
    #[allow(clippy::type_complexity)]
    fn in_dialog(
        &mut self,
        now: Instant,
        handle: super::CallHandle,
        req: &Request,
        ctx: &RequestCtx,
        ports: &mut dyn RtpPortSource,
    ) -> Result<Option<String>, (u16, String, Option<String>)> {
        let call =
            self.calls
                .get_mut(&handle)
                .ok_or((481, reason_phrase(481).to_string(), None))?;
        // RFC 3261 §12.2.2: a lower CSeq than the last one is answered 500.
        call.dialog.accept_remote_cseq(ctx.cseq.seq).map_err(|e| {
            (
                500,
                "CSeq Out Of Order".to_string(),
                Some(format!("399 ivrd \"{e}\"")),
            )
        })?;
        match req.method {
            Method::Bye => {
                let _span = call.span.clone().entered();
                tracing::info!("caller hung up (BYE)");
                self.end_call(now, handle, super::EndReason::RemoteBye, ports);
                Ok(None)
            }
            Method::Info => {
                let content_type = req
                    .headers
                    .get("Content-Type")
                    .unwrap_or_default()
                    .to_string();
                self.outputs.push_back(Output::Info {
                    call: handle,
                    content_type,
                    body: req.body.clone(),
                });
                Ok(None)
            }
            Method::Update => self
                .session_update(handle, req)
                .map_err(|(c, r, w)| (c, r, Some(w))),
            Method::Notify => match self.on_notify(handle, req.headers.get("Event"), &req.body) {
                200 => Ok(None),
                481 => Err((481, "Subscription Does Not Exist".to_string(), None)),
                code => Err((code, reason_phrase(code).to_string(), None)),
            },
            _ => Err((405, reason_phrase(405).to_string(), None)),
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        let branch = resp
            .headers
            .get("Via")
            .and_then(|v| split_list(v).next())
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch);
        let Some(entry) = branch.as_ref().and_then(|b| self.client_txns.get_mut(b)) else {
            tracing::debug!(
                code = resp.code,
                "response matches no transaction; dropped (RFC 3261 §18.1.2)"
            );
            return;
        };
        let passed = entry.txn.on_response(now, resp.code);
        let (next, call) = (entry.txn.poll_timeout(), entry.call);
        let Some(branch) = branch else { return };
        if let (Some(code @ 200..), Some(call)) = (passed, call) {
            self.on_refer_result(call, &branch, Some(code));
        }
        self.arm(TimerKey::ClientTxn(branch), next);
    }
}

/// The Request-URI must be a SIP, SIPS or tel URI (else 416, RFC 3261 §8.2.2.1), without angle
/// brackets and, for SIP, without `?headers` (§19.1.1; RFC 4475 §3.1.2.7, §3.1.2.11).
fn check_request_uri(uri: &str) -> Result<(), (u16, &'static str)> {
    if uri.starts_with('<') {
        return Err((400, "Request-URI in angle brackets"));
    }
    match crate::sip::uri::SipUri::parse(uri) {
        Err(crate::sip::uri::UriError::Scheme(_)) => Err((416, "Unsupported URI Scheme")),
        Err(crate::sip::uri::UriError::Malformed(_)) => Err((400, "Malformed Request-URI")),
        // `?` may appear in the user part; headers begin after the host (after the last `@`).
        Ok(u)
            if u.scheme != crate::sip::uri::Scheme::Tel
                && uri
                    .rsplit('@')
                    .next()
                    .is_some_and(|hostpart| hostpart.contains('?')) =>
        {
            Err((400, "Headers are not allowed in a Request-URI"))
        }
        Ok(_) => Ok(()),
    }
}

/// Where responses to a request go: back on its connection for TCP, or per §18.2.2 for UDP.
pub(super) fn reply_destination(inbound: &Inbound<'_>, via: &Via) -> Destination {
    match inbound.transport {
        Transport::Tcp => Destination {
            transport: Transport::Tcp,
            addr: inbound.source,
            conn: inbound.conn,
        },
        Transport::Udp => Destination {
            transport: Transport::Udp,
            addr: crate::sip::header::response_target(via, inbound.source),
            conn: None,
        },
    }
}
