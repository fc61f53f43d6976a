//! RFC 4733 telephone-event: the 4-byte payload, a decoder that turns a stream of event packets into
//! one report per key press, and an encoder that produces such a stream (tests, load generator).
//!
//! Data flow: the RTP session hands every packet whose payload type is the negotiated
//! `telephone-event` to [`Rfc4733Decoder::handle_packet`]; a returned digit goes to
//! [`super::DtmfStream::on_rfc4733`]. The driver also arms a timer from
//! [`Rfc4733Decoder::poll_timeout`] and calls [`Rfc4733Decoder::handle_timeout`] when it fires.

use std::time::{Duration, Instant};

use crate::media::digit::Digit;

/// RTP clock rate of `telephone-event/8000`, the only rate we negotiate next to G.711.
pub const CLOCK_RATE: u32 = 8000;

/// Why a telephone-event payload could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rfc4733Error {
    /// RFC 4733 §2.3: the payload is at least one 4-byte event block.
    #[error("telephone-event payload is {len} bytes, need at least 4")]
    TooShort { len: usize },
}

/// One decoded RFC 4733 §2.3 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (§3.2: 0–15 are DTMF keys; other codes are other events).
    pub event: u8,
    /// E bit: this packet reports the end of the event.
    pub end: bool,
    /// Volume as a positive number of dB below 0 dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, counted from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block of `payload` (§2.3). Further bytes are ignored: several blocks
    /// only occur with RFC 2198 redundancy, which is negotiated as a different payload type.
    pub fn parse(payload: &[u8]) -> Result<Self, Rfc4733Error> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(Rfc4733Error::TooShort { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            // Bit 0x40 is R (reserved): senders set it to zero, receivers ignore it (§2.3).
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte wire form (R bit zero).
    pub fn to_bytes(self) -> [u8; 4] {
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3f);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }
}

/// How long after the last packet of an event without its end packets we consider it over.
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_millis(200);

/// Packets whose timestamp lies at most this far (in RTP units, 10 s) behind the last event are late
/// copies of old events; further behind, the sender has restarted its timestamp and it is new.
const STALE_WINDOW: u32 = 10 * CLOCK_RATE;

/// A duration this close to 0xFFFF means the sender may continue the event in a new segment.
const SEGMENT_NEAR_MAX: u16 = 0xF000;

/// The event we heard of last, kept after it ends so that late and repeated packets are absorbed.
#[derive(Debug, Clone, Copy)]
struct LastEvent {
    timestamp: u32,
    event: u8,
    duration: u16,
    last_packet_at: Instant,
    /// End packet seen or timed out: repeated packets are still absorbed, the timer is off.
    closed: bool,
}

/// Turns telephone-event packets into one digit per key press, reported on the first packet seen.
///
/// Promises: each event (identified by its RTP timestamp, RFC 4733 §2.5.1.3) is reported at most
/// once, whichever of its packets arrives first; update, end and retransmitted packets are absorbed;
/// an event whose end packets were lost is closed by the next event or by [`Self::handle_timeout`].
#[derive(Debug, Clone)]
pub struct Rfc4733Decoder {
    last: Option<LastEvent>,
    end_timeout: Duration,
    /// The sender's sequence restarted since the last new event: its timestamps may have
    /// restarted too, so "behind the last event" no longer means "late" (see
    /// [`Self::sender_restarted`]).
    timeline_restarted: bool,
}

impl Default for Rfc4733Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_END_TIMEOUT)
    }
}

impl Rfc4733Decoder {
    /// A decoder that closes an event once `end_timeout` passes without any packet for it.
    pub fn new(end_timeout: Duration) -> Self {
        Rfc4733Decoder {
            last: None,
            end_timeout,
            timeline_restarted: false,
        }
    }

    /// Forgets all state; call when the remote SSRC changes (its timestamps start afresh).
    pub fn reset(&mut self) {
        self.last = None;
        self.timeline_restarted = false;
    }

    /// The same source restarted its RTP sequence (RFC 3550 A.1: a large jump confirmed by the
    /// next packet, as when a gateway or SBC re-anchors the stream). Its timestamps may have
    /// jumped back with it, so the next packet with a new timestamp starts a new event even when
    /// that timestamp lies behind the last event's; without this, every key for up to
    /// [`STALE_WINDOW`] of timestamp would be taken for a late packet and lost. A key held across
    /// the restart keeps its timestamp and is still absorbed.
    pub fn sender_restarted(&mut self) {
        self.timeline_restarted = true;
    }

