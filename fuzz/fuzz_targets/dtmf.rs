//! DTMF inputs from the network: RFC 4733 payloads and SIP INFO bodies.
//!
//! `TelephoneEvent::parse` must round-trip through `to_bytes` (all but the reserved R bit);
//! the decoder is fed the input as a sequence of 9-byte records (timestamp, marker, payload) with
//! time advancing, and must never panic;
//! `parse_info_body` is tried with both content types on the whole input.

#![no_main]

use ivrd::media::dtmf::{Rfc4733Decoder, TelephoneEvent, parse_info_body};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = TelephoneEvent::parse(data) {
        assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Ok(ev));
        // Re-encoding keeps every bit but R (0x40 of byte 1), which receivers ignore and
        // senders zero (RFC 4733 §2.3).
        let wire = [data[0], data[1] & !0x40, data[2], data[3]];
        assert_eq!(ev.to_bytes(), wire, "re-encoding changed the payload");
    }
    for ctype in ["application/dtmf-relay", "application/dtmf", "text/plain"] {
        let _ = parse_info_body(ctype, data);
    }
    let mut decoder = Rfc4733Decoder::new(Duration::from_millis(200));
    let mut now = Instant::now();
    for rec in data.chunks_exact(9) {
        let ts = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let marker = rec[4] & 0x80 != 0;
        now += Duration::from_millis(u64::from(rec[4] & 0x7F));
        if let Some(t) = decoder.poll_timeout().filter(|t| *t <= now) {
            decoder.handle_timeout(t);
        }
        let _ = decoder.handle_packet(now, ts, marker, &rec[5..9]);
    }
});
