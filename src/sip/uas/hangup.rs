//! Ending calls from our side (BYE, or 480 while ringing) and forgetting them, plus where
//! in-dialog requests go.

use super::calls::CallState;
use super::invite::random_token;
use super::{CallHandle, Destination, EndReason, Endpoint, Output, RtpPortSource, TimerKey};
use crate::sip::dialog::Dialog;
use crate::sip::header::{Transport, host_ip};
use crate::sip::method::Method;
use crate::sip::response::{ResponseParts, build_response};
use crate::sip::transaction::NonInviteClientTxn;
use crate::sip::uri::SipUri;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Instant;

impl Endpoint {
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
            self.send_final_on(now, &key, 480, bytes);
        } else {
            let to = next_hop_for(&call.dialog, &call.peer, |ip| self.cfg.is_trusted(ip));
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
        self.per_source.call_ended(call.info.trunk);
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

/// Where an in-dialog request goes: the next-hop URI when it names an IP literal that may talk
/// to ivrd at all, else the address the dialog came from (ivrd does no DNS; trunks are
/// configured by address). RFC 3261 §12.2.1.1 sends to the remote target (the caller's
/// Contact); ivrd only does so when that address is trusted, so a Contact written by the far
/// end cannot send our BYE or REFER (with its target, case id and User-to-User data) to a host
/// outside the trunk — nor have that host answer the REFER's NOTIFY with a fake success.
pub(super) fn next_hop_for(
    dialog: &Dialog,
    peer: &Destination,
    trusted: impl Fn(std::net::IpAddr) -> bool,
) -> Destination {
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
        Some((ip, port)) if transport == peer.transport && trusted(ip) => Destination {
            transport,
            addr: SocketAddr::new(ip, port.unwrap_or(5060)),
            conn: peer.conn,
        },
        _ => peer.clone(),
    }
}

pub(super) fn transport_param(transport: Transport) -> &'static str {
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
