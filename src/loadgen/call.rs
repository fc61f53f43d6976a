//! One emulated caller as a sans-IO state machine: INVITE → 2xx → ACK, 20 ms RTP audio for the
//! whole call, RFC 4733 key presses at fixed offsets, BYE after the call's duration, and answers to
//! ivrd's in-dialog requests (BYE → 200, REFER → 202 and a final NOTIFY, RFC 3515 §2.4.5).
//!
//! The driver ([`super::run`]) owns the sockets and the one ticker; it hands each call the SIP
//! messages addressed to it and calls [`Call::on_tick`] every few milliseconds. RTP packets are
//! written into the driver's scratch buffer, so the media path does not allocate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::text::{self, CallIds, DialogIds};
use crate::media::digit::Digit;
use crate::media::dtmf::{EncodedPacket, Rfc4733Encoder};
use crate::media::g711::FRAME_SAMPLES;
use crate::media::rtp::{RTP_HEADER_LEN, RtpSender};
use crate::media::session::TICK;
use crate::sip::header::{CSeq, NameAddr};
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::response::{ResponseParts, build_response, reason_phrase};
use crate::sip::sdp::{AudioCodec, read_answer};

/// RFC 3261 T1 and T2 (§17.1.1.1, §17.1.2.2).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// 64·T1: how long a transaction may go unanswered.
const TXN_TIMEOUT: Duration = Duration::from_secs(32);
/// Frames a late tick may catch up at once; beyond that the stream skips ahead.
const MAX_CATCH_UP: u64 = 5;
/// How long each key is held.
const KEY_PRESS: Duration = Duration::from_millis(100);

/// What every call of a run does; shared by reference.
#[derive(Debug, Clone)]
pub struct Script {
    /// Key presses, as offsets from the 2xx.
    pub keys: Vec<(Duration, Digit)>,
    /// Time from the 2xx to our BYE.
    pub duration: Duration,
    /// The sipfrag status line we report for a REFER, e.g. "200 OK" or "486 Busy Here".
    pub transfer_status: String,
    /// One second of µ-law audio (8000 bytes); frame k is bytes `(k % 50) * 160..`.
    pub audio: Vec<u8>,
}

/// Where a call's bytes go; the driver implements it over its sockets.
pub trait Transmit {
    /// Sends a SIP message to ivrd.
    fn sip(&mut self, bytes: &[u8]);
    /// Sends an RTP packet from this call's media socket.
    fn rtp(&mut self, to: SocketAddr, bytes: &[u8]);
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// We hung up and ivrd confirmed the BYE.
    HungUp,
    /// ivrd hung up (after a transfer or a hang-up node).
    RemoteHangUp,
    /// A final non-2xx to the INVITE.
    Rejected { code: u16 },
    /// No final response to the INVITE, or none to our BYE, within 64·T1.
    Timeout,
}

impl Outcome {
    /// Whether the call counts as answered and completed.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::HungUp | Outcome::RemoteHangUp)
    }
}

/// A request of ours waiting for its final response, retransmitted on UDP (Timer A / E).
#[derive(Debug)]
struct Pending {
    method: Method,
    cseq: u32,
    bytes: Vec<u8>,
    next_retx: Instant,
    interval: Duration,
    deadline: Instant,
    /// INVITE only: a provisional response stops retransmissions (§17.1.1.2).
    provisional: bool,
}

/// The dialog once ivrd answered.
#[derive(Debug)]
struct Up {
    answered_at: Instant,
    remote_tag: String,
    remote_target: String,
    media_to: Option<SocketAddr>,
    dtmf_pt: u8,
    ack: Vec<u8>,
}

struct KeyInFlight {
    started: Instant,
    encoder: Rfc4733Encoder,
    next: Option<EncodedPacket>,
}

