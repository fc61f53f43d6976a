//! A call's media on a fake clock with real loopback sockets: what one tick reads and sends,
//! prompt ends, messages ending on silence, the flood cap and the final RTCP BYE.

use super::*;
use crate::media::g711::Codec;
use crate::media::prompt::PromptId;
use crate::media::rtp::{RtpSender, parse_rtp};
use crate::media::session::TICK;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

struct Rig {
    media: CallMedia,
    notices: UnboundedReceiver<MediaNotice>,
    /// The caller's RTP socket; ivrd's address is `ivrd_rtp`.
    caller: UdpSocket,
    /// The caller's RTCP socket, on the RTP port + 1.
    caller_rtcp: UdpSocket,
    ivrd_rtp: SocketAddr,
    t0: Instant,
    /// The wall clock at `t0`: tick n is at `t0 + n × 20 ms` on both clocks.
    wall0: SystemTime,
    scratch: TickScratch,
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

/// A socket on a port named in its `bind`, as `RtpPortPool` binds a call's: one bound to port
/// 0 would give its port up when `CallMedia` disconnects it (Linux keeps a UDP socket's port
/// across a disconnect only if it was bound explicitly).
fn bind_chosen_port() -> UdpSocket {
    loop {
        let free = bind().local_addr().expect("addr").port();
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", free)) {
            s.set_nonblocking(true).expect("nonblocking");
            return s;
        }
    }
}

/// Two sockets on adjacent ports, as RTP and RTCP (RFC 3550 §11).
fn bind_pair() -> (UdpSocket, UdpSocket) {
    loop {
        let rtp = bind();
        let port = rtp.local_addr().expect("addr").port();
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port.wrapping_add(1))) {
            rtcp.set_nonblocking(true).expect("nonblocking");
            return (rtp, rtcp);
        }
    }
}

fn rig() -> Rig {
    rig_with_sdp_address(None)
}

/// The address a caller behind NAT puts in its SDP: not where its packets come from.
const NAT_SDP_ADDRESS: &str = "127.0.0.1:9";

/// A rig whose caller's SDP gives `sdp` instead of the caller socket's own address.
fn rig_with_sdp_address(sdp: Option<SocketAddr>) -> Rig {
    let (caller, caller_rtcp) = bind_pair();
    let (rtp, rtcp) = (bind_chosen_port(), bind());
    for socket in [&rtp, &rtcp] {
        // As `RtpPortPool` binds a call's sockets.
        crate::udp_batch::enable_receive_timestamps(socket).expect("SO_TIMESTAMPNS");
    }
    let ivrd_rtp = rtp.local_addr().expect("addr");
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    let remote = sdp.unwrap_or_else(|| caller.local_addr().expect("addr"));
    let params = session_params(remote);
    let mut session = MediaSession::new(t0, params, 0.5).expect("session");
    session.align_clock(t0 + TICK);
    let (tx, notices) = unbounded_channel();
    Rig {
        media: CallMedia::new(1, session, rtp, rtcp, None, tx),
        notices,
        caller,
        caller_rtcp,
        ivrd_rtp,
        t0,
        wall0,
        scratch: TickScratch::default(),
    }
}

/// The rig's session: PCMU with RFC 4733 keys, the caller's SDP at `remote`.
fn session_params(remote: SocketAddr) -> SessionParams {
    SessionParams {
        codec: Codec::Pcmu,
        codec_pt: 0,
        dtmf_pt: Some(101),
        remote: Some(remote),
        peer_receives: true,
        peer_sends: true,
        ssrc: 7,
        initial_seq: 100,
        initial_ts: 0,
        cname: "ivrd@test".into(),
        media_timeout: Duration::from_secs(30),
    }
}

impl Rig {
    fn clock(&self, n: u32) -> TickClock {
        TickClock {
            now: self.t0 + TICK * n,
            wall: self.wall0 + TICK * n,
            ntp: crate::media::rtcp::NtpTimestamp::from_unix(Duration::from_secs(1)),
            count: u64::from(n),
        }
    }

    /// A whole tick, as a worker runs it, and then the frame it queued sent at once (as the
    /// next tick's start would), so that a test sees each tick's frame after it.
    fn tick(&mut self, n: u32) {
        self.start_tick(n);
        self.work(n);
        self.send_queued();
    }