    /// Feeds one telephone-event packet. Returns the key if this packet starts a new DTMF event.
    /// Non-DTMF events (codes above 15) are tracked, so they close the previous event, but not
    /// reported.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        rtp_timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Digit>, Rfc4733Error> {
        let ev = TelephoneEvent::parse(payload)?;
        if let Some(last) = self.last.as_mut() {
            // §2.5.1.3 / §2.6: every packet of one event carries the timestamp of its start.
            if rtp_timestamp == last.timestamp {
                last.duration = last.duration.max(ev.duration);
                last.last_packet_at = now;
                last.closed |= ev.end;
                return Ok(None);
            }
            let behind = last.timestamp.wrapping_sub(rtp_timestamp);
            if behind < STALE_WINDOW && !self.timeline_restarted {
                // A late or reordered packet of an older event (wrapping compare handles wrap).
                return Ok(None);
            }
            // §2.5.1.3: an event longer than the 16-bit duration continues in a new segment whose
            // timestamp advances; it has no marker and is the same key press.
            let continues = !last.closed
                && !marker
                && ev.event == last.event
                && last.duration >= SEGMENT_NEAR_MAX
                && rtp_timestamp.wrapping_sub(last.timestamp) <= u32::from(u16::MAX) + 1;
            self.timeline_restarted = false;
            *last = LastEvent {
                timestamp: rtp_timestamp,
                event: ev.event,
                duration: ev.duration,
                last_packet_at: now,
                closed: ev.end,
            };
            if continues {
                return Ok(None);
            }
        } else {
            self.last = Some(LastEvent {
                timestamp: rtp_timestamp,
                event: ev.event,
                duration: ev.duration,
                last_packet_at: now,
                closed: ev.end,
            });
        }
        Ok(Digit::from_event_code(ev.event))
    }

    /// When [`Self::handle_timeout`] should next be called, if an event is still open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last
            .filter(|l| !l.closed)
            .map(|l| l.last_packet_at + self.end_timeout)
    }

    /// Closes an open event whose end packets never arrived.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout() {
            if now >= deadline {
                if let Some(last) = self.last.as_mut() {
                    last.closed = true;
                }
            }
        }
    }

    /// The key currently held down (event open, no end seen and not timed out), if any.
    pub fn active(&self) -> Option<Digit> {
        self.last
            .filter(|l| !l.closed)
            .and_then(|l| Digit::from_event_code(l.event))
    }
}

/// One packet produced by [`Rfc4733Encoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedPacket {
    /// When to send it, relative to the start of the key press.
    pub send_offset: Duration,
    /// RTP marker bit: set on the first packet of the event only (§2.5.1.1).
    pub marker: bool,
    /// RTP timestamp: the event start, the same for every packet (§2.5.1.3).
    pub timestamp: u32,
    /// The 4-byte telephone-event payload.
    pub payload: [u8; 4],
}

/// Interval between update packets, as most gateways send them.
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);

/// Produces the packets of one key press: a start packet with the marker, updates every 50 ms, and
/// three end packets (§2.5.1.4 recommends repeating the final packet three times). An iterator, so
/// it never allocates.
#[derive(Debug, Clone)]
pub struct Rfc4733Encoder {
    digit: Digit,
    timestamp: u32,
    volume: u8,
    duration_units: u16,
    press: Duration,
    next_offset: Duration,
    ends_sent: u8,
}

impl Rfc4733Encoder {
    /// A press of `digit` lasting `press` (capped at the 16-bit duration, ~8 s), starting at RTP
    /// `timestamp`, at `volume` dB below 0 dBm0 (capped at 63).
    pub fn new(digit: Digit, timestamp: u32, press: Duration, volume: u8) -> Self {
        let units = press.as_micros() * u128::from(CLOCK_RATE) / 1_000_000;
        let duration_units = u16::try_from(units).unwrap_or(u16::MAX);
        Rfc4733Encoder {
            digit,
            timestamp,
            volume: volume.min(63),
            duration_units,
            press,
            next_offset: Duration::ZERO,
            ends_sent: 0,
        }
    }

    fn packet(&self, offset: Duration, end: bool, duration: u16) -> EncodedPacket {
        let ev = TelephoneEvent {
            event: self.digit.event_code(),
            end,
            volume: self.volume,
            duration,
        };
        EncodedPacket {
            send_offset: offset,
            marker: offset.is_zero() && !end,
            timestamp: self.timestamp,
            payload: ev.to_bytes(),
        }
    }
}

impl Iterator for Rfc4733Encoder {
    type Item = EncodedPacket;

