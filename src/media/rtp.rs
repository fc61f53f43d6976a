//! RTP session state (RFC 3550): our sender's SSRC/sequence/timestamp and the caller's reception
//! statistics.
//!
//! Sits between the RTP socket driver (`runtime::rtp_io`) and the media consumers: the driver hands
//! each datagram to [`parse_rtp`], then to [`RtpReceiver::on_packet`], and passes accepted payloads
//! on to the playout window and the DTMF detectors; on the way out the 20 ms pacer asks
//! [`RtpSender::write_packet`] for the bytes to send. Nothing here reads the clock, draws random
//! numbers or allocates: the driver passes `now`, the random SSRC and initial values, and buffers.

use std::time::{Duration, Instant};

use thiserror::Error;

/// Length of the fixed RTP header without CSRCs or extension (RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;
/// Largest payload accepted from the network: one Ethernet MTU. G.711 at 20 ms is 160 bytes, so a
/// larger payload is a misbehaving peer rather than audio we could use.
pub const MAX_PAYLOAD_LEN: usize = 1500;

/// RFC 3550 Appendix A.1: packets in sequence before a new source is declared valid.
pub const MIN_SEQUENTIAL: u16 = 2;
/// RFC 3550 Appendix A.1: largest forward sequence jump still taken as packet loss.
pub const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 Appendix A.1: largest backward sequence jump still taken as reordering.
pub const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Why an incoming datagram is not a usable RTP packet, or an outgoing one could not be written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("RTP packet of {len} bytes is shorter than the 12-byte header")]
    TooShort { len: usize },
    /// Version field is not 2 (RFC 3550 §5.1).
    #[error("RTP version {version} is not 2")]
    BadVersion { version: u8 },
    /// CSRC list or header extension runs past the end of the datagram.
    #[error("RTP headers need {header_len} bytes but the packet has {len}")]
    HeadersTruncated { header_len: usize, len: usize },
    /// The padding count is zero or larger than the payload (RFC 3550 §5.1, P bit).
    #[error("RTP padding length {pad} is invalid")]
    BadPadding { pad: u8 },
    /// Payload larger than [`MAX_PAYLOAD_LEN`].
    #[error("RTP payload of {len} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge { len: usize, max: usize },
    /// The caller's output buffer cannot hold the packet.
    #[error("output buffer of {available} bytes cannot hold a {needed}-byte RTP packet")]
    BufferTooSmall { needed: usize, available: usize },
}

/// The fields of a received RTP packet that the media session uses; borrows the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedRtp<'a> {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit: start of a talk spurt for audio, start of an event for RFC 4733.
    pub marker: bool,
    /// 16-bit sequence number.
    pub sequence: u16,
    /// RTP timestamp in the payload's clock units.
    pub timestamp: u32,
    /// Synchronisation source of the sender.
    pub ssrc: u32,
    /// Payload without headers, CSRCs, extension or padding.
    pub payload: &'a [u8],
}

/// Parses one RTP datagram with `rtp-rs`, rejecting versions other than 2 and oversize payloads.
/// Padding, CSRC lists and header extensions are skipped; the payload borrows `buf`.
pub fn parse_rtp(buf: &[u8]) -> Result<ParsedRtp<'_>, RtpError> {
    use rtp_rs::RtpReaderError as E;
    let reader = rtp_rs::RtpReader::new(buf).map_err(|e| match e {
        E::BufferTooShort(len) => RtpError::TooShort { len },
        E::UnsupportedVersion(version) => RtpError::BadVersion { version },
        E::HeadersTruncated { header_len, .. } => RtpError::HeadersTruncated {
            header_len,
            len: buf.len(),
        },
        E::PaddingLengthInvalid(pad) => RtpError::BadPadding { pad },
    })?;
    let payload = reader.payload();
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(RtpError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    Ok(ParsedRtp {
        payload_type: reader.payload_type(),
        marker: reader.mark(),
        sequence: reader.sequence_number().into(),
        timestamp: reader.timestamp(),
        ssrc: reader.ssrc(),
        payload,
    })
}

/// Our outgoing RTP stream: one SSRC, a sequence number and a timestamp that follows the media
/// clock whether or not a packet is sent.
///
/// Use: each 20 ms tick, call [`write_packet`](Self::write_packet) if there is audio to send, then
/// [`advance`](Self::advance) by the frame's sample count in every case, so a held call or
/// suppressed silence leaves a timestamp gap that tells the receiver how much time passed
/// (RFC 3550 §5.1: the timestamp reflects the sampling instant).
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    marker_pending: bool,
    packet_count: u32,
    octet_count: u32,
}

