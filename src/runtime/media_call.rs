//! One call's media as the shared media clock drives it: the call's [`MediaSession`], its RTP and
//! RTCP sockets, the whole-call recorder and a caller message being taken.
//!
//! Where it sits: a [`crate::runtime::media_clock`] worker owns many of these and on every
//! 20 ms tick of its clock runs [`start_tick`] over them (the last tick's frames out, what
//! arrived in), then [`CallMedia::on_tick`] for each (the tick's work); the call's control task
//! (`runtime::call`) steers it with [`MediaCommand`]s and hears back through [`MediaNotice`]s,
//! which happen a few times per call, not per packet. Sockets are non-blocking and drained
//! here, at the tick, so a packet costs no wake-up of its own.

use crate::media::digit::DigitEvent;
use crate::media::g711::FRAME_SAMPLES;
use crate::media::prompt::Prompt;
use crate::media::rtcp::NtpTimestamp;
use crate::media::rtp::RTP_HEADER_LEN;
use crate::media::session::{MediaEvent, MediaSession, SessionParams, TickOutput};
use crate::runtime::recorder::{CallRecorder, MessageRecorder};
use crate::udp_batch::{RecvBatch, disconnect};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::UnboundedSender;

/// RTP datagrams read from one call's socket per tick. A caller sends one per 20 ms; under a
/// flood at the port the socket buffer (a few hundred datagrams) must be emptied every tick,
/// or the caller's packets are dropped by the kernel behind the stranger's. The cap still
/// bounds what a flood can cost the worker per tick.
pub const MAX_RTP_READS_PER_TICK: usize = 1024;

/// Datagrams in one tick from which a socket counts as flooded: its buffer (a few hundred
/// small datagrams at the default `rmem_max`) would overflow between two ticks and the kernel
/// would drop the caller's packets behind the stranger's, so the clock also drains it between
/// ticks (`media_clock`) until a tick reads fewer again.
pub const FLOODED_READS_PER_TICK: usize = 64;

/// A call's RTP socket is read every this many ticks (when it is not flooded). A caller sends a
/// packet per tick, so reading every tick costs a system call per packet; every other tick reads
/// two with one `recvmmsg`. The playout window's delay (`media::playout`) absorbs the extra
/// 20 ms, and a key is heard at most 20 ms later. A packet's arrival time (for jitter) is the
/// kernel's receive timestamp, not the read. (Every fourth tick was measured too: 0.460 and
/// 0.470 ms of CPU per call-second at 3,000 calls against 0.462 and 0.465, for 40 ms more delay.)
pub const RTP_READ_EVERY_TICKS: u64 = 2;

/// Cache lines from the start of a [`CallMedia`] that [`CallMedia::prefetch`] fetches: the
/// call's own fields, the message being taken and the session's hot part.
const PREFETCH_LINES: usize = 16;

/// How many calls ahead of the one it ticks a worker asks the CPU to fetch a call's state.
/// By the time the tick reaches it, it had the kernel time of the calls in between to arrive.
pub const PREFETCH_AHEAD: usize = 2;

/// RTCP is read every this many ticks (once a second): reports come every five seconds or so
/// (RFC 3550 §6.2) and nothing in them is urgent, so polling more often would mostly be
/// system calls that find nothing. The delay since the last SR that our reports carry
/// (§6.4.1, DLSR) counts from the SR's kernel receive time, not from this read.
pub const RTCP_READ_EVERY_TICKS: u64 = 50;

/// The oldest kernel receive time [`TickClock::arrival`] believes: a second of RTCP read
/// cadence with room to spare. An older stamp means the wall clock stepped.
const MAX_ARRIVAL_AGE: Duration = Duration::from_secs(2);

/// Mean absolute sample value below which a frame counts as silence for "end on silence"
/// (about -45 dBm0: quieter than speech, louder than a G.711 idle channel).
const SILENCE_LEVEL: u32 = 120;

