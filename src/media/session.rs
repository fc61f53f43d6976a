//! One call's media as a sans-IO state machine: RTP in (audio, RFC 4733), SIP INFO DTMF in, a
//! 20 ms media clock out (our frame to send, both channels for the recorder), RTCP reports, the
//! media timeout, and one de-duplicated stream of digits.
//!
//! The driver (`runtime::media`) owns the sockets and the recorder; it calls
//! [`MediaSession::handle_timeout`] whenever [`MediaSession::poll_timeout`] is due and sends what
//! it is handed. Nothing here allocates per packet or per tick.

use crate::media::digit::DigitEvent;
use crate::media::dtmf::{DtmfStream, GoertzelDetector, Rfc4733Decoder, parse_info_body};
use crate::media::g711::{Codec, FRAME_SAMPLES};
use crate::media::playout::{FrameSource, PlayoutStats, PlayoutWindow};
use crate::media::prompt::{Prompt, PromptId};
use crate::media::rtcp::{NtpTimestamp, RtcpError, RtcpSession, report_interval};
use crate::media::rtp::{
    MAX_DROPOUT, MAX_MISORDER, RTP_HEADER_LEN, RtpReceiver, RtpSender, RxVerdict, parse_rtp,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The media clock: one G.711 frame every 20 ms.
pub const TICK: Duration = Duration::from_millis(20);

/// What was negotiated for the call, and the random values RFC 3550 §5.1 asks for.
///
/// In [`MediaSession`]'s hot lines; what a tick reads comes first (`repr(C)` keeps the order).
#[derive(Debug, Clone)]
#[repr(C)]
pub struct SessionParams {
    pub codec: Codec,
    /// Payload type the peer uses for `codec`.
    pub codec_pt: u8,
    pub dtmf_pt: Option<u8>,
    /// Whether the peer wants our media (its direction is sendrecv or recvonly).
    pub peer_receives: bool,
    /// Whether the peer is expected to send (not sendonly-from-us/inactive hold).
    pub peer_sends: bool,
    pub media_timeout: Duration,
    /// RTP address from SDP; `None` while unknown or held with c=0.0.0.0.
    pub remote: Option<SocketAddr>,
    pub ssrc: u32,
    pub initial_seq: u16,
    pub initial_ts: u32,
    pub cname: String,
}

/// What the session reports to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    Digit(DigitEvent),
    /// A prompt played to its end.
    PromptFinished(PromptId),
    /// No RTP from the caller for the media timeout (not counted while on hold).
    MediaTimeout,
    /// The caller's RTCP said BYE.
    RemoteBye,
}

/// Counters of what arrived that the session ignored or repaired; for metrics and the case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCounters {
    pub unexpected_source: u64,
    pub malformed: u64,
    pub unknown_payload_type: u64,
    pub concealed_frames: u64,
    pub packets_sent: u64,
}

/// One 20 ms tick's output. Buffers are the driver's, reused every tick.
pub struct TickOutput {
    /// The RTP packet to send, `rtp[..rtp_len]`, to `rtp_to` (absent while held or unknown).
    pub rtp: [u8; RTP_HEADER_LEN + FRAME_SAMPLES],
    pub rtp_len: usize,
    pub rtp_to: Option<SocketAddr>,
    /// The caller's audio for this tick (silence where packets were lost).
    pub caller: [i16; FRAME_SAMPLES],
    /// What ivrd played in this tick.
    pub ivrd: [i16; FRAME_SAMPLES],
    /// An RTCP compound packet to send, `rtcp[..rtcp_len]`, to `rtcp_to`.
    pub rtcp: [u8; 256],
    pub rtcp_len: usize,
    pub rtcp_to: Option<SocketAddr>,
    /// True when this call produced a media tick (the recorder takes `caller`/`ivrd`).
    pub ticked: bool,
}

impl Default for TickOutput {
    fn default() -> Self {
        TickOutput {
            rtp: [0; RTP_HEADER_LEN + FRAME_SAMPLES],
            rtp_len: 0,
            rtp_to: None,
            caller: [0; FRAME_SAMPLES],
            ivrd: [0; FRAME_SAMPLES],
            rtcp: [0; 256],
            rtcp_len: 0,
            rtcp_to: None,
            ticked: false,
        }
    }
}

struct Playing {
    prompt: Arc<Prompt>,
    next_frame: usize,
}