impl RtpSender {
    /// A sender with the given SSRC and random initial sequence number and timestamp, drawn by
    /// the driver (RFC 3550 §5.1 asks for random initial values). The first packet carries the
    /// marker bit, as the start of the first talk spurt.
    pub fn new(ssrc: u32, initial_sequence: u16, initial_timestamp: u32) -> RtpSender {
        RtpSender {
            ssrc,
            sequence: initial_sequence,
            timestamp: initial_timestamp,
            marker_pending: true,
            packet_count: 0,
            octet_count: 0,
        }
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The media clock now: the timestamp the next audio packet will carry. RTCP SRs use it as
    /// the RTP time matching their NTP time.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// Packets sent so far, wrapping as the RTCP SR field does (RFC 3550 §6.4.1).
    pub fn packet_count(&self) -> u32 {
        self.packet_count
    }

    /// Payload octets sent so far, wrapping as the RTCP SR field does (RFC 3550 §6.4.1).
    pub fn octet_count(&self) -> u32 {
        self.octet_count
    }

    /// Marks the next packet as the first of a talk spurt (RFC 3551 §4.1, RFC 3550 §5.1): call it
    /// when audio resumes after silence suppression or hold.
    pub fn start_talkspurt(&mut self) {
        self.marker_pending = true;
    }

    /// Moves the media clock on by `samples` (160 per 20 ms frame at 8 kHz), wrapping at 2^32.
    pub fn advance(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Writes an audio packet stamped with the current media clock into `out` and returns its
    /// length. The marker bit is set if `marker` is true or a talk spurt is pending. The sequence
    /// number advances (wrapping at 2^16); the timestamp does not — call [`advance`](Self::advance).
    pub fn write_packet(
        &mut self,
        payload_type: u8,
        marker: bool,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let marker = marker || self.marker_pending;
        let len = self.write(payload_type, marker, self.timestamp, payload, out)?;
        self.marker_pending = false;
        Ok(len)
    }

    /// Writes a packet with an explicit timestamp, sharing this stream's SSRC and sequence space;
    /// for RFC 4733 events, whose timestamp is the start of the event for every packet of it
    /// (RFC 4733 §2.3.1, §2.5.1.2). Does not touch the talk-spurt marker state.
    pub fn write_event_packet(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        self.write(payload_type, marker, timestamp, payload, out)
    }

    fn write(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let needed = RTP_HEADER_LEN + payload.len();
        if out.len() < needed {
            return Err(RtpError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        // V=2, P=0, X=0, CC=0 (RFC 3550 §5.1).
        out[0] = 0x80;
        out[1] = (u8::from(marker) << 7) | (payload_type & 0x7F);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[RTP_HEADER_LEN..needed].copy_from_slice(payload);
        self.sequence = self.sequence.wrapping_add(1);
        self.packet_count = self.packet_count.wrapping_add(1);
        self.octet_count = self.octet_count.wrapping_add(payload.len() as u32);
        Ok(needed)
    }
}

/// What [`RtpReceiver::on_packet`] decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxVerdict {
    /// In order (possibly after a gap); `ext_seq` is the extended sequence number.
    Accepted { ext_seq: u64 },
    /// Older than the highest sequence seen and not seen before (reordered).
    Late { ext_seq: u64 },
    /// Already received.
    Duplicate,
    /// The source is not yet validated (RFC 3550 A.1 probation) or a large sequence jump awaits
    /// confirmation by the next packet. The payload is intact and may still be used.
    Probation,
    /// Sequence numbering (re)started here: the first valid packet, a confirmed jump, or a new
    /// SSRC. Anything keyed on the old numbering or timestamps should be reset.
    Restart { ext_seq: u64 },
}

/// Expected and received packet counts since the previous report (RFC 3550 A.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalCounts {
    /// Packets expected in the interval, from the extended highest sequence number.
    pub expected: u64,
    /// Packets received in the interval, duplicates and late packets included.
    pub received: u64,
}

/// Reception statistics for the caller's stream (RFC 3550 Appendix A.1, A.3, A.8).
///
/// Tracks one remote source at a time: a new SSRC counts as a change and restarts the statistics
/// with probation, as for a new source.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    clock_rate: u32,
    event_payload_type: Option<u8>,
    ssrc: Option<u32>,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: u32,
    probation: u16,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Bit i set: extended sequence `max_ext - i` was received. Covers MAX_MISORDER.
    seen: u128,
    epoch: Option<Instant>,
    transit: Option<i32>,
    jitter_q4: u32,
    octets: u64,
    packets: u64,
    late: u64,
    duplicates: u64,
    ssrc_changes: u64,
}

impl RtpReceiver {
    /// Statistics for a stream whose audio clock runs at `clock_rate` Hz (8000 for G.711).
    pub fn new(clock_rate: u32) -> RtpReceiver {
        RtpReceiver {
            clock_rate,
            event_payload_type: None,
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            seen: 0,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            octets: 0,
            packets: 0,
            late: 0,
            duplicates: 0,
            ssrc_changes: 0,
        }
    }

    /// Names the RFC 4733 telephone-event payload type. Those packets count in the sequence
    /// statistics but not in jitter: their timestamp is the event start, not the sampling instant.
    pub fn set_event_payload_type(&mut self, pt: Option<u8>) {
        self.event_payload_type = pt;
    }