/// One caller.
pub struct Call {
    call_id: String,
    from_tag: String,
    caller: String,
    called: String,
    local: SocketAddr,
    target: SocketAddr,
    started: Instant,
    pending: Option<Pending>,
    up: Option<Up>,
    cseq: u32,
    branch_seq: u32,
    sender: RtpSender,
    frames: u64,
    next_key: usize,
    key: Option<KeyInFlight>,
    bye_sent: bool,
    refers: u32,
    outcome: Option<Outcome>,
}

impl Call {
    /// A caller numbered `index` that will offer `rtp_port`; sends its INVITE at once.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        now: Instant,
        index: u32,
        run_tag: &str,
        local: SocketAddr,
        target: SocketAddr,
        called: &str,
        rtp_port: u16,
        out: &mut impl Transmit,
    ) -> Call {
        let mut call = Call {
            call_id: format!("{run_tag}-{index}@{}", local.ip()),
            from_tag: format!("lg{index}"),
            caller: format!("1380{:07}", index % 10_000_000),
            called: called.to_string(),
            local,
            target,
            started: now,
            pending: None,
            up: None,
            cseq: 1,
            branch_seq: 0,
            sender: RtpSender::new(0x1000_0000 | index, (index as u16).wrapping_mul(7), index),
            frames: 0,
            next_key: 0,
            key: None,
            bye_sent: false,
            refers: 0,
            outcome: None,
        };
        let branch = call.branch();
        let bytes = text::invite(&call.ids(), &branch, rtp_port).into_bytes();
        call.send_pending(now, Method::Invite, 1, bytes, out);
        call
    }

    /// The index encoded in a Call-ID of this run, for the driver's dispatch.
    pub fn index_of(call_id: &str, run_tag: &str) -> Option<usize> {
        let rest = call_id.strip_prefix(run_tag)?.strip_prefix('-')?;
        rest.split('@').next()?.parse().ok()
    }

    fn ids(&self) -> CallIds<'_> {
        CallIds {
            local: self.local,
            target: self.target,
            call_id: &self.call_id,
            from_tag: &self.from_tag,
            caller: &self.caller,
            called: &self.called,
        }
    }

    fn branch(&mut self) -> String {
        self.branch_seq += 1;
        format!("-{}-{}", self.from_tag, self.branch_seq)
    }

    fn send_pending(
        &mut self,
        now: Instant,
        method: Method,
        cseq: u32,
        bytes: Vec<u8>,
        out: &mut impl Transmit,
    ) {
        out.sip(&bytes);
        self.pending = Some(Pending {
            method,
            cseq,
            bytes,
            next_retx: now + T1,
            interval: T1,
            deadline: now + TXN_TIMEOUT,
            provisional: false,
        });
    }

    /// How the call ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// When the INVITE was first sent.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// ivrd's RTP address for this call (from its SDP answer), once answered.
    pub fn media_to(&self) -> Option<SocketAddr> {
        self.up.as_ref().and_then(|u| u.media_to)
    }

    /// INVITE to 2xx, once answered.
    pub fn setup_time(&self) -> Option<Duration> {
        self.up.as_ref().map(|u| u.answered_at - self.started)
    }

    /// The Call-ID of this call (what ivrd's case records as `call_id`).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// REFERs ivrd sent in this call.
    pub fn refers(&self) -> u32 {
        self.refers
    }

    /// Keys sent so far.
    pub fn keys_sent(&self) -> usize {
        self.next_key
    }

    /// A response to one of our requests.
    pub fn on_response(&mut self, now: Instant, resp: &Response, out: &mut impl Transmit) {
        let Some(cseq) = resp.headers.get("CSeq").and_then(|v| CSeq::parse(v).ok()) else {
            return;
        };
        if cseq.method == Method::Invite && resp.code >= 200 && resp.code < 300 {
            self.on_invite_2xx(now, resp, out);
            return;
        }
        let Some(p) = self.pending.as_mut().filter(|p| p.cseq == cseq.seq) else {
            return;
        };
        if resp.code < 200 {
            p.provisional = true;
            return;
        }
        let method = p.method.clone();
        self.pending = None;
        match method {
            Method::Invite => {
                let tag = resp
                    .headers
                    .get("To")
                    .and_then(|v| NameAddr::parse(v, "To").ok());
                let ack = text::ack_failure(
                    &self.ids(),
                    &format!("-{}-1", self.from_tag),
                    tag.as_ref().and_then(|t| t.tag()),
                );
                out.sip(ack.as_bytes());
                self.outcome = Some(Outcome::Rejected { code: resp.code });
            }
            Method::Bye => self.outcome = Some(Outcome::HungUp),
            _ => {}
        }
    }

    fn on_invite_2xx(&mut self, now: Instant, resp: &Response, out: &mut impl Transmit) {
        if let Some(up) = &self.up {
            // A retransmitted 2xx: our ACK was lost (RFC 3261 §13.2.2.4).
            out.sip(&up.ack);
            return;
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.method == Method::Invite)
        {
            self.pending = None;
        }
        let tag = resp
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse(v, "To").ok())
            .and_then(|n| n.tag().map(str::to_string))
            .unwrap_or_default();
        let contact = resp
            .headers
            .get("Contact")
            .and_then(|v| NameAddr::parse(v, "Contact").ok())
            .map_or_else(|| format!("sip:{}", self.target), |n| n.uri);
        let audio = read_answer(&resp.body, &[AudioCodec::Pcmu]).ok();
        let branch = self.branch();
        let dialog = DialogIds {
            remote_tag: &tag,
            remote_target: &contact,
        };
        let ack = text::ack_2xx(&self.ids(), &dialog, &branch).into_bytes();
        out.sip(&ack);
        self.up = Some(Up {
            answered_at: now,
            remote_tag: tag,
            remote_target: contact,
            media_to: audio.as_ref().and_then(|a| a.remote),
            dtmf_pt: audio.and_then(|a| a.dtmf_pt).unwrap_or(101),
            ack,
        });
    }

    /// A request from ivrd in this call; answers it.
    pub fn on_request(
        &mut self,
        now: Instant,
        req: &Request,
        script: &Script,
        out: &mut impl Transmit,
    ) {
        let code = match req.method {
            Method::Ack => return,
            Method::Bye => {
                if self.outcome.is_none() {
                    self.outcome = Some(Outcome::RemoteHangUp);
                }
                200
            }
            Method::Refer => 202,
            Method::Invite => 488,
            _ => 200,
        };
        let resp = build_response(req, code, reason_phrase(code), &ResponseParts::default());
        out.sip(&resp);
        if code == 202 {
            self.refers += 1;
            self.notify(now, &script.transfer_status, out);
        }
    }

    fn notify(&mut self, now: Instant, status: &str, out: &mut impl Transmit) {
        if self.pending.is_some() || self.outcome.is_some() {
            return;
        }
        let Some(up) = &self.up else { return };
        self.cseq += 1;
        let cseq = self.cseq;
        let dialog = DialogIds {
            remote_tag: &up.remote_tag,
            remote_target: &up.remote_target,
        };
        let branch = format!("-{}-n{cseq}", self.from_tag);
        let bytes = text::notify_sipfrag(&self.ids(), &dialog, &branch, cseq, status).into_bytes();
        self.send_pending(now, Method::Notify, cseq, bytes, out);
    }

    /// Runs what is due at `now`: retransmissions, RTP frames, key presses, the BYE.
    pub fn on_tick(
        &mut self,
        now: Instant,
        script: &Script,
        buf: &mut [u8],
        out: &mut impl Transmit,
    ) {
        if self.outcome.is_some() {
            return;
        }
        self.retransmit(now, out);
        let Some(answered_at) = self.up.as_ref().map(|u| u.answered_at) else {
            return;
        };
        self.media(now, answered_at, script, buf, out);
        if !self.bye_sent && self.pending.is_none() && now >= answered_at + script.duration {
            self.bye_sent = true;
            self.cseq += 1;
            let cseq = self.cseq;
            let branch = self.branch();
            let bytes = match &self.up {
                Some(up) => {
                    let dialog = DialogIds {
                        remote_tag: &up.remote_tag,
                        remote_target: &up.remote_target,
                    };
                    text::bye(&self.ids(), &dialog, &branch, cseq).into_bytes()
                }
                None => return,
            };
            self.send_pending(now, Method::Bye, cseq, bytes, out);
        }
    }

    fn retransmit(&mut self, now: Instant, out: &mut impl Transmit) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        if now >= p.deadline {
            let method = p.method.clone();
            self.pending = None;
            if matches!(method, Method::Invite | Method::Bye) {
                self.outcome = Some(Outcome::Timeout);
            }
            return;
        }
        if !p.provisional && now >= p.next_retx {
            out.sip(&p.bytes);
            // INVITE doubles without a cap (Timer A); other requests cap at T2 (Timer E).
            p.interval = if p.method == Method::Invite {
                p.interval * 2
            } else {
                (p.interval * 2).min(T2)
            };
            p.next_retx = now + p.interval;
        }
    }

    fn media(
        &mut self,
        now: Instant,
        answered_at: Instant,
        script: &Script,
        buf: &mut [u8],
        out: &mut impl Transmit,
    ) {
        let Some((to, dtmf_pt)) = self
            .up
            .as_ref()
            .and_then(|u| Some((u.media_to?, u.dtmf_pt)))
        else {
            return;
        };
        let elapsed = now - answered_at;
        let key_due = script
            .keys
            .get(self.next_key)
            .filter(|(at, _)| elapsed >= *at);
        if let (None, Some(&(_, digit))) = (&self.key, key_due) {
            let mut encoder = Rfc4733Encoder::new(digit, self.sender.timestamp(), KEY_PRESS, 10);
            let next = encoder.next();
            self.key = Some(KeyInFlight {
                started: now,
                encoder,
                next,
            });
        }
        let due = (elapsed.as_micros() / TICK.as_micros()) as u64 + 1;
        if due > self.frames + MAX_CATCH_UP {
            let skip = due - MAX_CATCH_UP - self.frames;
            self.sender.advance((skip * FRAME_SAMPLES as u64) as u32);
            self.frames += skip;
        }
        while self.frames < due {
            if self.key.is_none() {
                let at = (self.frames % 50) as usize * FRAME_SAMPLES;
                let payload = script.audio.get(at..at + FRAME_SAMPLES).unwrap_or(&[]);
                if let Ok(n) = self.sender.write_packet(0, false, payload, buf) {
                    out.rtp(to, &buf[..n]);
                }
            }
            self.sender.advance(FRAME_SAMPLES as u32);
            self.frames += 1;
        }
        self.send_key_packets(now, dtmf_pt, to, buf, out);
    }

    fn send_key_packets(
        &mut self,
        now: Instant,
        pt: u8,
        to: SocketAddr,
        buf: &mut [u8],
        out: &mut impl Transmit,
    ) {
        let Some(key) = self.key.as_mut() else {
            return;
        };
        while let Some(p) = key.next.filter(|p| now >= key.started + p.send_offset) {
            if let Ok(n) =
                self.sender
                    .write_event_packet(pt, p.marker, p.timestamp, &p.payload, buf)
            {
                out.rtp(to, &buf[..n]);
            }
            key.next = key.encoder.next();
        }
        if key.next.is_none() {
            self.key = None;
            self.next_key += 1;
            // Audio resumes as a new talk spurt after the event (RFC 4733 §2.5.1.1).
            self.sender.start_talkspurt();
        }
    }
}

/// The size of the scratch buffer [`Call::on_tick`] needs.
pub const RTP_BUF: usize = RTP_HEADER_LEN + FRAME_SAMPLES;

#[cfg(test)]
#[path = "call_tests.rs"]
mod tests;