    /// The worker's first pass at tick n, over this call alone.
    fn start_tick(&mut self, n: u32) {
        let clock = self.clock(n);
        start_tick(
            std::slice::from_mut(&mut self.media),
            &clock,
            &mut self.scratch,
        );
    }

    /// The call's work at tick n, after the first pass.
    fn work(&mut self, n: u32) {
        let clock = self.clock(n);
        self.media.on_tick(0, &clock, &mut self.scratch);
    }

    fn send_queued(&mut self) {
        for frame in self.scratch.queued.drain(..) {
            self.media.send_frame(&frame);
        }
    }

    /// Every RTP packet that reached the caller so far (sequence numbers).
    fn received(&self) -> Vec<u16> {
        let mut buf = [0u8; 2048];
        let mut seqs = Vec::new();
        while let Ok(n) = self.caller.recv(&mut buf) {
            if let Ok(p) = parse_rtp(&buf[..n]) {
                seqs.push(p.sequence);
            }
        }
        seqs
    }

    fn notices(&mut self) -> Vec<MediaNotice> {
        let mut out = Vec::new();
        while let Ok(n) = self.notices.try_recv() {
            out.push(n);
        }
        out
    }
}

fn prompt(frames: usize) -> Arc<Prompt> {
    Arc::new(Prompt::from_samples(
        PromptId::new("test/p").expect("id"),
        &vec![4000i16; frames * FRAME_SAMPLES],
    ))
}

#[test]
fn each_tick_sends_one_frame_and_a_late_tick_catches_up() {
    let mut r = rig();
    r.tick(1);
    assert_eq!(r.received(), vec![100]);
    r.tick(2);
    assert_eq!(r.received(), vec![101]);
    // Woken three ticks late: the frames due meanwhile go out now, in order.
    r.tick(5);
    assert_eq!(r.received(), vec![102, 103, 104]);
}

#[test]
fn a_tick_queues_its_frame_and_the_next_tick_start_sends_it() {
    let mut r = rig();
    r.start_tick(1);
    r.work(1);
    assert_eq!(
        r.received(),
        Vec::<u16>::new(),
        "sent during the tick's work"
    );
    r.start_tick(2);
    assert_eq!(r.received(), vec![100]);
    // Nothing is left queued to go out twice.
    r.start_tick(2);
    assert_eq!(r.received(), Vec::<u16>::new());
}

#[test]
fn a_queued_frame_is_dropped_when_its_call_is_no_longer_at_its_place() {
    let mut r = rig();
    let mut other = rig();
    other.media.key = r.media.key + 1;
    r.work(1);
    // Another call now sits where r's was: r's frame must not leave on its socket.
    let clock = r.clock(2);
    start_tick(
        std::slice::from_mut(&mut other.media),
        &clock,
        &mut r.scratch,
    );
    r.start_tick(2);
    assert_eq!(other.received(), Vec::<u16>::new());
    assert_eq!(r.received(), Vec::<u16>::new());
    assert_eq!(other.media.send_errors + r.media.send_errors, 0);
}

#[test]
fn a_sender_report_counts_only_packets_that_already_left() {
    // RFC 3550 §6.4.1: the SR's packet count is of packets transmitted until it was made. With
    // frames sent at the next tick's start, the report made during a tick must not count that
    // tick's own frame.
    let mut r = rig();
    let mut received = 0u32;
    let mut buf = [0u8; 512];
    for n in 1..=400 {
        r.start_tick(n);
        received += r.received().len() as u32;
        r.work(n);
        if let Ok(len) = r.caller_rtcp.recv(&mut buf) {
            let count = crate::media::rtcp::parse_compound(&buf[..len])
                .find_map(|p| match p {
                    Ok(crate::media::rtcp::RtcpPacket::SenderReport { packet_count, .. }) => {
                        Some(packet_count)
                    }
                    _ => None,
                })
                .expect("a sender report");
            assert_eq!(count, received, "SR at tick {n}");
            return;
        }
    }
    panic!("no RTCP report in 8 s");
}