/// One call's media state.
///
/// The field order is deliberate, and `repr(C)` keeps it: a media clock worker visits every
/// session it holds each 20 ms and by then finds its state out of the caches, so each cache
/// line a tick reads is a trip to memory. What every tick reads comes first, packed into a few
/// lines (then the playout window, whose header a tick also reads); what a received packet needs
/// follows, and what only keys, reports and prompt changes need comes last.
#[repr(C)]
pub struct MediaSession {
    // Every tick.
    next_tick: Instant,
    next_rtcp: Instant,
    last_rx: Instant,
    rfc4733: Rfc4733Decoder,
    events: VecDeque<MediaEvent>,
    playing: Option<Playing>,
    /// Where the caller's RTP actually comes from (symmetric RTP, RFC 4961 practice).
    latched: Option<SocketAddr>,
    counters: MediaCounters,
    sender: RtpSender,
    timed_out: bool,
    /// Set by the first key that arrives as RFC 4733: from then on the in-band detector is
    /// skipped (see `tick`).
    rfc4733_heard: bool,
    params: SessionParams,
    playout: PlayoutWindow,
    // Every received packet.
    receiver: RtpReceiver,
    /// Sequence number of the last telephone-event packet, for [`Self::check_event_sequence`].
    last_event_seq: Option<u16>,
    // Now and then.
    queue: VecDeque<Arc<Prompt>>,
    rtcp: RtcpSession,
    dtmf: DtmfStream,
    inband: GoertzelDetector,
}

impl MediaSession {
    /// Starts the media clock at `now`.
    /// Fails only for a CNAME longer than RTCP allows (255 bytes).
    pub fn new(
        now: Instant,
        params: SessionParams,
        rtcp_jitter: f64,
    ) -> Result<MediaSession, RtcpError> {
        let mut receiver = RtpReceiver::new(8000);
        receiver.set_event_payload_type(params.dtmf_pt);
        let rtcp = RtcpSession::new(params.ssrc, &params.cname)?;
        let mut sender = RtpSender::new(params.ssrc, params.initial_seq, params.initial_ts);
        sender.start_talkspurt();
        Ok(MediaSession {
            playout: PlayoutWindow::new(params.codec),
            sender,
            receiver,
            rtcp,
            rfc4733: Rfc4733Decoder::default(),
            last_event_seq: None,
            inband: GoertzelDetector::new(),
            rfc4733_heard: false,
            dtmf: DtmfStream::default(),
            latched: None,
            playing: None,
            queue: VecDeque::with_capacity(8),
            next_tick: now + TICK,
            next_rtcp: now + report_interval(rtcp_jitter, true),
            last_rx: now,
            timed_out: false,
            events: VecDeque::with_capacity(8),
            counters: MediaCounters::default(),
            params,
        })
    }

    /// Applies a re-INVITE/UPDATE: new address, codec or direction. A new address drops the
    /// latched source so the next packets may come from it.
    pub fn update(&mut self, now: Instant, params: SessionParams) {
        if params.remote != self.params.remote {
            self.latched = None;
        }
        if params.codec != self.params.codec {
            self.playout = PlayoutWindow::new(params.codec);
        }
        self.receiver.set_event_payload_type(params.dtmf_pt);
        let resumed = params.peer_receives && !self.params.peer_receives;
        self.params = SessionParams {
            ssrc: self.params.ssrc,
            cname: self.params.cname.clone(),
            ..params
        };
        if resumed {
            self.sender.start_talkspurt();
        }
        // Coming back from hold restarts the media timeout.
        self.last_rx = now;
    }

    /// Moves the next media tick to `next_tick`, so that a driver clocking many sessions at
    /// once ticks them all on its own 20 ms grid (a session created between two ticks of that
    /// grid would otherwise fall due just after one of them and jitter between zero and two
    /// frames per driver tick).
    pub fn align_clock(&mut self, next_tick: Instant) {
        self.next_tick = next_tick;
    }

    /// Queues a prompt; it starts at the next tick if nothing else plays.
    pub fn play(&mut self, prompt: Arc<Prompt>) {
        self.queue.push_back(prompt);
    }

    /// Stops the current prompt and clears the queue (barge-in).
    pub fn stop_playback(&mut self) {
        self.playing = None;
        self.queue.clear();
    }

