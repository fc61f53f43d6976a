//! Proof that a call's per-packet and per-tick media path allocates nothing: a counting global
//! allocator (per thread) wraps RTP in (audio and RFC 4733), the 20 ms tick with a prompt
//! playing, in-band detection, RTCP reports and SIP INFO digits, after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivrd::media::digit::Digit;
use ivrd::media::dtmf::Rfc4733Encoder;
use ivrd::media::g711::{Codec, FRAME_SAMPLES};
use ivrd::media::prompt::{Prompt, PromptId};
use ivrd::media::rtcp::NtpTimestamp;
use ivrd::media::rtp::RtpSender;
use ivrd::media::session::{MediaSession, SessionParams, TICK, TickOutput};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn media_path_allocates_nothing_per_packet_or_tick() {
    let t0 = Instant::now();
    let caller: SocketAddr = "127.0.0.1:6000".parse().expect("addr");
    let params = SessionParams {
        codec: Codec::Pcmu,
        codec_pt: 0,
        dtmf_pt: Some(101),
        remote: Some(caller),
        peer_receives: true,
        peer_sends: true,
        ssrc: 7,
        initial_seq: 1,
        initial_ts: 0,
        cname: "ivrd@test".into(),
        media_timeout: Duration::from_secs(30),
    };
    let mut session = MediaSession::new(t0, params, 0.5).expect("session");
    let samples: Vec<i16> = (0..FRAME_SAMPLES * 500)
        .map(|i| ((i as f64 * 0.3).sin() * 5000.0) as i16)
        .collect();
    let prompt = Arc::new(Prompt::from_samples(
        PromptId::new("t/long").expect("id"),
        &samples,
    ));
    session.play(prompt);
    let mut tx = RtpSender::new(99, 1, 0);
    let mut packet = [0u8; 256];
    let mut out = TickOutput::default();
    let events: Vec<_> =
        Rfc4733Encoder::new(Digit::D7, 160 * 150, Duration::from_millis(120), 10).collect();
    let payload = [0x55u8; FRAME_SAMPLES];
    let mut measured = 0;
    let mut digits = 0;
    for tick in 0..450u32 {
        let now = t0 + TICK * (tick + 1);
        // After a warm-up of one second (probation, playout anchoring, first RTCP timer).
        let before = allocations();
        let n = tx
            .write_packet(0, false, &payload, &mut packet)
            .expect("rtp");
        tx.advance(FRAME_SAMPLES as u32);
        session.on_rtp(now, caller, &packet[..n]);
        for e in events
            .iter()
            .filter(|e| e.send_offset.as_millis() as u32 / 20 + 150 == tick)
        {
            let n = tx
                .write_event_packet(101, e.marker, e.timestamp, &e.payload, &mut packet)
                .expect("event");
            session.on_rtp(now, caller, &packet[..n]);
        }
        while session.handle_timeout(now, NtpTimestamp(u64::from(tick) << 32), 0.5, &mut out) {}
        while let Some(event) = session.poll_event() {
            if let ivrd::media::session::MediaEvent::Digit(d) = event {
                assert_eq!(d.digit, Digit::D7);
                digits += 1;
            }
        }
        let after = allocations();
        if tick >= 50 {
            assert_eq!(after - before, 0, "tick {tick} allocated");
            measured += 1;
        }
    }
    assert_eq!(measured, 400);
    assert_eq!(digits, 1, "the RFC 4733 key went through the measured path");
    assert!(session.counters().packets_sent >= 449);
    assert!(session.receiver().packets() >= 450);
}
