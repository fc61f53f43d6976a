use super::*;

const SSRC: u32 = 0x1234_5678;
const PAYLOAD: [u8; 160] = [0xFF; 160];

fn packet(seq: u16, ts: u32) -> ParsedRtp<'static> {
    ParsedRtp {
        payload_type: 0,
        marker: false,
        sequence: seq,
        timestamp: ts,
        ssrc: SSRC,
        payload: &PAYLOAD,
    }
}

/// A receiver that has validated a source whose last packet was `seq`.
fn validated(start: u16, t0: Instant) -> RtpReceiver {
    let mut rx = RtpReceiver::new(8000);
    assert_eq!(
        rx.on_packet(t0, &packet(start.wrapping_sub(1), 0)),
        RxVerdict::Probation
    );
    assert_eq!(
        rx.on_packet(t0, &packet(start, 160)),
        RxVerdict::Restart {
            ext_seq: u64::from(start)
        }
    );
    rx
}

#[test]
fn sender_writes_a_header_that_parses_back() {
    let mut tx = RtpSender::new(SSRC, 4321, 99_000);
    let mut out = [0u8; 200];
    let n = tx.write_packet(8, false, &[1, 2, 3], &mut out).unwrap();
    assert_eq!(n, 15);
    assert_eq!(
        &out[..2],
        &[0x80, 0x80 | 8],
        "V=2 and the first packet's marker"
    );
    let p = parse_rtp(&out[..n]).unwrap();
    assert_eq!(
        (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc),
        (8, true, 4321, 99_000, SSRC)
    );
    assert_eq!(p.payload, &[1, 2, 3]);
    assert_eq!((tx.packet_count(), tx.octet_count()), (1, 3));
}

#[test]
fn marker_is_set_once_per_talkspurt() {
    let mut tx = RtpSender::new(SSRC, 0, 0);
    let mut out = [0u8; 200];
    let mut marker = |tx: &mut RtpSender| {
        let n = tx.write_packet(0, false, &PAYLOAD, &mut out).unwrap();
        tx.advance(160);
        parse_rtp(&out[..n]).unwrap().marker
    };
    assert!(marker(&mut tx));
    assert!(!marker(&mut tx));
    tx.start_talkspurt();
    assert!(marker(&mut tx));
    assert!(!marker(&mut tx));
}

#[test]
fn timestamp_follows_the_media_clock_when_nothing_is_sent() {
    let mut tx = RtpSender::new(SSRC, 7, 1000);
    let mut out = [0u8; 200];
    tx.write_packet(0, false, &PAYLOAD, &mut out).unwrap();
    tx.advance(160);
    // Three frames on hold: no packets, the clock still runs.
    for _ in 0..3 {
        tx.advance(160);
    }
    let n = tx.write_packet(0, false, &PAYLOAD, &mut out).unwrap();
    let p = parse_rtp(&out[..n]).unwrap();
    assert_eq!(p.timestamp, 1000 + 4 * 160);
    assert_eq!(p.sequence, 8, "no sequence gap for unsent frames");
}

#[test]
fn sequence_wraps_at_2_16_and_timestamp_at_2_32() {
    let mut tx = RtpSender::new(SSRC, 65535, u32::MAX - 100);
    let mut out = [0u8; 200];
    let n = tx.write_packet(0, false, &PAYLOAD, &mut out).unwrap();
    assert_eq!(parse_rtp(&out[..n]).unwrap().sequence, 65535);
    tx.advance(160);
    let n = tx.write_packet(0, false, &PAYLOAD, &mut out).unwrap();
    let p = parse_rtp(&out[..n]).unwrap();
    assert_eq!(p.sequence, 0);
    assert_eq!(p.timestamp, 59, "u32::MAX - 100 + 160 mod 2^32");
}

#[test]
fn event_packets_share_ssrc_and_sequence_but_keep_their_timestamp() {
    let mut tx = RtpSender::new(SSRC, 10, 5000);
    let mut out = [0u8; 200];
    tx.write_packet(0, false, &PAYLOAD, &mut out).unwrap();
    tx.advance(160);
    let n = tx
        .write_event_packet(101, true, 4800, &[5, 10, 0, 160], &mut out)
        .unwrap();
    let p = parse_rtp(&out[..n]).unwrap();
    assert_eq!(
        (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc),
        (101, true, 11, 4800, SSRC)
    );
    assert_eq!(tx.timestamp(), 5160, "media clock untouched");
}

#[test]
fn small_output_buffer_is_an_error_not_a_panic() {
    let mut tx = RtpSender::new(SSRC, 0, 0);
    let mut out = [0u8; 100];
    assert_eq!(
        tx.write_packet(0, false, &PAYLOAD, &mut out),
        Err(RtpError::BufferTooSmall {
            needed: 172,
            available: 100
        })
    );
    assert_eq!(tx.next_sequence(), 0);
}