    fn next(&mut self) -> Option<EncodedPacket> {
        if self.next_offset < self.press {
            let offset = self.next_offset;
            let units = offset.as_micros() * u128::from(CLOCK_RATE) / 1_000_000;
            let duration = u16::try_from(units).unwrap_or(u16::MAX);
            self.next_offset += UPDATE_INTERVAL;
            return Some(self.packet(offset, false, duration));
        }
        if self.ends_sent < 3 {
            self.ends_sent += 1;
            return Some(self.packet(self.press, true, self.duration_units));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(digit: Digit, ts: u32, ms: u64) -> impl Iterator<Item = EncodedPacket> {
        Rfc4733Encoder::new(digit, ts, Duration::from_millis(ms), 10)
    }

    /// Feeds packets at `base + offset`, returns the digits reported.
    fn feed(
        dec: &mut Rfc4733Decoder,
        base: Instant,
        pkts: impl Iterator<Item = EncodedPacket>,
    ) -> Vec<Digit> {
        let mut out = Vec::new();
        for p in pkts {
            let now = base + p.send_offset;
            dec.handle_timeout(now);
            if let Some(d) = dec
                .handle_packet(now, p.timestamp, p.marker, &p.payload)
                .unwrap()
            {
                out.push(d);
            }
        }
        out
    }

    #[test]
    fn after_a_sender_restart_an_earlier_timestamp_is_a_new_press() {
        // SIPp's dtmf_2833_9 then dtmf_2833_0 captures: same SSRC, the second's sequence jumps
        // ahead by 3780 while its timestamp lies 50208 units behind.
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        assert_eq!(
            feed(&mut dec, base, press(Digit::D9, 67_840, 100)),
            [Digit::D9]
        );
        let later = base + Duration::from_millis(300);
        // Without a restart such a packet is a late copy of an older event.
        let mut stale = dec.clone();
        assert_eq!(feed(&mut stale, later, press(Digit::D0, 17_632, 100)), []);
        dec.sender_restarted();
        assert_eq!(
            feed(&mut dec, later, press(Digit::D0, 17_632, 100)),
            [Digit::D0]
        );
        // Late packets behind the new event are absorbed again.
        let after = later + Duration::from_millis(300);
        assert_eq!(feed(&mut dec, after, press(Digit::D5, 10_000, 100)), []);
    }

    #[test]
    fn a_key_held_across_a_sender_restart_counts_once() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let mut pkts = press(Digit::D3, 8000, 200);
        let first: Vec<_> = pkts.by_ref().take(2).collect();
        assert_eq!(feed(&mut dec, base, first.into_iter()), [Digit::D3]);
        dec.sender_restarted();
        assert_eq!(feed(&mut dec, base, pkts), []);
    }

    #[test]
    fn parses_the_byte_layout_of_section_2_3() {
        let ev = TelephoneEvent::parse(&[0x05, 0x8a, 0x08, 0xc0]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 2240
            }
        );
        // R bit is ignored; trailing bytes are ignored.
        let ev = TelephoneEvent::parse(&[11, 0x4a, 0, 1, 0xff]).unwrap();
        assert!(!ev.end);
        assert_eq!((ev.event, ev.volume, ev.duration), (11, 10, 1));
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(Rfc4733Error::TooShort { len: 3 })
        );
        let bytes = [0x0b, 0x8a, 0x03, 0x20];
        assert_eq!(TelephoneEvent::parse(&bytes).unwrap().to_bytes(), bytes);
    }

    #[test]
    fn encoder_emits_start_updates_and_three_ends() {
        let pkts: Vec<_> = press(Digit::D7, 1000, 120).collect();
        // Start at 0 ms, updates at 50 and 100 ms, then 3 end packets at 120 ms.
        assert_eq!(pkts.len(), 6);
        assert!(pkts[0].marker);
        assert!(pkts[1..].iter().all(|p| !p.marker && p.timestamp == 1000));
        let evs: Vec<_> = pkts
            .iter()
            .map(|p| TelephoneEvent::parse(&p.payload).unwrap())
            .collect();
        assert_eq!(evs[1].duration, 400);
        assert!(
            evs[3..]
                .iter()
                .all(|e| e.end && e.duration == 960 && e.event == 7)
        );
        assert!(evs[..3].iter().all(|e| !e.end));
    }

    #[test]
    fn normal_press_is_reported_once_on_its_first_packet() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let first = press(Digit::D3, 5000, 200).next().unwrap();
        assert_eq!(
            dec.handle_packet(base, first.timestamp, first.marker, &first.payload)
                .unwrap(),
            Some(Digit::D3)
        );
        assert_eq!(dec.active(), Some(Digit::D3));
        assert!(feed(&mut dec, base, press(Digit::D3, 5000, 200).skip(1)).is_empty());
        assert_eq!(dec.active(), None);
        assert_eq!(dec.poll_timeout(), None);
    }

    #[test]
    fn lost_start_packet_still_reports_once() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        assert_eq!(
            feed(&mut dec, base, press(Digit::D9, 77, 250).skip(2)),
            vec![Digit::D9]
        );
    }

    #[test]
    fn lost_end_packets_close_by_timeout_and_next_event() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let no_end = press(Digit::D1, 0, 200).filter(|p| p.payload[1] & 0x80 == 0);
        assert_eq!(feed(&mut dec, base, no_end), vec![Digit::D1]);
        let deadline = dec.poll_timeout().unwrap();
        assert_eq!(
            deadline,
            base + Duration::from_millis(150) + DEFAULT_END_TIMEOUT
        );
        dec.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(dec.active(), Some(Digit::D1));
        dec.handle_timeout(deadline);
        assert_eq!(dec.active(), None);
        // Same key again, ends also lost, and the next press follows before the timeout.
        let t2 = base + Duration::from_secs(1);
        let no_end = press(Digit::D1, 8000, 100).filter(|p| p.payload[1] & 0x80 == 0);
        assert_eq!(feed(&mut dec, t2, no_end), vec![Digit::D1]);
        let t3 = t2 + Duration::from_millis(150);
        assert_eq!(
            feed(&mut dec, t3, press(Digit::D2, 9200, 100)),
            vec![Digit::D2]
        );
    }

    #[test]
    fn retransmitted_end_after_close_does_not_rereport() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let pkts: Vec<_> = press(Digit::Pound, 4242, 100).collect();
        assert_eq!(
            feed(&mut dec, base, pkts.iter().copied()),
            vec![Digit::Pound]
        );
        let late = base + Duration::from_secs(2);
        dec.handle_timeout(late);
        let end = pkts.last().unwrap();
        assert_eq!(
            dec.handle_packet(late, end.timestamp, false, &end.payload)
                .unwrap(),
            None
        );
        // A reordered packet from that press arriving after the next press is also absorbed.
        assert_eq!(
            feed(&mut dec, late, press(Digit::D0, 40000, 100)),
            vec![Digit::D0]
        );
        assert_eq!(
            dec.handle_packet(late, end.timestamp, false, &end.payload)
                .unwrap(),
            None
        );
    }

    #[test]
    fn two_quick_presses_of_the_same_key_are_two_digits() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let first = press(Digit::D5, 160, 80);
        // Second press starts 40 ms after the first ended: 120 ms = 960 units later.
        let second = press(Digit::D5, 160 + 960, 80).map(|mut p| {
            p.send_offset += Duration::from_millis(120);
            p
        });
        assert_eq!(
            feed(&mut dec, base, first.chain(second)),
            vec![Digit::D5, Digit::D5]
        );
    }

    #[test]
    fn redundant_copies_of_every_packet_report_once() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let doubled = press(Digit::Star, 123, 300).flat_map(|p| [p, p, p]);
        assert_eq!(feed(&mut dec, base, doubled), vec![Digit::Star]);
    }

    #[test]
    fn timestamp_wrap_is_a_new_event_and_old_packets_stay_stale() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let before = press(Digit::D4, u32::MAX - 100, 100);
        let after = press(Digit::D6, 900, 100);
        assert_eq!(
            feed(&mut dec, base, before.chain(after)),
            vec![Digit::D4, Digit::D6]
        );
        let old = press(Digit::D4, u32::MAX - 100, 100).last().unwrap();
        assert_eq!(
            dec.handle_packet(base, old.timestamp, false, &old.payload)
                .unwrap(),
            None
        );
    }

    #[test]
    fn sender_restart_far_behind_is_a_new_event() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let a = press(Digit::D1, 3_000_000, 100);
        let b = press(Digit::D2, 1_000, 100);
        assert_eq!(feed(&mut dec, base, a.chain(b)), vec![Digit::D1, Digit::D2]);
    }

    #[test]
    fn long_event_continued_in_a_new_segment_is_one_press() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let seg1 = TelephoneEvent {
            event: 8,
            end: false,
            volume: 10,
            duration: 0xFFFF,
        };
        let start = TelephoneEvent {
            duration: 0,
            ..seg1
        };
        assert_eq!(
            dec.handle_packet(base, 10, true, &start.to_bytes())
                .unwrap(),
            Some(Digit::D8)
        );
        assert_eq!(
            dec.handle_packet(base, 10, false, &seg1.to_bytes())
                .unwrap(),
            None
        );
        let seg2 = TelephoneEvent {
            duration: 400,
            ..seg1
        };
        let ts2 = 10 + 0xFFFF;
        assert_eq!(
            dec.handle_packet(base, ts2, false, &seg2.to_bytes())
                .unwrap(),
            None
        );
        assert_eq!(dec.active(), Some(Digit::D8));
    }

    #[test]
    fn non_dtmf_events_are_not_reported() {
        let base = Instant::now();
        let mut dec = Rfc4733Decoder::default();
        let flash = TelephoneEvent {
            event: 16,
            end: false,
            volume: 10,
            duration: 0,
        };
        assert_eq!(
            dec.handle_packet(base, 10, true, &flash.to_bytes())
                .unwrap(),
            None
        );
        assert_eq!(dec.active(), None);
    }
}