/// A caller message being recorded: the recorder and the rules that end it.
pub struct MessageTap {
    /// `None` when the recording could not start: the message is then timed but not kept.
    pub recorder: Option<MessageRecorder>,
    pub started: Instant,
    pub max: Duration,
    pub silence_end: Option<Duration>,
    silent_since: Option<Instant>,
}

impl MessageTap {
    /// A message starting at `started`, ending at `max` or after `silence_end` of silence.
    pub fn new(
        recorder: Option<MessageRecorder>,
        started: Instant,
        max: Duration,
        silence_end: Option<Duration>,
    ) -> Self {
        MessageTap {
            recorder,
            started,
            max,
            silence_end,
            silent_since: None,
        }
    }

    /// Takes one tick of the caller's audio; true when the message should end now.
    pub fn push(&mut self, now: Instant, caller: &[i16; FRAME_SAMPLES]) -> bool {
        if let Some(rec) = self.recorder.as_mut() {
            rec.push(caller);
        }
        // The level only matters to a message that ends on silence.
        if self.silence_end.is_some() {
            let level = caller
                .iter()
                .map(|s| u32::from(s.unsigned_abs()))
                .sum::<u32>()
                / FRAME_SAMPLES as u32;
            if level >= SILENCE_LEVEL {
                self.silent_since = None;
            } else if self.silent_since.is_none() {
                self.silent_since = Some(now);
            }
        }
        let silent_too_long = matches!(
            (self.silence_end, self.silent_since),
            (Some(limit), Some(since)) if now >= since + limit
        );
        silent_too_long || now >= self.started + self.max
    }
}

/// What the call's control task asks of its media.
pub enum MediaCommand {
    /// Stop what plays and play these, reporting [`MediaNotice::PlaybackDone`] with `id`.
    Play { id: u64, prompts: Vec<Arc<Prompt>> },
    /// Barge-in: stop playing and forget the queue.
    StopPlayback,
    /// A re-INVITE or UPDATE changed the media.
    Update(SessionParams),
    /// A SIP INFO body, for DTMF.
    Info { content_type: String, body: Bytes },
    /// Start feeding the caller's audio to a message.
    /// Boxed, so that the commands and notices that carry it stay small.
    StartMessage(Box<MessageTap>),
    /// End the message now; it comes back in [`MediaNotice::MessageEnded`].
    StopMessage,
    /// The call is over: send RTCP BYE and hand everything back in [`MediaNotice::Finished`].
    Finish,
}

/// What the media tells the call's control task.
pub enum MediaNotice {
    /// A key from the caller (RFC 4733, in-band or SIP INFO).
    Digit(DigitEvent),
    /// No RTP from the caller within the media timeout.
    MediaTimeout,
    /// The caller's RTCP said BYE.
    RemoteBye,
    /// Everything queued by the `Play` with this id has been played.
    PlaybackDone { id: u64 },
    /// The message ended (silence, its maximum, or `StopMessage`) at `at`.
    MessageEnded { tap: Box<MessageTap>, at: Instant },
    /// After `Finish`: the session (for its statistics) and what is left to finalise.
    Finished(Box<FinishedMedia>),
}

/// What a finished call's media hands back.
pub struct FinishedMedia {
    pub session: MediaSession,
    pub recorder: Option<CallRecorder>,
    pub message: Option<Box<MessageTap>>,
    /// Datagrams the socket refused (buffer full) while the call ran.
    pub send_errors: u64,
}