#[test]
fn playback_done_is_reported_once_with_the_play_id_after_the_last_prompt() {
    let mut r = rig();
    let now = r.t0;
    r.media.on_command(
        now,
        MediaCommand::Play {
            id: 9,
            prompts: vec![prompt(2), prompt(1)],
        },
    );
    for n in 1..=3 {
        r.tick(n);
        assert!(r.notices().is_empty(), "tick {n}");
    }
    r.tick(4);
    let notices = r.notices();
    assert!(matches!(
        notices.as_slice(),
        [MediaNotice::PlaybackDone { id: 9 }]
    ));
    r.tick(5);
    assert!(r.notices().is_empty());
}

#[test]
fn a_stopped_play_reports_nothing() {
    let mut r = rig();
    r.media.on_command(
        r.t0,
        MediaCommand::Play {
            id: 3,
            prompts: vec![prompt(1)],
        },
    );
    r.media.on_command(r.t0, MediaCommand::StopPlayback);
    for n in 1..=3 {
        r.tick(n);
    }
    assert!(r.notices().is_empty());
}

#[test]
fn caller_audio_is_read_at_the_tick_and_a_silent_message_ends_on_silence() {
    let mut r = rig();
    let tap = MessageTap::new(None, r.t0, Duration::from_secs(60), Some(TICK * 3));
    r.media
        .on_command(r.t0, MediaCommand::StartMessage(Box::new(tap)));
    let mut tx = RtpSender::new(55, 1, 0);
    let mut pkt = [0u8; 256];
    for n in 1..=6 {
        // Silence from the caller (µ-law 0xFF), one packet per tick.
        let len = tx
            .write_packet(0, false, &[0xFF; FRAME_SAMPLES], &mut pkt)
            .expect("packet");
        tx.advance(FRAME_SAMPLES as u32);
        r.caller.send_to(&pkt[..len], r.ivrd_rtp).expect("send");
        r.tick(n);
        let ended = r
            .notices()
            .into_iter()
            .any(|n| matches!(n, MediaNotice::MessageEnded { .. }));
        // Silent since the first tick; ends once three ticks of silence have passed.
        assert_eq!(ended, n == 4, "tick {n}");
    }
}

#[test]
fn a_message_without_a_silence_end_runs_through_silence_to_its_maximum() {
    let t0 = Instant::now();
    let mut tap = MessageTap::new(None, t0, TICK * 5, None);
    let silence = [0i16; FRAME_SAMPLES];
    let ended: Vec<bool> = (1..=6).map(|n| tap.push(t0 + TICK * n, &silence)).collect();
    assert_eq!(ended, [false, false, false, false, true, true]);
}

#[test]
fn a_steady_caller_is_read_every_other_tick_and_no_frame_is_lost() {
    let mut r = rig();
    let mut tx = RtpSender::new(55, 1, 0);
    let mut pkt = [0u8; 256];
    let mut received_after = Vec::new();
    let mut concealed_at_10 = 0;
    for n in 1..=40 {
        let len = tx
            .write_packet(0, false, &[0x80; FRAME_SAMPLES], &mut pkt)
            .expect("packet");
        tx.advance(FRAME_SAMPLES as u32);
        r.caller.send_to(&pkt[..len], r.ivrd_rtp).expect("send");
        r.tick(n);
        received_after.push(r.media.session.receiver().received());
        if n == 10 {
            concealed_at_10 = r.media.session.counters().concealed_frames;
        }
    }
    // Key 1: odd ticks read, and read both packets queued since the last read (the receiver
    // counts a source's packets from its second on: RFC 3550 A.1 probation).
    assert_eq!(&received_after[..5], &[0, 0, 2, 2, 4]);
    assert_eq!(received_after[39], 38, "the 40th waits for tick 41");
    // Once the stream plays, no frame is concealed: the playout delay covers the read cadence.
    assert!(
        concealed_at_10 > 0,
        "the delay before the first frame plays"
    );
    assert_eq!(r.media.session.counters().concealed_frames, concealed_at_10);
}