    /// Whether a prompt is playing or queued.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some() || !self.queue.is_empty()
    }

    /// The caller's RTP source once nothing can move it any more: latched, and the address the
    /// caller's SDP gave. From then on `on_rtp` only counts other sources and drops them, and
    /// only a new offer (`update`) changes it, so a driver may leave that filtering to the
    /// kernel (a connected socket). A caller behind NAT, whose packets come from elsewhere than
    /// its SDP says, never settles: the SDP address may still take the latch over.
    pub fn settled_peer(&self) -> Option<SocketAddr> {
        self.latched.filter(|at| Some(*at) == self.params.remote)
    }

    /// What the playout window did with the caller's audio so far (late drops, re-anchors).
    pub fn playout_stats(&self) -> PlayoutStats {
        self.playout.stats()
    }

    /// Counters so far.
    pub fn counters(&self) -> MediaCounters {
        self.counters
    }

    /// The RTP receive statistics (RFC 3550 A.1/A.8).
    pub fn receiver(&self) -> &RtpReceiver {
        &self.receiver
    }

    /// Next event for the call, if any.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The next instant `handle_timeout` must run.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_tick.min(self.next_rtcp);
        if let Some(t) = self.rfc4733.poll_timeout() {
            at = at.min(t);
        }
        if self.timeout_armed() {
            at = at.min(self.last_rx + self.params.media_timeout);
        }
        at
    }

    fn timeout_armed(&self) -> bool {
        !self.timed_out && self.params.peer_sends && !self.params.media_timeout.is_zero()
    }

    /// One RTP datagram from `source`.
    pub fn on_rtp(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        let Ok(packet) = parse_rtp(buf) else {
            self.counters.malformed += 1;
            return;
        };
        let known_pt = packet.payload_type == self.params.codec_pt
            || Some(packet.payload_type) == self.params.dtmf_pt;
        match self.latched {
            // The address the caller's SDP gave wins over a source latched before the caller
            // spoke: a stranger who raced the caller's first packet to a (predictable) port would
            // otherwise keep the call's media, and receive our prompts, for the whole call.
            Some(addr) if addr != source && known_pt && Some(source) == self.params.remote => {
                self.latched = Some(source);
            }
            Some(addr) if addr != source => {
                self.counters.unexpected_source += 1;
                return;
            }
            None if known_pt => self.latched = Some(source),
            _ => {}
        }
        if !known_pt {
            self.counters.unknown_payload_type += 1;
            return;
        }
        self.last_rx = now;
        let previous_ssrc = self.receiver.ssrc();
        if let RxVerdict::Restart { .. } = self.receiver.on_packet(now, &packet) {
            self.playout.reset();
            // Only a new source starts new events; a sequence restart of the same source must
            // not make a key held across it count twice.
            if previous_ssrc.is_some_and(|ssrc| ssrc != packet.ssrc) {
                self.rfc4733.reset();
            }
        }
        if Some(packet.payload_type) == self.params.dtmf_pt {
            self.check_event_sequence(packet.sequence);
            if let Ok(Some(digit)) =
                self.rfc4733
                    .handle_packet(now, packet.timestamp, packet.marker, packet.payload)
            {
                self.rfc4733_heard = true;
                if let Some(ev) = self.dtmf.on_rfc4733(now, digit) {
                    self.events.push_back(MediaEvent::Digit(ev));
                }
            }
            return;
        }
        self.playout.push(packet.timestamp, packet.payload);
    }

    /// Tells the RFC 4733 decoder when the event packets' own numbering jumps the way RFC 3550
    /// A.1 calls a restart (at least `MAX_DROPOUT` ahead or `MAX_MISORDER` behind): the sender's
    /// timestamps may have restarted with it, and a key whose timestamp lies behind the last
    /// one is then new, not late. Checked on the event packets alone because some senders (SIPp
    /// replaying captures) send events under another SSRC than the audio, which keeps the
    /// receiver's own restart check from ever confirming.
    fn check_event_sequence(&mut self, sequence: u16) {
        if let Some(previous) = self.last_event_seq {
            let ahead = sequence.wrapping_sub(previous);
            if (MAX_DROPOUT..=u16::MAX - MAX_MISORDER).contains(&ahead) {
                self.rfc4733.sender_restarted();
            }
        }
        self.last_event_seq = Some(sequence);
    }

    /// One RTCP datagram; only a BYE matters to the call.
    pub fn on_rtcp(&mut self, now: Instant, buf: &[u8]) {
        if let Ok(summary) = self.rtcp.on_rtcp(now, buf) {
            if summary.bye {
                self.events.push_back(MediaEvent::RemoteBye);
            }
        }
    }

    /// A SIP INFO body from the dialog. Returns false when it carried no DTMF we understand.
    pub fn on_info(&mut self, now: Instant, content_type: &str, body: &[u8]) -> bool {
        match parse_info_body(content_type, body) {
            Ok((digit, _)) => {
                if let Some(ev) = self.dtmf.on_info(now, digit) {
                    self.events.push_back(MediaEvent::Digit(ev));
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Runs what is due at `now`. When a media tick is due, `out.ticked` is set and the frame is
    /// in `out`; call again until it returns false (a late driver catches up tick by tick, so
    /// the recording keeps wall-clock length).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        ntp: NtpTimestamp,
        rtcp_jitter: f64,
        out: &mut TickOutput,
    ) -> bool {
        out.ticked = false;
        out.rtp_len = 0;
        out.rtcp_len = 0;
        if let Some(t) = self.rfc4733.poll_timeout().filter(|t| *t <= now) {
            self.rfc4733.handle_timeout(t);
        }
        if self.timeout_armed() && now >= self.last_rx + self.params.media_timeout {
            self.timed_out = true;
            self.events.push_back(MediaEvent::MediaTimeout);
        }
        if now >= self.next_rtcp {
            self.next_rtcp = now + report_interval(rtcp_jitter, false);
            if let Ok(n) =
                self.rtcp
                    .write_report(now, ntp, &self.sender, &mut self.receiver, &mut out.rtcp)
            {
                out.rtcp_len = n;
                out.rtcp_to = self.rtcp_destination();
            }
        }
        if now < self.next_tick {
            return out.rtcp_len > 0;
        }
        let tick_at = self.next_tick;
        self.next_tick += TICK;
        self.tick(tick_at, out);
        true
    }

    fn tick(&mut self, tick_at: Instant, out: &mut TickOutput) {
        out.ticked = true;
        let codec = self.params.codec;
        // Caller side: the frame due now, decoded straight from the playout window into the
        // driver's buffer, where the recorder and the in-band detector read it.
        let (source, frame) = self.playout.pop_frame();
        codec.decode(frame, &mut out.caller);
        if source == FrameSource::Concealed {
            self.counters.concealed_frames += 1;
        }
        // A caller whose keys arrive as RFC 4733 events has a gateway that signals them out of
        // band; in-band detection could then only find the same presses again (which the
        // merge drops), yet it is the costliest step of the tick. So it runs until the first
        // RFC 4733 key and not after (nor is its queue looked at: it only fills on a push).
        if !self.rfc4733_heard {
            self.inband.push(tick_at, &out.caller);
            while let Some(found) = self.inband.poll() {
                if let Some(ev) = self.dtmf.on_inband(tick_at, found.digit, found.started_at) {
                    self.events.push_back(MediaEvent::Digit(ev));
                }
            }
        }
        // Our side: the next prompt frame or silence, used where it lies (in the shared prompt)
        // for the packet and the recorder's copy.
        let frame = match self.next_prompt_frame() {
            Some(index) => self
                .playing
                .as_ref()
                .and_then(|p| p.prompt.frame(codec, index))
                .unwrap_or(codec.silence_frame()),
            None => codec.silence_frame(),
        };
        codec.decode(frame, &mut out.ivrd);
        out.rtp_to = self.rtp_destination();
        if out.rtp_to.is_some() {
            let pt = self.params.codec_pt;
            if let Ok(n) = self.sender.write_packet(pt, false, frame, &mut out.rtp) {
                out.rtp_len = n;
                self.counters.packets_sent += 1;
            }
        }
        self.sender.advance(FRAME_SAMPLES as u32);
    }

    /// Moves the playing prompt on by a frame (starting the next queued one when it ends) and
    /// returns the index of the frame to send now in `self.playing`, `None` when nothing plays.
    fn next_prompt_frame(&mut self) -> Option<usize> {
        loop {
            if self.playing.is_none() {
                let prompt = self.queue.pop_front()?;
                self.playing = Some(Playing {
                    prompt,
                    next_frame: 0,
                });
            }
            let playing = self.playing.as_mut()?;
            let index = playing.next_frame;
            if index < playing.prompt.frame_count() {
                playing.next_frame += 1;
                return Some(index);
            }
            let id = playing.prompt.id().clone();
            self.playing = None;
            self.events.push_back(MediaEvent::PromptFinished(id));
        }
    }

    fn rtp_destination(&self) -> Option<SocketAddr> {
        if !self.params.peer_receives {
            return None;
        }
        self.latched.or(self.params.remote)
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        let rtp = self.latched.or(self.params.remote)?;
        Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)))
    }

    /// The final RTCP compound with BYE (RFC 3550 §6.6) and where to send it.
    pub fn goodbye(
        &mut self,
        now: Instant,
        ntp: NtpTimestamp,
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        let to = self.rtcp_destination()?;
        let n = self
            .rtcp
            .write_goodbye(
                now,
                ntp,
                &self.sender,
                &mut self.receiver,
                Some("call ended"),
                out,
            )
            .ok()?;
        Some((n, to))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