/// One call on the media clock.
///
/// Laid out for the tick, like [`MediaSession`]: the fields every tick reads first (`repr(C)`
/// keeps the order), the caller's message inline rather than boxed (one pointer less to follow
/// per tick while it is taken), the session's hot lines right after, the rest at the end. Each
/// call starts on a cache line of its own.
#[repr(C, align(64))]
pub struct CallMedia {
    // Every tick.
    /// The call's key on its worker.
    pub key: u64,
    /// RTP datagrams read by [`Self::drain_flood`] since the last tick.
    drained_since_tick: usize,
    rtp: UdpSocket,
    /// The last tick read [`FLOODED_READS_PER_TICK`] or more.
    flooded: bool,
    /// `rtp` is connected to the session's settled peer ([`MediaSession::settled_peer`]), which
    /// is then also where the session sends: see [`Self::follow_peer`].
    connected: bool,
    recorder: Option<CallRecorder>,
    message: Option<MessageTap>,
    session: MediaSession,
    // Now and then.
    rtcp: UdpSocket,
    /// The `Play` id whose prompts are queued or playing.
    playing: Option<u64>,
    notices: UnboundedSender<MediaNotice>,
    send_errors: u64,
}

/// Datagrams read with one `recvmmsg`.
const RECV_BATCH: usize = 32;
/// Bytes of the largest datagram read whole: an Ethernet MTU, more than any G.711 RTP packet.
/// A longer one reaches the session empty, so that it is counted as malformed rather than cut
/// to a prefix that might parse.
const DATAGRAM_BYTES: usize = 1500;

/// An RTP packet made at one tick and sent at the start of the next (see [`start_tick`]).
struct QueuedRtp {
    /// The call's index on its worker and its key, which must still match at the send.
    index: u32,
    key: u64,
    len: u16,
    to: SocketAddr,
    bytes: [u8; RTP_HEADER_LEN + FRAME_SAMPLES],
}

/// Buffers a worker reuses for every call on every tick.
pub struct TickScratch {
    out: TickOutput,
    /// The packets this tick made, sent at the start of the next.
    queued: Vec<QueuedRtp>,
    pub(crate) batch: RecvBatch,
    /// The RTCP interval's random factor (RFC 3550 §6.3.1), drawn per call and tick. It only
    /// has to keep calls from reporting in step, so a small generator of the worker's own
    /// does, without the thread-local generator's lookup and reference count each time.
    rng: SmallRng,
}

impl Default for TickScratch {
    fn default() -> Self {
        TickScratch {
            out: TickOutput::default(),
            queued: Vec::new(),
            batch: RecvBatch::new(RECV_BATCH, DATAGRAM_BYTES),
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }
}

/// The wall clock of one tick, read once for every call on it.
#[derive(Debug, Clone, Copy)]
pub struct TickClock {
    pub now: Instant,
    /// The wall clock at `now`, to place the kernel's receive timestamps on `now`'s clock.
    pub wall: SystemTime,
    pub ntp: NtpTimestamp,
    /// Counts the worker's ticks; spreads RTCP reads across ticks.
    pub count: u64,
}

impl TickClock {
    /// When a datagram read at this tick arrived, on the monotonic clock: its kernel receive
    /// time (wall clock) as an age before `wall`, taken back from `now`. The tick's own time
    /// for a datagram without a stamp, one stamped after `wall` (it came during the tick's
    /// work) or one older than [`MAX_ARRIVAL_AGE`] (the wall clock stepped in between).
    pub fn arrival(&self, received_at: Option<SystemTime>) -> Instant {
        received_at
            .and_then(|at| self.wall.duration_since(at).ok())
            .filter(|age| *age <= MAX_ARRIVAL_AGE)
            .and_then(|age| self.now.checked_sub(age))
            .unwrap_or(self.now)
    }
}

impl CallMedia {
    /// A call's media on its worker. The session's clock must already be on the worker's grid.
    /// The sockets should carry kernel receive timestamps (`RtpPortPool` binds them so);
    /// without them arrivals count from the read, as the jitter then shows.
    pub fn new(
        key: u64,
        session: MediaSession,
        rtp: UdpSocket,
        rtcp: UdpSocket,
        recorder: Option<CallRecorder>,
        notices: UnboundedSender<MediaNotice>,
    ) -> Self {
        CallMedia {
            key,
            session,
            rtp,
            rtcp,
            recorder,
            message: None,
            playing: None,
            notices,
            send_errors: 0,
            drained_since_tick: 0,
            flooded: false,
            connected: false,
        }
    }

