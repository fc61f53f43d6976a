use super::*;
use crate::media::rtp::ParsedRtp;

const OURS: u32 = 0x0A0B_0C0D;
const CALLER: u32 = 0x1122_3344;

fn caller_packet(seq: u16) -> ParsedRtp<'static> {
    ParsedRtp {
        payload_type: 8,
        marker: false,
        sequence: seq,
        timestamp: u32::from(seq) * 160,
        ssrc: CALLER,
        payload: &[0xD5; 160],
    }
}

fn packets(buf: &[u8]) -> Vec<RtcpPacket<'_>> {
    parse_compound(buf).collect::<Result<_, _>>().unwrap()
}

#[test]
fn ntp_conversion_and_middle_bits() {
    let ntp = NtpTimestamp::from_unix(Duration::new(1, 500_000_000));
    assert_eq!(ntp.0 >> 32, 2_208_988_801);
    assert_eq!(ntp.0 as u32, 0x8000_0000, "half a second");
    assert_eq!(NtpTimestamp(0x1234_5678_9ABC_DEF0).middle32(), 0x5678_9ABC);
}

#[test]
fn fraction_lost_follows_rfc3550_a3() {
    let f = |expected, received| fraction_lost(IntervalCounts { expected, received });
    assert_eq!(f(0, 0), 0);
    assert_eq!(f(100, 100), 0);
    assert_eq!(f(100, 75), 64, "25 % is 64/256");
    assert_eq!(f(4, 3), 64);
    assert_eq!(f(10, 0), 255, "all lost saturates below 256");
    assert_eq!(f(10, 12), 0, "duplicates do not make a negative fraction");
}

#[test]
fn cumulative_lost_is_clamped_to_24_bits() {
    assert_eq!(clamp_cumulative_lost(5), 5);
    assert_eq!(clamp_cumulative_lost(10_000_000), 0x7F_FFFF);
    assert_eq!(clamp_cumulative_lost(-10_000_000), -0x80_0000);
    let block = ReportBlock {
        ssrc: 1,
        fraction_lost: 0,
        cumulative_lost: -3,
        ext_highest_seq: 0,
        jitter: 0,
        lsr: 0,
        dlsr: 0,
    };
    let mut out = [0u8; 64];
    let n = write_rr(&mut out, OURS, Some(&block)).unwrap();
    assert_eq!(
        &out[12..16],
        &[0x00, 0xFF, 0xFF, 0xFD],
        "24-bit two's complement"
    );
    let got: Vec<_> = match packets(&out[..n])[0] {
        RtcpPacket::ReceiverReport { blocks, .. } => blocks.collect(),
        ref other => panic!("{other:?}"),
    };
    assert_eq!(got, vec![block]);
}

