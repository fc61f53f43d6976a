//! Fake-clock tests of the per-call media session.

use super::*;
use crate::media::digit::{Digit, DtmfMethod};
use crate::media::dtmf::Rfc4733Encoder;
use crate::media::rtp::RtpSender;

const CALLER: &str = "127.0.0.1:6000";

fn params() -> SessionParams {
    SessionParams {
        codec: Codec::Pcmu,
        codec_pt: 0,
        dtmf_pt: Some(101),
        remote: Some(CALLER.parse().expect("addr")),
        peer_receives: true,
        peer_sends: true,
        ssrc: 0x1234_5678,
        initial_seq: 65_530,
        initial_ts: 1000,
        cname: "ivrd@test".into(),
        media_timeout: Duration::from_secs(30),
    }
}

/// A caller that sends one PCMU frame of `samples` every 20 ms.
struct Caller {
    tx: RtpSender,
    buf: [u8; 256],
}

impl Caller {
    fn new() -> Caller {
        Caller {
            tx: RtpSender::new(99, 1, 5000),
            buf: [0; 256],
        }
    }

    fn frame(&mut self, samples: &[i16; FRAME_SAMPLES]) -> &[u8] {
        let mut payload = [0u8; FRAME_SAMPLES];
        Codec::Pcmu.encode(samples, &mut payload);
        let n = self
            .tx
            .write_packet(0, false, &payload, &mut self.buf)
            .expect("packet");
        self.tx.advance(FRAME_SAMPLES as u32);
        &self.buf[..n]
    }
}

fn tone(freqs: &[f64], amplitude: f64, tick: usize) -> [i16; FRAME_SAMPLES] {
    let mut out = [0i16; FRAME_SAMPLES];
    for (i, s) in out.iter_mut().enumerate() {
        let t = (tick * FRAME_SAMPLES + i) as f64 / 8000.0;
        let v: f64 = freqs
            .iter()
            .map(|f| (2.0 * std::f64::consts::PI * f * t).sin())
            .sum();
        *s = (v * amplitude) as i16;
    }
    out
}

/// Packets sent (with their tick time) and the caller channel per tick.
type Ran = (Vec<(Instant, Vec<u8>)>, Vec<[i16; FRAME_SAMPLES]>);

/// Runs the session for `ticks` media ticks, feeding `caller_frame(tick)` before each.
fn run(
    s: &mut MediaSession,
    t0: Instant,
    ticks: usize,
    mut feed: impl FnMut(usize, Instant, &mut MediaSession),
) -> Ran {
    let mut out = TickOutput::default();
    let mut sent = Vec::new();
    let mut caller_audio = Vec::new();
    for tick in 0..ticks {
        let now = t0 + TICK * (tick as u32 + 1);
        feed(tick, now, s);
        while s.poll_timeout() <= now {
            if !s.handle_timeout(now, NtpTimestamp(0), 0.5, &mut out) {
                break;
            }
            if out.ticked {
                caller_audio.push(out.caller);
                if out.rtp_len > 0 {
                    sent.push((now, out.rtp[..out.rtp_len].to_vec()));
                }
            }
        }
    }
    (sent, caller_audio)
}

#[test]
fn sends_one_frame_per_tick_with_marker_then_wrapping_sequence() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let (sent, _) = run(&mut s, t0, 10, |_, _, _| {});
    assert_eq!(sent.len(), 10);
    for pair in sent.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            TICK,
            "20 ms spacing on the media clock"
        );
    }
    let parsed: Vec<_> = sent
        .iter()
        .map(|(_, p)| parse_rtp(p).expect("rtp"))
        .collect();
    assert!(
        parsed[0].marker && !parsed[1].marker,
        "marker on the first packet of the talk spurt"
    );
    let seqs: Vec<u16> = parsed.iter().map(|p| p.sequence).collect();
    assert_eq!(seqs[..7], [65530, 65531, 65532, 65533, 65534, 65535, 0]);
    assert_eq!(parsed[1].timestamp.wrapping_sub(parsed[0].timestamp), 160);
    assert!(
        parsed.iter().all(|p| p.payload.iter().all(|b| *b == 0xFF)),
        "silence while nothing plays"
    );
}

#[test]
fn prompt_frames_play_then_report_finished() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let samples = tone(&[1000.0], 8000.0, 0);
    let prompt = Arc::new(Prompt::from_samples(
        PromptId::new("test/hello").expect("id"),
        &[samples, samples, samples].concat(),
    ));
    s.play(prompt);
    let (sent, _) = run(&mut s, t0, 5, |_, _, _| {});
    let loud = sent
        .iter()
        .filter(|(_, p)| {
            parse_rtp(p)
                .expect("rtp")
                .payload
                .iter()
                .any(|b| *b != 0xFF)
        })
        .count();
    assert_eq!(loud, 3);
    assert_eq!(
        s.poll_event(),
        Some(MediaEvent::PromptFinished(
            PromptId::new("test/hello").expect("id")
        ))
    );
    assert!(!s.is_playing());
}