    /// Applies a command; true for `Finish`, after which the worker calls [`Self::finish`].
    pub fn on_command(&mut self, now: Instant, command: MediaCommand) -> bool {
        match command {
            MediaCommand::Play { id, prompts } => {
                self.session.stop_playback();
                for prompt in prompts {
                    self.session.play(prompt);
                }
                self.playing = Some(id);
            }
            MediaCommand::StopPlayback => {
                self.session.stop_playback();
                self.playing = None;
            }
            MediaCommand::Update(params) => {
                self.session.update(now, params);
                // Before the next read: a new address must not find the socket still bound
                // to the old one.
                self.follow_peer();
            }
            MediaCommand::Info { content_type, body } => {
                if !self.session.on_info(now, &content_type, &body) {
                    tracing::debug!(key = self.key, %content_type, "INFO without DTMF ignored");
                }
                self.forward_events();
            }
            MediaCommand::StartMessage(tap) => self.message = Some(*tap),
            MediaCommand::StopMessage => self.end_message(now),
            MediaCommand::Finish => return true,
        }
        false
    }

    /// Hands everything back to the control task after the final RTCP BYE (RFC 3550 §6.6).
    pub fn finish(mut self, clock: &TickClock, scratch: &mut TickScratch) {
        if let Some((n, to)) = self
            .session
            .goodbye(clock.now, clock.ntp, &mut scratch.out.rtcp)
        {
            let _ = self.rtcp.send_to(&scratch.out.rtcp[..n], to);
        }
        let finished = FinishedMedia {
            session: self.session,
            recorder: self.recorder,
            message: self.message.map(Box::new),
            send_errors: self.send_errors,
        };
        let _ = self.notices.send(MediaNotice::Finished(Box::new(finished)));
    }

    /// A call's part of [`start_tick`]: what arrived is read, its peer followed.
    fn read_inputs(&mut self, clock: &TickClock, batch: &mut RecvBatch) {
        // Calls are spread over the two phases by key, so a worker's reads are too.
        if self.flooded || (clock.count + self.key) % RTP_READ_EVERY_TICKS == 0 {
            let read = self.read_rtp(clock, batch) + self.drained_since_tick;
            self.flooded = read >= FLOODED_READS_PER_TICK;
            self.drained_since_tick = 0;
            // Once connected only `Update` can unsettle the peer, so the tick skips the check.
            if !self.connected {
                self.follow_peer();
            }
        }
        if (clock.count + self.key) % RTCP_READ_EVERY_TICKS == 0 {
            self.read_rtcp(clock, batch);
        }
    }

    /// The work of a tick, after [`start_tick`]: run what is due, queue the frame for the next
    /// tick's start, record. `index` is the call's place on its worker.
    pub fn on_tick(&mut self, index: usize, clock: &TickClock, scratch: &mut TickScratch) {
        let out = &mut scratch.out;
        while self
            .session
            .handle_timeout(clock.now, clock.ntp, scratch.rng.random(), out)
        {
            if let (true, Some(to)) = (out.rtp_len > 0, out.rtp_to) {
                scratch.queued.push(QueuedRtp {
                    index: index as u32,
                    key: self.key,
                    len: out.rtp_len as u16,
                    to,
                    bytes: out.rtp,
                });
            }
            if let (true, Some(to)) = (out.rtcp_len > 0, out.rtcp_to) {
                // At once: the session writes a report before the tick's frame, so it counts
                // only packets of earlier ticks, which `start_tick` sent at this tick's start
                // (RFC 3550 §6.4.1: the count is of packets "transmitted ... up until the time
                // this SR packet was generated").
                if self.rtcp.send_to(&out.rtcp[..out.rtcp_len], to).is_err() {
                    self.send_errors += 1;
                }
            }
            if out.ticked {
                if let Some(rec) = self.recorder.as_mut() {
                    rec.push_frame(&out.caller, &out.ivrd);
                }
                if self
                    .message
                    .as_mut()
                    .is_some_and(|m| m.push(clock.now, &out.caller))
                {
                    self.end_message(clock.now);
                }
            }
        }
        self.forward_events();
    }