#[test]
fn sr_layout_is_byte_exact() {
    let info = SenderInfo {
        ntp: NtpTimestamp(0x0102_0304_0506_0708),
        rtp_timestamp: 0x1111_2222,
        packet_count: 7,
        octet_count: 1120,
    };
    let block = ReportBlock {
        ssrc: CALLER,
        fraction_lost: 64,
        cumulative_lost: 25,
        ext_highest_seq: 0x0001_0005,
        jitter: 12,
        lsr: 0xAABB_CCDD,
        dlsr: 0x0002_0000,
    };
    let mut out = [0u8; 128];
    let n = write_sr(&mut out, OURS, &info, Some(&block)).unwrap();
    assert_eq!(n, 52);
    #[rustfmt::skip]
    let want: [u8; 52] = [
        0x81, 200, 0, 12, 0x0A, 0x0B, 0x0C, 0x0D,
        1, 2, 3, 4, 5, 6, 7, 8,
        0x11, 0x11, 0x22, 0x22, 0, 0, 0, 7, 0, 0, 0x04, 0x60,
        0x11, 0x22, 0x33, 0x44, 64, 0, 0, 25, 0, 1, 0, 5, 0, 0, 0, 12,
        0xAA, 0xBB, 0xCC, 0xDD, 0, 2, 0, 0,
    ];
    assert_eq!(&out[..n], &want);
    match packets(&out[..n])[0] {
        RtcpPacket::SenderReport {
            ssrc,
            ntp,
            rtp_timestamp,
            packet_count,
            octet_count,
            blocks,
        } => {
            assert_eq!(
                (ssrc, ntp, rtp_timestamp),
                (OURS, info.ntp, info.rtp_timestamp)
            );
            assert_eq!((packet_count, octet_count), (7, 1120));
            assert_eq!(blocks.collect::<Vec<_>>(), vec![block]);
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn sdes_and_bye_are_word_aligned_and_parse_back() {
    let mut out = [0u8; 64];
    let n = write_sdes_cname(&mut out, OURS, "ivrd@hn").unwrap();
    // 4 header + 4 SSRC + 1 type + 1 len + 7 text + END, rounded up to 20.
    assert_eq!(n, 20);
    assert_eq!(&out[..4], &[0x81, 202, 0, 4]);
    assert_eq!(&out[17..20], &[0, 0, 0]);
    assert_eq!(
        packets(&out[..n]),
        vec![RtcpPacket::Sdes {
            ssrc: OURS,
            cname: Some(&b"ivrd@hn"[..])
        }]
    );
    let n = write_bye(&mut out, OURS, Some("hangup")).unwrap();
    assert_eq!(n, 16);
    assert_eq!(&out[..4], &[0x81, 203, 0, 3]);
    assert_eq!(
        packets(&out[..n]),
        vec![RtcpPacket::Bye {
            ssrcs: &OURS.to_be_bytes()[..],
            reason: Some(&b"hangup"[..])
        }]
    );
    assert_eq!(write_bye(&mut out, OURS, None), Ok(8));
    assert!(matches!(
        write_bye(&mut out, OURS, Some(&"x".repeat(300))),
        Err(RtcpError::TextTooLong { len: 300 })
    ));
}

#[test]
fn session_sends_rr_until_it_sends_media_then_sr() {
    let t0 = Instant::now();
    let mut session = RtcpSession::new(OURS, "ivrd@test").unwrap();
    let mut tx = RtpSender::new(OURS, 0, 1000);
    let mut rx = RtpReceiver::new(8000);
    let mut out = [0u8; 256];
    let ntp = NtpTimestamp(1 << 32);
    // Nothing sent, nothing valid received: an empty RR and SDES.
    let n = session
        .write_report(t0, ntp, &tx, &mut rx, &mut out)
        .unwrap();
    let kinds: Vec<_> = packets(&out[..n]);
    assert!(matches!(kinds[0], RtcpPacket::ReceiverReport { blocks, .. } if blocks.count() == 0));
    assert!(matches!(kinds[1], RtcpPacket::Sdes { .. }));

    let mut buf = [0u8; 200];
    tx.write_packet(8, false, &[0xD5; 160], &mut buf).unwrap();
    tx.advance(160);
    let n = session
        .write_report(t0, ntp, &tx, &mut rx, &mut out)
        .unwrap();
    match packets(&out[..n])[0] {
        RtcpPacket::SenderReport {
            rtp_timestamp,
            packet_count,
            octet_count,
            ..
        } => assert_eq!((rtp_timestamp, packet_count, octet_count), (1160, 1, 160)),
        ref other => panic!("{other:?}"),
    }
    // Silent for one interval: still a sender (RFC 3550 §6.4, "or the previous one").
    let n = session
        .write_report(t0, ntp, &tx, &mut rx, &mut out)
        .unwrap();
    assert!(matches!(
        packets(&out[..n])[0],
        RtcpPacket::SenderReport { .. }
    ));
    let n = session
        .write_report(t0, ntp, &tx, &mut rx, &mut out)
        .unwrap();
    assert!(matches!(
        packets(&out[..n])[0],
        RtcpPacket::ReceiverReport { .. }
    ));
}

#[test]
fn report_block_carries_loss_jitter_and_lsr_dlsr() {
    let t0 = Instant::now();
    let mut session = RtcpSession::new(OURS, "ivrd@test").unwrap();
    let tx = RtpSender::new(OURS, 0, 0);
    let mut rx = RtpReceiver::new(8000);
    for seq in [1u16, 2, 3, 5, 6, 7, 8] {
        rx.on_packet(
            t0 + Duration::from_millis(20 * u64::from(seq)),
            &caller_packet(seq),
        );
    }
    // The caller's SR arrives; we report 1.5 s later.
    let mut sr = [0u8; 64];
    let info = SenderInfo {
        ntp: NtpTimestamp(0x0000_1234_5678_0000),
        rtp_timestamp: 0,
        packet_count: 8,
        octet_count: 1280,
    };
    let n = write_sr(&mut sr, CALLER, &info, None).unwrap();
    let summary = session.on_rtcp(t0, &sr[..n]).unwrap();
    assert!(summary.sender_report);
    assert_eq!(summary.sender_ssrc, Some(CALLER));

    let mut out = [0u8; 256];
    let later = t0 + Duration::from_millis(1500);
    let n = session
        .write_report(later, NtpTimestamp(0), &tx, &mut rx, &mut out)
        .unwrap();
    let block = match packets(&out[..n])[0] {
        RtcpPacket::ReceiverReport { mut blocks, .. } => blocks.next().unwrap(),
        ref other => panic!("{other:?}"),
    };
    // Valid from seq 2: 2..=8 expected (7), 6 received, one lost.
    assert_eq!(block.ssrc, CALLER);
    assert_eq!(block.cumulative_lost, 1);
    assert_eq!(block.fraction_lost, (256 / 7) as u8);
    assert_eq!(block.ext_highest_seq, 8);
    assert_eq!(block.jitter, rx.jitter());
    assert_eq!(block.lsr, 0x1234_5678);
    assert_eq!(block.dlsr, 98_304, "1.5 s in 1/65536 s");
    // The next interval has no new packets: no fresh loss.
    let n = session
        .write_report(later, NtpTimestamp(0), &tx, &mut rx, &mut out)
        .unwrap();
    match packets(&out[..n])[0] {
        RtcpPacket::ReceiverReport { mut blocks, .. } => {
            let b = blocks.next().unwrap();
            assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 1));
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn goodbye_ends_with_bye_and_incoming_bye_is_seen() {
    let t0 = Instant::now();
    let mut session = RtcpSession::new(OURS, "ivrd@test").unwrap();
    let tx = RtpSender::new(OURS, 0, 0);
    let mut rx = RtpReceiver::new(8000);
    let mut out = [0u8; 256];
    let n = session
        .write_goodbye(t0, NtpTimestamp(0), &tx, &mut rx, Some("bye"), &mut out)
        .unwrap();
    let all = packets(&out[..n]);
    assert_eq!(all.len(), 3);
    assert!(matches!(
        all[2],
        RtcpPacket::Bye {
            reason: Some(b"bye"),
            ..
        }
    ));

    let mut peer = RtcpSession::new(CALLER, "caller").unwrap();
    let summary = peer.on_rtcp(t0, &out[..n]).unwrap();
    assert!(summary.bye);
    assert!(!summary.sender_report);
}

#[test]
fn malformed_rtcp_is_an_error() {
    let t0 = Instant::now();
    let mut session = RtcpSession::new(OURS, "x").unwrap();
    assert_eq!(
        session.on_rtcp(t0, &[0x40, 201, 0, 1, 0, 0, 0, 0]),
        Err(RtcpError::BadVersion { version: 1 })
    );
    assert!(matches!(
        session.on_rtcp(t0, &[0x80, 201, 0, 5, 0, 0, 0, 0]),
        Err(RtcpError::Truncated { needed: 24, .. })
    ));
    // RR claiming one block but carrying none.
    assert_eq!(
        session.on_rtcp(t0, &[0x81, 201, 0, 1, 0, 0, 0, 0]),
        Err(RtcpError::BadLength {
            packet_type: 201,
            count: 1
        })
    );
    let mut sdes = [0u8; 32];
    let n = write_sdes_cname(&mut sdes, CALLER, "c").unwrap();
    assert_eq!(
        session.on_rtcp(t0, &sdes[..n]),
        Err(RtcpError::NotCompound { packet_type: 202 })
    );
    assert!(RtcpSession::new(OURS, &"x".repeat(256)).is_err());
}

#[test]
fn report_interval_is_randomised_around_five_seconds() {
    assert_eq!(report_interval(0.0, false), Duration::from_millis(2500));
    assert_eq!(report_interval(0.5, false), Duration::from_secs(5));
    assert_eq!(report_interval(1.0, false), Duration::from_millis(7500));
    assert_eq!(report_interval(0.5, true), Duration::from_millis(2500));
    assert_eq!(report_interval(f64::NAN, false), Duration::from_secs(5));
}

#[test]
fn small_buffers_are_refused() {
    let mut out = [0u8; 10];
    assert_eq!(
        write_rr(&mut out, OURS, None),
        Ok(8),
        "an empty RR fits in 8 bytes"
    );
    assert_eq!(
        write_sdes_cname(&mut out, OURS, "abcdef"),
        Err(RtcpError::BufferTooSmall {
            needed: 20,
            available: 10
        })
    );
}