#[test]
fn parser_rejects_bad_versions_truncation_and_oversize() {
    assert_eq!(parse_rtp(&[0x80; 8]), Err(RtpError::TooShort { len: 8 }));
    let mut v1 = [0u8; 12];
    v1[0] = 0x40;
    assert_eq!(parse_rtp(&v1), Err(RtpError::BadVersion { version: 1 }));
    let mut csrc = [0u8; 16];
    csrc[0] = 0x82; // two CSRCs announced, room for one
    assert!(matches!(
        parse_rtp(&csrc),
        Err(RtpError::HeadersTruncated { header_len: 20, .. })
    ));
    let mut big = vec![0u8; RTP_HEADER_LEN + MAX_PAYLOAD_LEN + 1];
    big[0] = 0x80;
    assert_eq!(
        parse_rtp(&big),
        Err(RtpError::PayloadTooLarge {
            len: 1501,
            max: 1500
        })
    );
    let mut pad = [0u8; 14];
    pad[0] = 0xA0;
    pad[13] = 5; // five padding bytes but only two after the header
    assert_eq!(parse_rtp(&pad), Err(RtpError::BadPadding { pad: 5 }));
}

#[test]
fn parser_skips_csrcs_extension_and_padding() {
    let mut buf = vec![0xB1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    buf.extend_from_slice(&[0xAA; 4]); // one CSRC
    buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // extension, one word
    buf.extend_from_slice(&[7, 7, 7]); // payload
    buf.extend_from_slice(&[0, 0, 3]); // padding, count 3
    let p = parse_rtp(&buf).unwrap();
    assert_eq!(p.payload, &[7, 7, 7]);
    assert_eq!((p.sequence, p.timestamp, p.ssrc), (1, 2, 3));
}

#[test]
fn new_source_is_in_probation_until_two_in_sequence() {
    let t0 = Instant::now();
    let mut rx = RtpReceiver::new(8000);
    assert_eq!(rx.on_packet(t0, &packet(100, 0)), RxVerdict::Probation);
    // Out of sequence: probation starts over.
    assert_eq!(rx.on_packet(t0, &packet(300, 0)), RxVerdict::Probation);
    assert_eq!(
        rx.on_packet(t0, &packet(301, 0)),
        RxVerdict::Restart { ext_seq: 301 }
    );
    assert_eq!(
        rx.on_packet(t0, &packet(302, 0)),
        RxVerdict::Accepted { ext_seq: 302 }
    );
    assert_eq!((rx.expected(), rx.received(), rx.lost()), (2, 2, 0));
    assert_eq!(rx.packets(), 4);
    assert_eq!(rx.bytes(), 4 * 160);
}

#[test]
fn receiver_extends_sequence_across_the_wrap() {
    let t0 = Instant::now();
    let mut rx = validated(65534, t0);
    assert_eq!(
        rx.on_packet(t0, &packet(65535, 0)),
        RxVerdict::Accepted { ext_seq: 65535 }
    );
    assert_eq!(
        rx.on_packet(t0, &packet(0, 0)),
        RxVerdict::Accepted { ext_seq: 65536 }
    );
    assert_eq!(
        rx.on_packet(t0, &packet(2, 0)),
        RxVerdict::Accepted { ext_seq: 65538 }
    );
    // 65534..=65538 expected, 65537 missing.
    assert_eq!((rx.expected(), rx.received(), rx.lost()), (5, 4, 1));
}

#[test]
fn gaps_count_as_loss_and_intervals_reset() {
    let t0 = Instant::now();
    let mut rx = validated(11, t0);
    for seq in [12, 15, 16] {
        assert!(matches!(
            rx.on_packet(t0, &packet(seq, 0)),
            RxVerdict::Accepted { .. }
        ));
    }
    assert_eq!((rx.expected(), rx.received(), rx.lost()), (6, 4, 2));
    assert_eq!(
        rx.take_interval(),
        IntervalCounts {
            expected: 6,
            received: 4
        }
    );
    for seq in 17..=20 {
        rx.on_packet(t0, &packet(seq, 0));
    }
    assert_eq!(
        rx.take_interval(),
        IntervalCounts {
            expected: 4,
            received: 4
        }
    );
    assert_eq!(rx.lost(), 2, "cumulative loss stays");
}

#[test]
fn reordered_packets_are_late_and_repeats_are_duplicates() {
    let t0 = Instant::now();
    let mut rx = validated(11, t0);
    rx.on_packet(t0, &packet(12, 0));
    rx.on_packet(t0, &packet(14, 0));
    assert_eq!(
        rx.on_packet(t0, &packet(13, 0)),
        RxVerdict::Late { ext_seq: 13 }
    );
    assert_eq!(rx.lost(), 0);
    assert_eq!(rx.on_packet(t0, &packet(13, 0)), RxVerdict::Duplicate);
    assert_eq!(rx.on_packet(t0, &packet(14, 0)), RxVerdict::Duplicate);
    // RFC 3550 §6.4.1: duplicates count as received, so loss goes negative.
    assert_eq!((rx.expected(), rx.received(), rx.lost()), (4, 6, -2));
    assert_eq!((rx.late(), rx.duplicates()), (1, 2));
}

#[test]
fn ssrc_change_restarts_with_probation() {
    let t0 = Instant::now();
    let mut rx = validated(11, t0);
    rx.on_packet(t0, &packet(12, 0));
    let mut other = packet(5000, 0);
    other.ssrc = 0xDEAD_BEEF;
    assert_eq!(rx.on_packet(t0, &other), RxVerdict::Probation);
    assert_eq!(rx.ssrc_changes(), 1);
    assert_eq!(rx.ssrc(), Some(0xDEAD_BEEF));
    other.sequence = 5001;
    assert_eq!(
        rx.on_packet(t0, &other),
        RxVerdict::Restart { ext_seq: 5001 }
    );
    assert_eq!((rx.expected(), rx.received()), (1, 1));
}

#[test]
fn large_jump_restarts_only_when_confirmed() {
    let t0 = Instant::now();
    let mut rx = validated(100, t0);
    assert_eq!(rx.on_packet(t0, &packet(10_000, 0)), RxVerdict::Probation);
    // Not confirmed: the old stream goes on.
    assert_eq!(
        rx.on_packet(t0, &packet(101, 0)),
        RxVerdict::Accepted { ext_seq: 101 }
    );
    assert_eq!(rx.on_packet(t0, &packet(20_000, 0)), RxVerdict::Probation);
    assert_eq!(
        rx.on_packet(t0, &packet(20_001, 0)),
        RxVerdict::Restart { ext_seq: 20_001 }
    );
}

#[test]
fn jitter_is_zero_for_a_perfectly_paced_stream_across_the_timestamp_wrap() {
    let t0 = Instant::now();
    let mut rx = RtpReceiver::new(8000);
    for i in 0..50u32 {
        let at = t0 + Duration::from_millis(20 * u64::from(i));
        rx.on_packet(
            at,
            &packet(i as u16, (u32::MAX - 3000).wrapping_add(i * 160)),
        );
    }
    assert_eq!(rx.jitter_q4(), 0);
}

#[test]
fn jitter_matches_the_a8_formula_by_hand() {
    // Timestamps 0, 160, 320 arriving at 0, 20, 45 ms (0, 160, 360 in 8 kHz units).
    // Transits: 0, 0, 40. D(1,2) = 0, D(2,3) = 40. J = 0 + (40 - 0) / 16 = 2.5.
    let t0 = Instant::now();
    let mut rx = RtpReceiver::new(8000);
    rx.on_packet(t0, &packet(1, 0));
    rx.on_packet(t0 + Duration::from_millis(20), &packet(2, 160));
    assert_eq!(rx.jitter_q4(), 0);
    rx.on_packet(t0 + Duration::from_millis(45), &packet(3, 320));
    assert_eq!(rx.jitter_q4(), 40, "2.5 in units of 1/16");
    assert_eq!(rx.jitter(), 2, "the report block carries the integer part");
    // Early arrival counts the same as late: |D| = |-40 - 40| = 80.
    // J = 2.5 + (80 - 2.5) / 16 = 7.34375; integer form: 40 + 80 - ((40 + 8) >> 4) = 117.
    rx.on_packet(t0 + Duration::from_millis(55), &packet(4, 480));
    assert_eq!(rx.jitter_q4(), 117);
    assert_eq!(rx.jitter(), 7);
}

#[test]
fn event_packets_do_not_disturb_jitter() {
    let t0 = Instant::now();
    let mut rx = RtpReceiver::new(8000);
    rx.set_event_payload_type(Some(101));
    for i in 0..10u32 {
        let at = t0 + Duration::from_millis(20 * u64::from(i));
        let mut p = packet(i as u16, i * 160);
        if i >= 5 {
            // An RFC 4733 event keeps the timestamp of its start.
            p.payload_type = 101;
            p.timestamp = 5 * 160;
        }
        rx.on_packet(at, &p);
    }
    assert_eq!(rx.jitter_q4(), 0);
    assert_eq!(rx.expected(), 9);
}