#[test]
fn symmetric_rtp_latches_the_first_source_and_counts_strangers() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let mut caller = Caller::new();
    let nat: SocketAddr = "192.0.2.50:40000".parse().expect("addr");
    let silence = [0i16; FRAME_SAMPLES];
    let (sent, _) = run(&mut s, t0, 5, |tick, now, s| {
        s.on_rtp(now, nat, caller.frame(&silence));
        if tick == 2 {
            s.on_rtp(
                now,
                "198.51.100.1:9".parse().expect("addr"),
                caller.frame(&silence),
            );
        }
    });
    assert_eq!(s.counters().unexpected_source, 1);
    assert_eq!(sent.len(), 5);
    let mut out = TickOutput::default();
    while !out.ticked {
        s.handle_timeout(t0 + Duration::from_secs(1), NtpTimestamp(0), 0.5, &mut out);
    }
    assert_eq!(
        out.rtp_to,
        Some(nat),
        "we answer where the caller's RTP comes from"
    );
    assert_eq!(
        s.settled_peer(),
        None,
        "behind NAT the SDP address may still take the latch over"
    );
}

#[test]
fn the_sdp_address_takes_the_media_back_from_a_stranger_who_spoke_first() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let (mut caller, mut stranger) = (Caller::new(), Caller::new());
    let intruder: SocketAddr = "198.51.100.1:9".parse().expect("addr");
    let sdp: SocketAddr = CALLER.parse().expect("addr");
    let silence = [0i16; FRAME_SAMPLES];
    run(&mut s, t0, 6, |tick, now, s| {
        s.on_rtp(now, intruder, stranger.frame(&silence));
        assert_eq!(
            s.settled_peer(),
            (tick >= 3).then_some(sdp),
            "tick {tick}: settled from the caller's first packet (tick 2) on"
        );
        if tick >= 2 {
            s.on_rtp(now, sdp, caller.frame(&silence));
            assert_eq!(s.settled_peer(), Some(sdp));
        }
    });
    // Ticks 0-2 the stranger's packets come first and hold the latch; the caller's first packet
    // (tick 2) takes it, and the stranger's packets of ticks 3-5 are counted as unexpected.
    assert_eq!(s.counters().unexpected_source, 3);
    let mut out = TickOutput::default();
    while !out.ticked {
        s.handle_timeout(t0 + Duration::from_secs(1), NtpTimestamp(0), 0.5, &mut out);
    }
    assert_eq!(out.rtp_to, Some(sdp), "our audio goes to the caller again");
    // A new offer with a new address unsettles the peer until that address speaks.
    let moved: SocketAddr = "203.0.113.7:5004".parse().expect("addr");
    let later = t0 + Duration::from_secs(2);
    s.update(
        later,
        SessionParams {
            remote: Some(moved),
            ..params()
        },
    );
    assert_eq!(s.settled_peer(), None);
    s.on_rtp(later, moved, caller.frame(&silence));
    assert_eq!(s.settled_peer(), Some(moved));
}

#[test]
fn caller_audio_reaches_the_recorder_channel() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let mut caller = Caller::new();
    let src: SocketAddr = CALLER.parse().expect("addr");
    let (_, audio) = run(&mut s, t0, 20, |tick, now, s| {
        s.on_rtp(now, src, caller.frame(&tone(&[440.0], 6000.0, tick)))
    });
    let energy = |f: &[i16; FRAME_SAMPLES]| f.iter().map(|v| i64::from(*v).abs()).sum::<i64>();
    assert!(
        energy(&audio[0]) == 0,
        "the playout delay starts with silence"
    );
    assert!(
        audio[10..].iter().all(|f| energy(f) > 100_000),
        "then the caller's tone"
    );
}

