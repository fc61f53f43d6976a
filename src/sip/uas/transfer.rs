//! Blind transfer from the UAS side: REFER (RFC 3515) with the case id and an RFC 7433
//! User-to-User header embedded in the Refer-To URI, then the NOTIFY sipfrag progress reports
//! (RFC 3515 §2.4.5) until a final status says whether the transfer worked.

use super::{CallHandle, ClientTxnEntry, Endpoint, Output, TimerKey};
use crate::sip::method::Method;
use crate::sip::transaction::NonInviteClientTxn;
use bytes::Bytes;
use std::fmt::Write as _;
use std::time::Instant;

/// How a transfer ended, as reported to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The transfer target answered (NOTIFY with a 2xx sipfrag).
    Succeeded,
    /// The REFER was refused, timed out, or the target failed; `code` is the SIP status when known.
    Failed { code: Option<u16> },
}

/// A transfer request from the dialplan. The target comes from the plan, never from caller input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// The SIP URI to transfer to (a queue or an emergency number at the trunk).
    pub target: String,
    /// Headers for the REFER, and embedded in Refer-To so the new INVITE carries them.
    pub headers: Vec<(String, String)>,
    /// Plain User-to-User data; hex-encoded on the wire (RFC 7433 §4.1 `encoding=hex`).
    pub user_to_user: Vec<u8>,
}

/// Per-call state of a transfer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingTransfer {
    pub refer_branch: String,
    pub accepted: bool,
}

/// Escapes a header value for a URI `?headers` part (RFC 3261 §19.1.1 hnv-unreserved / escaped).
fn uri_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()[]/?:+$".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Builds the Refer-To value: `<target?Hdr=v&User-to-User=hex%3Bencoding%3Dhex>`.
pub fn refer_to_value(request: &TransferRequest) -> String {
    let mut params: Vec<String> = request
        .headers
        .iter()
        .filter(|(name, _)| name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(|(name, value)| format!("{name}={}", uri_escape(value)))
        .collect();
    if !request.user_to_user.is_empty() {
        let hex: String = request
            .user_to_user
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.push(format!(
            "User-to-User={}",
            uri_escape(&format!("{hex};encoding=hex"))
        ));
    }
    let target = request.target.trim_start_matches('<').trim_end_matches('>');
    if params.is_empty() {
        format!("<{target}>")
    } else {
        let sep = if target.contains('?') { '&' } else { '?' };
        format!("<{target}{sep}{}>", params.join("&"))
    }
}

/// The status code of a `message/sipfrag` body's status line (`SIP/2.0 180 Ringing`).
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let mut parts = line.split_whitespace();
    (parts.next()? == "SIP/2.0").then_some(())?;
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..700).contains(c))
}

impl Endpoint {
    /// Sends a REFER for an answered call. Returns false when the call cannot transfer now
    /// (unknown, not answered, or a transfer already running).
    pub fn transfer(
        &mut self,
        now: Instant,
        handle: CallHandle,
        request: &TransferRequest,
    ) -> bool {
        let Some(call) = self.calls.get_mut(&handle) else {
            return false;
        };
        if call.state != super::calls::CallState::Answered || call.transfer.is_some() {
            return false;
        }
        let to =
            super::hangup::next_hop_for(&call.dialog, &call.peer, |ip| self.cfg.is_trusted(ip));
        let via = format!("SIP/2.0/{} {}", to.transport.as_str(), call.local_sip);
        let branch = format!("z9hG4bK{}", super::invite::random_token());
        let contact = format!("<sip:{}@{}>", self.cfg.contact_user, call.local_sip);
        let mut extra: Vec<(&str, String)> = vec![
            ("Refer-To", refer_to_value(request)),
            (
                "Referred-By",
                format!("<sip:{}@{}>", self.cfg.contact_user, call.local_sip),
            ),
            ("Contact", contact),
        ];
        for (name, value) in &request.headers {
            if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !value.contains(['\r', '\n'])
            {
                extra.push((name.as_str(), value.clone()));
            }
        }
        let bytes =
            Bytes::from(
                call.dialog
                    .build_request(Method::Refer, &via, &branch, &extra, None),
            );
        call.transfer = Some(PendingTransfer {
            refer_branch: branch.clone(),
            accepted: false,
        });
        call.span
            .in_scope(|| tracing::info!(target = %request.target, "transferring (REFER)"));
        let txn = NonInviteClientTxn::start(
            now,
            self.cfg.timers,
            to.transport.is_unreliable(),
            bytes.clone(),
        );
        let next = txn.poll_timeout();
        self.client_txns.insert(
            branch.clone(),
            ClientTxnEntry {
                txn,
                to: to.clone(),
                call: Some(handle),
            },
        );
        self.arm(TimerKey::ClientTxn(branch), next);
        self.transmit(to, bytes);
        true
    }

    /// A final response (or Timer F) for one of our requests of `handle`'s transfer.
    pub(super) fn on_refer_result(&mut self, handle: CallHandle, branch: &str, code: Option<u16>) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(pending) = call.transfer.as_mut().filter(|t| t.refer_branch == branch) else {
            return;
        };
        match code {
            Some(200..=299) => pending.accepted = true,
            _ => {
                call.transfer = None;
                let outcome = TransferOutcome::Failed { code };
                call.span
                    .in_scope(|| tracing::info!(?code, "transfer refused"));
                self.outputs.push_back(Output::Transfer {
                    call: handle,
                    outcome,
                });
            }
        }
    }

    /// A NOTIFY in the dialog (RFC 3515 §2.4.4): reports the sipfrag status of the transfer.
    /// Returns the response code for the NOTIFY.
    pub(super) fn on_notify(
        &mut self,
        handle: CallHandle,
        event: Option<&str>,
        body: &[u8],
    ) -> u16 {
        let Some(call) = self.calls.get_mut(&handle) else {
            return 481;
        };
        let is_refer = event.is_some_and(|e| {
            e.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("refer"))
        });
        if !is_refer || call.transfer.is_none() {
            return 481;
        }
        let Some(code) = sipfrag_status(body) else {
            return 400;
        };
        if code >= 200 {
            call.transfer = None;
            let outcome = if code < 300 {
                TransferOutcome::Succeeded
            } else {
                TransferOutcome::Failed { code: Some(code) }
            };
            call.span
                .in_scope(|| tracing::info!(code, "transfer result"));
            self.outputs.push_back(Output::Transfer {
                call: handle,
                outcome,
            });
        }
        200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_embeds_escaped_headers_and_hex_uui() {
        let req = TransferRequest {
            target: "sip:queue-complaint@10.0.0.5".into(),
            headers: vec![
                ("X-Case-Id".into(), "01J9Z;x".into()),
                ("Bad Name".into(), "v".into()),
            ],
            user_to_user: b"P/05".to_vec(),
        };
        assert_eq!(
            refer_to_value(&req),
            "<sip:queue-complaint@10.0.0.5?X-Case-Id=01J9Z%3Bx&User-to-User=502f3035%3Bencoding%3Dhex>"
        );
        let plain = TransferRequest {
            target: "sip:110@trunk".into(),
            headers: vec![],
            user_to_user: vec![],
        };
        assert_eq!(refer_to_value(&plain), "<sip:110@trunk>");
    }

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 180 Ringing"), Some(180));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"),
            Some(486)
        );
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 abc"), None);
        assert_eq!(sipfrag_status(&[0xff]), None);
    }
}