#[test]
fn a_flood_at_the_port_is_read_in_one_tick_and_counted() {
    // Behind NAT the caller's latch never settles, so the socket stays open to every source.
    let mut r = rig_with_sdp_address(Some(NAT_SDP_ADDRESS.parse().expect("addr")));
    let stranger = bind();
    let mut tx = RtpSender::new(66, 1, 0);
    let mut pkt = [0u8; 256];
    // The real caller speaks first, so it is the latched source.
    let len = tx
        .write_packet(0, false, &[0xFF; FRAME_SAMPLES], &mut pkt)
        .expect("packet");
    r.caller.send_to(&pkt[..len], r.ivrd_rtp).expect("send");
    r.tick(1);
    for _ in 0..100 {
        stranger.send_to(&pkt[..len], r.ivrd_rtp).expect("send");
    }
    stranger.send_to(&[0u8; 1500], r.ivrd_rtp).expect("send");
    // Tick 2 is not this call's read tick; tick 3 is.
    r.tick(2);
    r.tick(3);
    let after_one = r.media.session.counters();
    // The whole backlog is read at once, so the caller's next packet is not stuck behind it.
    assert_eq!(after_one.unexpected_source + after_one.malformed, 101);
    for n in 4..=7 {
        r.tick(n);
    }
    let all = r.media.session.counters();
    assert_eq!(all.unexpected_source, 100);
    assert_eq!(all.malformed, 1);
}

#[test]
fn a_settled_caller_gets_the_socket_to_itself_until_a_new_offer() {
    let mut r = rig();
    let caller_addr = r.caller.local_addr().expect("addr");
    let stranger = bind();
    // Two sources, each with its own SSRC and sequence.
    let (mut caller_tx, mut stranger_tx) = (RtpSender::new(66, 1, 0), RtpSender::new(99, 500, 0));
    let mut pkt = [0u8; 256];
    let mut speak = |tx: &mut RtpSender, from: &UdpSocket, to| {
        let len = tx
            .write_packet(0, false, &[0xFF; FRAME_SAMPLES], &mut pkt)
            .expect("packet");
        from.send_to(&pkt[..len], to).expect("send");
    };
    assert!(
        r.media.rtp.peer_addr().is_err(),
        "open until the caller speaks"
    );
    speak(&mut caller_tx, &r.caller, r.ivrd_rtp);
    // Tick 1 reads this call (key 1): the caller's SDP address latches and settles.
    r.tick(1);
    assert_eq!(r.media.rtp.peer_addr().ok(), Some(caller_addr));
    // The stranger's packets go before the caller's next one, which still arrives (its second
    // packet ends RFC 3550 probation: one received); the kernel dropped the stranger's, so the
    // session never saw them (unsettled, it counts them: the flood test above).
    for _ in 0..5 {
        speak(&mut stranger_tx, &stranger, r.ivrd_rtp);
    }
    speak(&mut caller_tx, &r.caller, r.ivrd_rtp);
    r.tick(2);
    r.tick(3);
    assert_eq!(r.media.session.counters().unexpected_source, 0);
    assert_eq!(r.media.session.receiver().received(), 1);
    assert_eq!(r.media.session.receiver().ssrc(), Some(66));
    // Our audio still reaches the caller through the connected socket.
    assert_eq!(r.received(), vec![100, 101, 102]);
    // A new offer names the stranger's address: the socket opens at once, and the stranger's
    // first packet (now the caller's) latches and settles the new peer.
    let stranger_addr = stranger.local_addr().expect("addr");
    let now = r.clock(3).now;
    r.media
        .on_command(now, MediaCommand::Update(session_params(stranger_addr)));
    assert!(r.media.rtp.peer_addr().is_err(), "open for the new address");
    speak(&mut stranger_tx, &stranger, r.ivrd_rtp);
    r.tick(5);
    assert_eq!(r.media.rtp.peer_addr().ok(), Some(stranger_addr));
    assert_eq!(r.media.session.receiver().ssrc(), Some(99));
}

#[test]
fn finish_sends_rtcp_bye_and_hands_back_the_session() {
    let mut r = rig();
    r.tick(1);
    let clock = r.clock(2);
    let Rig {
        media,
        mut notices,
        mut scratch,
        caller_rtcp,
        ..
    } = r;
    media.finish(&clock, &mut scratch);
    match notices.try_recv() {
        Ok(MediaNotice::Finished(f)) => assert_eq!(f.session.counters().packets_sent, 1),
        _ => panic!("no Finished notice"),
    }
    let mut buf = [0u8; 512];
    let n = caller_rtcp.recv(&mut buf).expect("RTCP BYE arrived");
    // A compound packet: SR or RR first, then SDES and BYE (PT 203).
    assert!(
        buf[..n]
            .windows(2)
            .any(|w| w[0] & 0xC0 == 0x80 && w[1] == 203)
    );
}