/// Runs `ticks` ticks of a caller who sends an RFC 4733 key 5 from tick 5 and an in-band tone
/// of `freqs` during `inband`, and returns the digits the session reported.
fn rfc4733_key_5_with_inband(
    ticks: usize,
    inband: std::ops::Range<usize>,
    freqs: [f64; 2],
) -> Vec<(Digit, DtmfMethod)> {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let mut caller = Caller::new();
    let src: SocketAddr = CALLER.parse().expect("addr");
    let events: Vec<_> =
        Rfc4733Encoder::new(Digit::D5, 5000, Duration::from_millis(100), 10).collect();
    let mut buf = [0u8; 64];
    run(&mut s, t0, ticks, |tick, now, s| {
        let frame = if inband.contains(&tick) {
            tone(&freqs, 5000.0, tick)
        } else {
            [0; FRAME_SAMPLES]
        };
        s.on_rtp(now, src, caller.frame(&frame));
        for e in events
            .iter()
            .filter(|e| e.send_offset.as_millis() as usize / 20 + 5 == tick)
        {
            let n = caller
                .tx
                .write_event_packet(101, e.marker, e.timestamp, &e.payload, &mut buf)
                .expect("event");
            s.on_rtp(now, src, &buf[..n]);
        }
    });
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Digit(d) => Some((d.digit, d.method)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc4733_and_inband_for_the_same_press_report_once() {
    // Key 5 = 770 Hz + 1336 Hz, in-band at -10 dBm0-ish too, during ticks 5..15.
    let digits = rfc4733_key_5_with_inband(30, 5..15, [770.0, 1336.0]);
    assert_eq!(digits, [(Digit::D5, DtmfMethod::Rfc4733)]);
}

#[test]
fn inband_detection_stops_after_the_first_rfc4733_key() {
    // An in-band-only key 1 (697 + 1209 Hz) long after the RFC 4733 key 5.
    let digits = rfc4733_key_5_with_inband(60, 30..40, [697.0, 1209.0]);
    assert_eq!(digits, [(Digit::D5, DtmfMethod::Rfc4733)]);
}

#[test]
fn inband_only_and_info_digits_carry_their_method() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let mut caller = Caller::new();
    let src: SocketAddr = CALLER.parse().expect("addr");
    run(&mut s, t0, 25, |tick, now, s| {
        let frame = if (3..10).contains(&tick) {
            tone(&[941.0, 1209.0], 5000.0, tick)
        } else {
            [0; FRAME_SAMPLES]
        };
        s.on_rtp(now, src, caller.frame(&frame));
    });
    assert!(
        matches!(s.poll_event(), Some(MediaEvent::Digit(d)) if d.digit == Digit::Star && d.method == DtmfMethod::Inband)
    );
    assert!(s.on_info(
        t0 + Duration::from_secs(2),
        "application/dtmf-relay",
        b"Signal=#\r\nDuration=160\r\n"
    ));
    assert!(
        matches!(s.poll_event(), Some(MediaEvent::Digit(d)) if d.digit == Digit::Pound && d.method == DtmfMethod::Info)
    );
    assert!(!s.on_info(t0, "text/plain", b"hi"));
}

#[test]
fn media_timeout_fires_once_and_not_while_held() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    assert_eq!(s.poll_timeout(), t0 + TICK);
    let mut out = TickOutput::default();
    let late = t0 + Duration::from_secs(30);
    while s.handle_timeout(late, NtpTimestamp(0), 0.5, &mut out) {}
    assert_eq!(
        std::iter::from_fn(|| s.poll_event())
            .filter(|e| *e == MediaEvent::MediaTimeout)
            .count(),
        1
    );
    let mut held = MediaSession::new(
        t0,
        SessionParams {
            peer_sends: false,
            peer_receives: false,
            ..params()
        },
        0.5,
    )
    .expect("session");
    while held.handle_timeout(late, NtpTimestamp(0), 0.5, &mut out) {
        assert_eq!(out.rtp_len, 0, "nothing is sent while the caller holds");
    }
    assert_eq!(held.poll_event(), None);
}

#[test]
fn rtcp_reports_go_to_the_odd_port() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let mut out = TickOutput::default();
    let mut reports = 0;
    let end = t0 + Duration::from_secs(12);
    let mut now = t0;
    while now < end {
        now = s.poll_timeout();
        while s.handle_timeout(now, NtpTimestamp(1 << 32), 0.5, &mut out) {
            if out.rtcp_len > 0 {
                reports += 1;
                assert_eq!(out.rtcp_to, Some("127.0.0.1:6001".parse().expect("addr")));
                assert_eq!(out.rtcp[1], 200, "an SR: we have been sending");
            }
        }
    }
    assert!((2..=4).contains(&reports), "about every 5 s: {reports}");
    let mut buf = [0u8; 256];
    let (n, _) = s.goodbye(end, NtpTimestamp(0), &mut buf).expect("bye");
    assert!(
        buf[..n].windows(2).any(|w| w[1] == 203),
        "carries an RTCP BYE"
    );
}

#[test]
fn event_numbering_restart_with_an_earlier_timestamp_is_a_new_key() {
    // SIPp replaying its dtmf_2833_9 then dtmf_2833_0 captures while streaming audio: the events
    // have their own SSRC, the `0` jumps 3780 ahead in sequence and 50208 back in timestamp.
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, params(), 0.5).expect("session");
    let mut caller = Caller::new();
    let mut events = RtpSender::new(0x0e05_384e, 8293, 0);
    let src: SocketAddr = CALLER.parse().expect("addr");
    let nine: Vec<_> =
        Rfc4733Encoder::new(Digit::D9, 67_840, Duration::from_millis(100), 10).collect();
    let zero: Vec<_> =
        Rfc4733Encoder::new(Digit::D0, 17_632, Duration::from_millis(100), 10).collect();
    let mut buf = [0u8; 64];
    run(&mut s, t0, 40, |tick, now, s| {
        s.on_rtp(now, src, caller.frame(&[0; FRAME_SAMPLES]));
        if tick == 20 {
            events = RtpSender::new(0x0e05_384e, 12_080, 0);
        }
        for (start, press) in [(5, &nine), (20, &zero)] {
            let due = press
                .iter()
                .filter(|e| e.send_offset.as_millis() as usize / 20 + start == tick);
            for e in due {
                let n = events
                    .write_event_packet(101, e.marker, e.timestamp, &e.payload, &mut buf)
                    .expect("event");
                s.on_rtp(now, src, &buf[..n]);
            }
        }
    });
    let digits: Vec<_> = std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Digit(d) => Some(d.digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, [Digit::D9, Digit::D0]);
}
