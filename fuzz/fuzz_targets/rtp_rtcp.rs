//! RTP and RTCP parsing and the per-call media state fed hostile packets.
//!
//! The whole input goes to `parse_rtp`, `parse_compound` (every report block read) and
//! `RtcpSession::on_rtcp`; then a `MediaSession` receives it and its 172-byte slices as RTP and
//! RTCP from the latched source, with 20 ms ticks between them. Invariants: no panic, a parsed
//! payload lies inside the datagram, and the session's counters only grow.

#![no_main]

use ivrd::media::g711::Codec;
use ivrd::media::rtcp::{NtpTimestamp, RtcpPacket, RtcpSession, parse_compound};
use ivrd::media::rtp::parse_rtp;
use ivrd::media::session::{MediaSession, SessionParams, TickOutput};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_rtp(data) {
        assert!(p.payload.len() <= data.len().saturating_sub(12));
    }
    for packet in parse_compound(data) {
        match packet {
            Ok(RtcpPacket::SenderReport { blocks, .. })
            | Ok(RtcpPacket::ReceiverReport { blocks, .. }) => {
                blocks.for_each(drop);
            }
            _ => {}
        }
    }
    let t0 = Instant::now();
    if let Ok(mut rtcp) = RtcpSession::new(0x1234_5678, "ivrd@fuzz") {
        let _ = rtcp.on_rtcp(t0, data);
    }
    media_session(t0, data);
});

fn media_session(t0: Instant, data: &[u8]) {
    let peer: SocketAddr = "192.0.2.9:40000".parse().expect("literal");
    let params = SessionParams {
        codec: Codec::Pcmu,
        codec_pt: 0,
        dtmf_pt: Some(101),
        remote: Some(peer),
        peer_receives: true,
        peer_sends: true,
        ssrc: 0x0A0B_0C0D,
        initial_seq: 1,
        initial_ts: 0,
        cname: "ivrd@fuzz".into(),
        media_timeout: Duration::from_secs(5),
    };
    let Ok(mut session) = MediaSession::new(t0, params, 0.5) else {
        return;
    };
    let mut out = TickOutput::default();
    let mut now = t0;
    let packets = std::iter::once(data).chain(data.chunks(172));
    for (i, packet) in packets.enumerate().take(64) {
        session.on_rtp(now, peer, packet);
        if i % 4 == 3 {
            session.on_rtcp(now, packet);
        }
        now += Duration::from_millis(20);
        let mut catch_up = 0;
        while session.handle_timeout(now, NtpTimestamp(0), 0.5, &mut out) {
            catch_up += 1;
            assert!(catch_up < 1_000, "media clock does not catch up");
            assert!(out.rtp_len <= out.rtp.len() && out.rtcp_len <= out.rtcp.len());
        }
        while session.poll_event().is_some() {}
    }
}