    /// Asks the CPU to bring this call's state into the cache ahead of its tick: a worker
    /// visits thousands of calls per tick, and each call's state is out of the caches by its
    /// next one, so its first touches would each wait for memory.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let base = (self as *const CallMedia).cast::<i8>();
            for line in 0..PREFETCH_LINES {
                // SAFETY: a prefetch is a hint that never faults and reads nothing back, even
                // past the object; `wrapping_add` keeps the pointer arithmetic defined, and SSE
                // is part of every x86_64 CPU.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(line * 64)) };
            }
        }
    }

    fn send_frame(&mut self, frame: &QueuedRtp) {
        let packet = &frame.bytes[..usize::from(frame.len)];
        let sent = if self.connected {
            debug_assert_eq!(Some(frame.to), self.session.settled_peer());
            self.rtp.send(packet)
        } else {
            self.rtp.send_to(packet, frame.to)
        };
        if sent.is_err() {
            self.send_errors += 1;
        }
    }

    /// Whether the clock should also drain this call's socket between ticks.
    pub fn is_flooded(&self) -> bool {
        self.flooded
    }

    /// Between ticks, for a flooded socket: reads what has queued, so that the caller's packets
    /// find room in the socket buffer.
    pub fn drain_flood(&mut self, clock: &TickClock, batch: &mut RecvBatch) {
        if self.flooded {
            self.drained_since_tick += self.read_rtp(clock, batch);
        }
    }

    /// Connects the RTP socket to the session's settled peer, or disconnects it when there is
    /// none (any more). A connected socket sends without a route lookup per datagram (the
    /// kernel keeps the route), a sixth less system time per packet than `sendto` on loopback,
    /// and the kernel drops other sources' datagrams before they are queued (answering with
    /// ICMP port unreachable, as for a closed port) instead of this worker reading and
    /// counting them: the session would discard them anyway (`MediaSession::on_rtp`).
    /// Until the peer settles the socket stays open to every source, so that a caller behind
    /// NAT, or the SDP address after a stranger's race, can still take the latch.
    fn follow_peer(&mut self) {
        let peer = self.session.settled_peer();
        if peer.is_some() == self.connected {
            return;
        }
        let result = match peer {
            Some(addr) => self.rtp.connect(addr),
            None => disconnect(&self.rtp),
        };
        match result {
            Ok(()) => self.connected = peer.is_some(),
            // The socket keeps its old state. A connect fails only where `sendto` would too (no
            // route), which the send errors count; it is tried again after the next read. A
            // disconnect does not fail for a UDP socket on Linux (`connect(2)`, AF_UNSPEC).
            Err(e) => tracing::debug!(key = self.key, ?peer, error = %e, "RTP socket connect"),
        }
    }

    /// Reads what is queued, up to [`MAX_RTP_READS_PER_TICK`]; returns how many datagrams.
    fn read_rtp(&mut self, clock: &TickClock, batch: &mut RecvBatch) -> usize {
        let mut read = 0;
        while read < MAX_RTP_READS_PER_TICK {
            match batch.recv(&self.rtp) {
                Ok(n) => {
                    for datagram in batch.iter() {
                        let bytes = if datagram.truncated {
                            &[][..]
                        } else {
                            datagram.bytes
                        };
                        if let Some(source) = datagram.source {
                            let arrived = clock.arrival(datagram.received_at);
                            self.session.on_rtp(arrived, source, bytes);
                        }
                    }
                    read += n;
                    if n < RECV_BATCH {
                        break;
                    }
                }
                // ICMP port unreachable from an earlier send surfaces here on Linux; the
                // socket stays usable.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => read += 1,
                Err(_) => break,
            }
        }
        read
    }

    fn read_rtcp(&mut self, clock: &TickClock, batch: &mut RecvBatch) {
        // One batch: reports come every few seconds, so more than that is not RTCP's pace.
        if batch.recv(&self.rtcp).is_ok() {
            for datagram in batch.iter().filter(|d| !d.truncated) {
                let arrived = clock.arrival(datagram.received_at);
                self.session.on_rtcp(arrived, datagram.bytes);
            }
        }
    }

    fn end_message(&mut self, at: Instant) {
        if let Some(tap) = self.message.take() {
            let tap = Box::new(tap);
            let _ = self.notices.send(MediaNotice::MessageEnded { tap, at });
        }
    }

    fn forward_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                MediaEvent::PromptFinished(_) => {
                    if let (Some(id), false) = (self.playing, self.session.is_playing()) {
                        self.playing = None;
                        let _ = self.notices.send(MediaNotice::PlaybackDone { id });
                    }
                }
                MediaEvent::Digit(digit) => {
                    let _ = self.notices.send(MediaNotice::Digit(digit));
                }
                MediaEvent::MediaTimeout => {
                    let _ = self.notices.send(MediaNotice::MediaTimeout);
                }
                MediaEvent::RemoteBye => {
                    let _ = self.notices.send(MediaNotice::RemoteBye);
                }
            }
        }
    }
}

