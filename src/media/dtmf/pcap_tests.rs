//! RFC 4733 decoding checked against real captures: the `dtmf_2833_*.pcap` files that SIPp ships
//! (they are not ours, so they are read from the installed SIPp package and the test skips when they
//! are absent), plus a capture built here from [`Rfc4733Encoder`] output in the same layout.
//!
//! The reader understands just what these files use: classic libpcap (24-byte global header,
//! 16-byte record headers), Ethernet, IPv4, UDP, RTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{DtmfStream, Rfc4733Decoder, Rfc4733Encoder};
use crate::media::digit::Digit;

/// The telephone-event payload type in SIPp's captures.
const SIPP_EVENT_PT: u8 = 101;

/// One RTP packet from a capture.
#[derive(Debug)]
struct RtpPacket {
    /// Capture time relative to the first record.
    at: Duration,
    marker: bool,
    payload_type: u8,
    timestamp: u32,
    payload: Vec<u8>,
}

fn u16_be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize, little: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(bytes)
    } else {
        u32::from_be_bytes(bytes)
    })
}

/// Ethernet → IPv4 → UDP → RTP; `None` for anything else.
fn rtp_of_frame(f: &[u8]) -> Option<(bool, u8, u32, Vec<u8>)> {
    if u16_be(f, 12)? != 0x0800 {
        return None;
    }
    let ip = f.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let udp_len = usize::from(u16_be(ip, ihl + 4)?);
    let rtp = ip.get(ihl + 8..ihl + udp_len)?;
    if rtp.first()? >> 6 != 2 {
        return None;
    }
    let header = 12 + usize::from(rtp[0] & 0x0f) * 4;
    let marker = rtp.get(1)? & 0x80 != 0;
    let pt = rtp.get(1)? & 0x7f;
    let ts = u32_at(rtp, 4, false)?;
    Some((marker, pt, ts, rtp.get(header..)?.to_vec()))
}

/// Parses a classic libpcap file with Ethernet link type.
fn read_pcap(bytes: &[u8]) -> Vec<RtpPacket> {
    let little = match bytes.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => false,
        other => panic!("not a classic microsecond pcap: {other:?}"),
    };
    assert_eq!(
        u32_at(bytes, 20, little),
        Some(1),
        "link type must be Ethernet"
    );
    let mut out = Vec::new();
    let mut pos = 24;
    let mut first: Option<Duration> = None;
    while let (Some(sec), Some(usec), Some(len)) = (
        u32_at(bytes, pos, little),
        u32_at(bytes, pos + 4, little),
        u32_at(bytes, pos + 8, little),
    ) {
        let t = Duration::from_secs(u64::from(sec)) + Duration::from_micros(u64::from(usec));
        let start = pos + 16;
        let frame = &bytes[start..start + len as usize];
        pos = start + len as usize;
        let at = t - *first.get_or_insert(t);
        if let Some((marker, payload_type, timestamp, payload)) = rtp_of_frame(frame) {
            out.push(RtpPacket {
                at,
                marker,
                payload_type,
                timestamp,
                payload,
            });
        }
    }
    out
}

/// Runs the packets through decoder and stream as the driver would; returns the digits.
fn digits_of(packets: &[RtpPacket]) -> Vec<Digit> {
    let base = Instant::now();
    let mut dec = Rfc4733Decoder::default();
    let mut stream = DtmfStream::default();
    let mut out = Vec::new();
    for p in packets.iter().filter(|p| p.payload_type == SIPP_EVENT_PT) {
        let now = base + p.at;
        dec.handle_timeout(now);
        if let Some(d) = dec
            .handle_packet(now, p.timestamp, p.marker, &p.payload)
            .unwrap()
        {
            out.extend(stream.on_rfc4733(now, d).map(|e| e.digit));
        }
    }
    out
}

fn sipp_pcap_dir() -> PathBuf {
    // Where Debian's sip-tester package installs them; override for other layouts.
    std::env::var_os("IVRD_SIPP_PCAP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/sip-tester"))
}

#[test]
fn sipp_captures_yield_their_digit_exactly_once() {
    let names = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "star", "pound",
    ];
    let keys = "0123456789*#".chars();
    for (name, key) in names.iter().zip(keys) {
        let path = sipp_pcap_dir().join(format!("dtmf_2833_{name}.pcap"));
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "skipping: {} not found (install SIPp to run this test)",
                path.display()
            );
            return;
        };
        let packets = read_pcap(&bytes);
        assert!(packets.len() >= 4, "{}", path.display());
        assert_eq!(
            digits_of(&packets),
            vec![Digit::from_char(key).unwrap()],
            "{}",
            path.display()
        );
    }
}

/// Wraps RTP packets in the same Ethernet/IPv4/UDP/pcap layout as SIPp's files.
fn build_pcap(packets: &[(Duration, bool, u32, [u8; 4])]) -> Vec<u8> {
    let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0xffffu32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (seq, (at, marker, ts, payload)) in packets.iter().enumerate() {
        let mut rtp = vec![0x80, SIPP_EVENT_PT | if *marker { 0x80 } else { 0 }];
        rtp.extend_from_slice(&(seq as u16).to_be_bytes());
        rtp.extend_from_slice(&ts.to_be_bytes());
        rtp.extend_from_slice(&0x0e05_384e_u32.to_be_bytes());
        rtp.extend_from_slice(payload);
        let udp_len = 8 + rtp.len() as u16;
        let mut frame = vec![0; 12];
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        frame.extend_from_slice(&(20 + udp_len).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 192, 168, 0, 3, 192, 168, 0, 1]);
        frame.extend_from_slice(&[0xc0, 0x18, 0x27, 0x10]);
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        out.extend_from_slice(&(at.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&at.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

#[test]
fn encoder_capture_through_the_pcap_reader_yields_each_digit_once() {
    for key in Digit::ALL {
        let pkts: Vec<_> = Rfc4733Encoder::new(key, 43200, Duration::from_millis(280), 10)
            .map(|p| (p.send_offset, p.marker, p.timestamp, p.payload))
            .collect();
        let packets = read_pcap(&build_pcap(&pkts));
        assert_eq!(packets.len(), pkts.len());
        assert_eq!(digits_of(&packets), vec![key]);
    }
}