#[test]
fn a_flooded_socket_is_drained_between_ticks_until_a_quiet_tick() {
    let mut r = rig();
    let stranger = bind();
    let to = r.ivrd_rtp;
    let flood = |n: usize| {
        for _ in 0..n {
            stranger.send_to(&[0u8; 40], to).expect("send");
        }
    };
    // The rig's call (key 1) reads at odd ticks (every other, spread by key).
    flood(FLOODED_READS_PER_TICK - 1);
    r.tick(1);
    assert!(!r.media.is_flooded(), "below the threshold");
    flood(FLOODED_READS_PER_TICK);
    r.tick(2);
    assert!(
        !r.media.is_flooded(),
        "tick 2 does not read this call's socket"
    );
    r.tick(3);
    assert!(r.media.is_flooded());
    // Between ticks a flooded socket is read, and what was read counts for the next tick.
    flood(10);
    let clock = r.clock(3);
    r.media.drain_flood(&clock, &mut r.scratch.batch);
    assert_eq!(
        r.media.session.counters().malformed,
        2 * FLOODED_READS_PER_TICK as u64 + 9
    );
    flood(FLOODED_READS_PER_TICK - 10);
    // A flooded socket is read on every tick, not every other one.
    r.tick(4);
    assert!(r.media.is_flooded(), "10 drained + 54 at the tick");
    r.tick(5);
    assert!(!r.media.is_flooded(), "a quiet tick ends it");
    // A socket that is not flooded is left to the tick.
    flood(5);
    let clock = r.clock(5);
    r.media.drain_flood(&clock, &mut r.scratch.batch);
    assert_eq!(
        r.media.session.counters().malformed,
        3 * FLOODED_READS_PER_TICK as u64 - 1
    );
}

#[test]
fn an_arrival_is_the_kernels_receive_time_placed_on_the_ticks_clock() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let clock = TickClock {
        now,
        wall,
        ntp: crate::media::rtcp::NtpTimestamp::from_unix(Duration::from_secs(1)),
        count: 0,
    };
    let ms = Duration::from_millis;
    assert_eq!(clock.arrival(Some(wall - ms(70))), now - ms(70));
    assert_eq!(
        clock.arrival(Some(wall - MAX_ARRIVAL_AGE)),
        now - MAX_ARRIVAL_AGE
    );
    // No stamp, a stamp from during the tick's work, one from before a wall-clock step.
    assert_eq!(clock.arrival(None), now);
    assert_eq!(clock.arrival(Some(wall + ms(3))), now);
    assert_eq!(clock.arrival(Some(wall - MAX_ARRIVAL_AGE - ms(1))), now);
}

#[test]
fn jitter_counts_from_when_packets_arrived_not_from_when_the_clock_read_them() {
    let mut r = rig();
    let mut tx = RtpSender::new(55, 1, 0);
    let mut pkt = [0u8; 256];
    let mut send = |r: &Rig| {
        let len = tx
            .write_packet(0, false, &[0xFF; FRAME_SAMPLES], &mut pkt)
            .expect("packet");
        tx.advance(FRAME_SAMPLES as u32);
        r.caller.send_to(&pkt[..len], r.ivrd_rtp).expect("send");
    };
    // Two packets 20 ms apart in RTP time, sent back to back, read four ticks (80 ms) apart.
    send(&r);
    r.tick(1);
    send(&r);
    r.tick(5);
    assert_eq!(r.media.session.receiver().packets(), 2);
    // RFC 3550 A.8: J = |D| / 16 after the second packet. Arrival-based, |D| is the 160
    // samples between the timestamps less the real gap between the sends (well under 10 ms
    // = 80 samples, even on a busy machine): J from 5 to 10. Read-based it would be the 640
    // samples between the reads less the 160: J = 30.
    let jitter = r.media.session.receiver().jitter();
    assert!((5..=10).contains(&jitter), "jitter {jitter} samples");
}