/// The first pass of a tick over a worker's calls, in their order, before any call's work:
/// each call's frame from the last tick leaves, then what arrived for it is read. Returns how
/// many calls are flooded.
///
/// Why frames wait a tick: sent during the work, a call's frame left at "tick start + the work
/// of every call before it" (decoding, key detection, recording), which varies by milliseconds
/// from tick to tick at thousands of calls and put gaps outside 20 ± 5 ms into what callers
/// receive; here it leaves at "tick start + the sends and reads before it", which varies
/// little. The cost is one tick (20 ms) more delay on what ivrd plays, which nobody hears in
/// an IVR. Why the reads are in the same pass: a send and a read on one socket back to back
/// find the kernel's socket state in the cache for the second. A frame whose call left the
/// worker (or moved in it) since is dropped.
pub fn start_tick(calls: &mut [CallMedia], clock: &TickClock, scratch: &mut TickScratch) -> usize {
    let mut next = 0;
    let mut flooded = 0;
    for index in 0..calls.len() {
        if let Some(ahead) = calls.get(index + PREFETCH_AHEAD) {
            ahead.prefetch();
        }
        let call = &mut calls[index];
        // The queue is in call order; an entry for an earlier place belongs to no call now.
        while let Some(frame) = scratch
            .queued
            .get(next)
            .filter(|f| f.index as usize <= index)
        {
            if frame.index as usize == index && frame.key == call.key {
                call.send_frame(frame);
            }
            next += 1;
        }
        call.read_inputs(clock, &mut scratch.batch);
        flooded += usize::from(call.is_flooded());
    }
    scratch.queued.clear();
    flooded
}

#[cfg(test)]
#[path = "media_call_tests.rs"]
mod tests;

/// Discards what was queued on a call's RTP port before our answer went out: the caller learns
/// the port from the answer, so a backlog is a stranger's. Called by the call's task just
/// before it sends the 200, not by the media clock when the media starts: the clock takes a new
/// call only at its next tick, by when the caller's first packets may be queued too.
pub fn discard_backlog(rtp: &UdpSocket) {
    let mut buf = [0u8; 2048];
    for _ in 0..MAX_RTP_READS_PER_TICK {
        if rtp.recv(&mut buf).is_err() {
            return;
        }
    }
}