    /// Feeds one parsed packet that arrived at `now` and says how it fits the sequence.
    pub fn on_packet(&mut self, now: Instant, packet: &ParsedRtp<'_>) -> RxVerdict {
        self.packets += 1;
        self.octets += packet.payload.len() as u64;
        match self.ssrc {
            Some(ssrc) if ssrc == packet.ssrc => {}
            previous => {
                if previous.is_some() {
                    self.ssrc_changes += 1;
                }
                self.ssrc = Some(packet.ssrc);
                self.start_probation(packet.sequence);
                self.transit = None;
                self.jitter_q4 = 0;
            }
        }
        let verdict = self.update_seq(packet.sequence);
        let audio = Some(packet.payload_type) != self.event_payload_type;
        if audio && !matches!(verdict, RxVerdict::Duplicate) {
            self.update_jitter(now, packet.timestamp);
        }
        verdict
    }

    /// RFC 3550 A.1: a new source starts in probation with `max_seq = seq - 1`.
    fn start_probation(&mut self, seq: u16) {
        self.init_seq(seq);
        self.max_seq = seq.wrapping_sub(1);
        self.probation = MIN_SEQUENTIAL;
    }

    /// RFC 3550 A.1 `init_seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u64::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        self.seen = 0;
    }

    /// RFC 3550 A.1 `update_seq`, extended to tell duplicates from late packets.
    fn update_seq(&mut self, seq: u16) -> RxVerdict {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    return self.restart_at(seq);
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return RxVerdict::Probation;
        }
        if udelta == 0 {
            self.received += 1;
            self.duplicates += 1;
            return RxVerdict::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles += u64::from(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            let shifted = if udelta >= 128 {
                0
            } else {
                self.seen << udelta
            };
            self.seen = shifted | 1;
            self.received += 1;
            return RxVerdict::Accepted {
                ext_seq: self.ext_max(),
            };
        }
        if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: restart only if the next packet confirms it.
            if u32::from(seq) == self.bad_seq {
                return self.restart_at(seq);
            }
            self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
            return RxVerdict::Probation;
        }
        // Behind max_seq by at most MAX_MISORDER: duplicate or reordered (counted as received,
        // which is why the cumulative loss may go negative, RFC 3550 §6.4.1).
        self.received += 1;
        let behind = u64::from(self.max_seq.wrapping_sub(seq));
        let Some(ext_seq) = self.ext_max().checked_sub(behind) else {
            self.late += 1;
            return RxVerdict::Late { ext_seq: 0 };
        };
        let bit = 1u128 << behind;
        if self.seen & bit != 0 {
            self.duplicates += 1;
            return RxVerdict::Duplicate;
        }
        self.seen |= bit;
        self.late += 1;
        RxVerdict::Late { ext_seq }
    }

    fn restart_at(&mut self, seq: u16) -> RxVerdict {
        self.init_seq(seq);
        self.received = 1;
        self.seen = 1;
        RxVerdict::Restart {
            ext_seq: self.ext_max(),
        }
    }

    /// RFC 3550 A.8, integer form: `J += |D| - J/16`, kept scaled by 16.
    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = to_clock_units(now.saturating_duration_since(epoch), self.clock_rate);
        // Differences are taken modulo 2^32, then read as signed: timestamps wrap.
        let transit = arrival.wrapping_sub(timestamp) as i32;
        if let Some(previous) = self.transit {
            let d = transit.wrapping_sub(previous).unsigned_abs();
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// The SSRC being tracked, once a packet has arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Extended highest sequence number received (RFC 3550 A.3 `extended_max`).
    pub fn ext_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Packets expected since the source became valid (RFC 3550 A.3); 0 during probation.
    pub fn expected(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        self.ext_max() + 1 - self.base_seq
    }

    /// Packets counted as received since the source became valid, late and duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost (RFC 3550 A.3): expected minus received, negative with duplicates.
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units, as carried in an RTCP report block (RFC 3550 A.8).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Jitter scaled by 16, for callers wanting the fractional part.
    pub fn jitter_q4(&self) -> u32 {
        self.jitter_q4
    }

    /// Every packet handed to [`on_packet`](Self::on_packet), whatever its verdict.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Payload bytes of every packet handed to [`on_packet`](Self::on_packet).
    pub fn bytes(&self) -> u64 {
        self.octets
    }

    /// Packets that arrived after a later one (reordered), duplicates excluded.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Packets received twice.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Times the caller's SSRC changed.
    pub fn ssrc_changes(&self) -> u64 {
        self.ssrc_changes
    }

    /// Counts since the previous call and starts a new interval (RFC 3550 A.3); RTCP derives the
    /// fraction lost from them.
    pub fn take_interval(&mut self) -> IntervalCounts {
        let expected = self.expected();
        let counts = IntervalCounts {
            expected: expected.saturating_sub(self.expected_prior),
            received: self.received.saturating_sub(self.received_prior),
        };
        self.expected_prior = expected;
        self.received_prior = self.received;
        counts
    }
}

/// Converts an elapsed time to clock units, wrapping like an RTP timestamp.
fn to_clock_units(elapsed: Duration, clock_rate: u32) -> u32 {
    (elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

#[cfg(test)]
#[path = "rtp_tests.rs"]
mod tests;
