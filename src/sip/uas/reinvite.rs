//! Offers inside a dialog: re-INVITE (RFC 3261 §14) and UPDATE (RFC 3311), answered with our
//! current address and the direction matching the peer's (RFC 3264 §8), 491 while one is pending.

use super::calls::CallState;
use super::dispatch::RequestCtx;
use super::hangup::transport_param;
use super::{CallHandle, Destination, Endpoint, Inbound, Output};
use crate::sip::message::Request;
use crate::sip::response::{ResponseParts, build_response, reason_phrase};
use crate::sip::sdp;
use crate::sip::transaction::InviteServerTxn;
use std::time::Instant;

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_reinvite(
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
}
