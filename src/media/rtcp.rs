//! RTCP (RFC 3550 §6): the compound reports ivrd sends about its call leg and the little it needs
//! from the caller's reports.
//!
//! Sits beside `rtp.rs`: the RTP socket driver calls [`RtcpSession::write_report`] about every
//! [`report_interval`] with the NTP wall-clock time it computed, and hands each datagram that arrives
//! on the RTCP port to [`RtcpSession::on_rtcp`]. The module is pure: time comes in as `now` and an
//! [`NtpTimestamp`], randomness as a number in [0, 1), and packets are written into caller buffers.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::rtp::{IntervalCounts, RtpReceiver, RtpSender};

/// RTCP packet types (RFC 3550 §12.1).
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;
const SDES_CNAME: u8 = 1;
/// Minimum report interval for a session of our size (RFC 3550 §6.2: 5 s).
const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Errors building or parsing RTCP.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RtcpError {
    /// The caller's buffer is too small for the compound packet.
    #[error("output buffer of {available} bytes cannot hold {needed} bytes of RTCP")]
    BufferTooSmall { needed: usize, available: usize },
    /// An SDES item or BYE reason is longer than its 8-bit length field allows.
    #[error("RTCP text of {len} bytes exceeds 255")]
    TextTooLong { len: usize },
    /// A packet's header or declared length runs past the datagram.
    #[error("RTCP packet needs {needed} bytes at offset {offset}, datagram has {len}")]
    Truncated {
        offset: usize,
        needed: usize,
        len: usize,
    },
    /// Version field is not 2 (RFC 3550 §6.4.1).
    #[error("RTCP version {version} is not 2")]
    BadVersion { version: u8 },
    /// A packet's length field is too small for its declared contents.
    #[error("RTCP packet type {packet_type} is too short for its {count} items")]
    BadLength { packet_type: u8, count: u8 },
    /// The compound packet does not start with an SR or RR (RFC 3550 §6.1).
    #[error("RTCP compound packet starts with type {packet_type}, not SR or RR")]
    NotCompound { packet_type: u8 },
}

/// A 64-bit NTP timestamp: seconds since 1900 in the high word, fraction in the low word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix epoch).
    const UNIX_OFFSET: u64 = 2_208_988_800;

    /// Converts a time since the Unix epoch (the driver reads `SystemTime`) to NTP format.
    pub fn from_unix(since_epoch: Duration) -> NtpTimestamp {
        let secs = since_epoch.as_secs().wrapping_add(Self::UNIX_OFFSET);
        let frac = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp((secs << 32) | frac)
    }

    /// The middle 32 bits, as carried in LSR (RFC 3550 §6.4.1).
    pub fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// The sender-info section of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time of this report.
    pub ntp: NtpTimestamp,
    /// The same instant on the RTP media clock.
    pub rtp_timestamp: u32,
    /// Packets sent since the start (wrapping).
    pub packet_count: u32,
    /// Payload octets sent since the start (wrapping).
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, within the 24-bit signed range.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (low 32 bits).
    pub ext_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP time from that source, 0 if none.
    pub lsr: u32,
    /// Delay since that SR in 1/65536 s, 0 if none.
    pub dlsr: u32,
}

/// Fraction lost in 1/256 for an interval (RFC 3550 A.3); 0 when nothing was lost or duplicates
/// outnumber losses.
pub fn fraction_lost(counts: IntervalCounts) -> u8 {
    let lost = counts.expected as i64 - counts.received as i64;
    if counts.expected == 0 || lost <= 0 {
        return 0;
    }
    ((lost << 8) / counts.expected as i64).min(255) as u8
}

/// Clamps a cumulative loss to the 24-bit signed field (RFC 3550 A.3: 0x7fffff / -0x800000).
pub fn clamp_cumulative_lost(lost: i64) -> i32 {
    lost.clamp(-0x80_0000, 0x7F_FFFF) as i32
}

/// The time until the next report: 5 s (2.5 s for the first, RFC 3550 §6.2) scaled by a factor
/// uniform in [0.5, 1.5] (§6.3.1). `random_unit` is a number in [0, 1) drawn by the driver.
/// The e−3/2 compensation of §6.3.1 belongs to timer reconsideration, which a two-party session
/// with a fixed minimum interval does not use.
pub fn report_interval(random_unit: f64, initial: bool) -> Duration {
    let base = if initial {
        MIN_INTERVAL / 2
    } else {
        MIN_INTERVAL
    };
    let unit = if random_unit.is_finite() {
        random_unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    base.mul_f64(0.5 + unit)
}

fn check_room(out: &[u8], needed: usize) -> Result<(), RtcpError> {
    if out.len() < needed {
        return Err(RtcpError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    Ok(())
}

/// Writes the common header (RFC 3550 §6.4.1): V=2, P=0, count, type, length in words minus one.
fn put_header(out: &mut [u8], count: u8, packet_type: u8, total_len: usize) {
    out[0] = 0x80 | (count & 0x1F);
    out[1] = packet_type;
    out[2..4].copy_from_slice(&((total_len / 4 - 1) as u16).to_be_bytes());
}

fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn put_block(out: &mut [u8], block: &ReportBlock) {
    put_u32(out, 0, block.ssrc);
    let lost = (clamp_cumulative_lost(i64::from(block.cumulative_lost)) as u32) & 0x00FF_FFFF;
    put_u32(out, 4, (u32::from(block.fraction_lost) << 24) | lost);
    put_u32(out, 8, block.ext_highest_seq);
    put_u32(out, 12, block.jitter);
    put_u32(out, 16, block.lsr);
    put_u32(out, 20, block.dlsr);
}

/// Writes an SR with at most one report block; returns its length.
pub fn write_sr(
    out: &mut [u8],
    ssrc: u32,
    info: &SenderInfo,
    block: Option<&ReportBlock>,
) -> Result<usize, RtcpError> {
    let blocks = usize::from(block.is_some());
    let len = HEADER_LEN + 4 + SENDER_INFO_LEN + blocks * REPORT_BLOCK_LEN;
    check_room(out, len)?;
    put_header(out, blocks as u8, PT_SR, len);
    put_u32(out, 4, ssrc);
    put_u32(out, 8, (info.ntp.0 >> 32) as u32);
    put_u32(out, 12, info.ntp.0 as u32);
    put_u32(out, 16, info.rtp_timestamp);
    put_u32(out, 20, info.packet_count);
    put_u32(out, 24, info.octet_count);
    if let Some(block) = block {
        put_block(&mut out[28..], block);
    }
    Ok(len)
}

/// Writes an RR with at most one report block; returns its length.
pub fn write_rr(
    out: &mut [u8],
    ssrc: u32,
    block: Option<&ReportBlock>,
) -> Result<usize, RtcpError> {
    let blocks = usize::from(block.is_some());
    let len = HEADER_LEN + 4 + blocks * REPORT_BLOCK_LEN;
    check_room(out, len)?;
    put_header(out, blocks as u8, PT_RR, len);
    put_u32(out, 4, ssrc);
    if let Some(block) = block {
        put_block(&mut out[8..], block);
    }
    Ok(len)
}

/// Length of `fixed` bytes plus an 8-bit length and `text`, padded to a 32-bit boundary with at
/// least `min_pad` zero bytes.
fn padded_len(fixed: usize, text: usize, min_pad: usize) -> usize {
    (fixed + 1 + text + min_pad).div_ceil(4) * 4
}

/// Writes an SDES packet with one chunk holding our CNAME (RFC 3550 §6.5, §6.5.1); returns its
/// length. The item list ends with a null octet and zero padding to a word boundary.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &str) -> Result<usize, RtcpError> {
    let text = cname.as_bytes();
    let text_len =
        u8::try_from(text.len()).map_err(|_| RtcpError::TextTooLong { len: text.len() })?;
    // header + SSRC + type octet, then length + text + at least one END octet.
    let len = padded_len(HEADER_LEN + 4 + 1, text.len(), 1);
    check_room(out, len)?;
    put_header(out, 1, PT_SDES, len);
    put_u32(out, 4, ssrc);
    out[8] = SDES_CNAME;
    out[9] = text_len;
    out[10..10 + text.len()].copy_from_slice(text);
    out[10 + text.len()..len].fill(0);
    Ok(len)
}

/// Writes a BYE for our SSRC with an optional reason (RFC 3550 §6.6); returns its length.
pub fn write_bye(out: &mut [u8], ssrc: u32, reason: Option<&str>) -> Result<usize, RtcpError> {
    let len = match reason {
        Some(r) => padded_len(HEADER_LEN + 4, r.len(), 0),
        None => HEADER_LEN + 4,
    };
    if let Some(r) = reason
        && r.len() > 255
    {
        return Err(RtcpError::TextTooLong { len: r.len() });
    }
    check_room(out, len)?;
    put_header(out, 1, PT_BYE, len);
    put_u32(out, 4, ssrc);
    if let Some(r) = reason {
        out[8] = r.len() as u8;
        out[9..9 + r.len()].copy_from_slice(r.as_bytes());
        out[9 + r.len()..len].fill(0);
    }
    Ok(len)
}

/// The last SR heard from the caller, for LSR/DLSR.
#[derive(Debug, Clone, Copy)]
struct LastSr {
    ssrc: u32,
    ntp_middle: u32,
    arrival: Instant,
}

/// What one incoming compound RTCP packet told us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// The sender of the first SR or RR in the packet.
    pub sender_ssrc: Option<u32>,
    /// An SR was recorded for LSR/DLSR.
    pub sender_report: bool,
    /// The caller's report block about our stream, if it sent one.
    pub about_us: Option<ReportBlock>,
    /// A BYE was present: the caller's media is leaving.
    pub bye: bool,
}

/// Our side of RTCP for one call leg: CNAME, SR/RR choice and LSR/DLSR bookkeeping.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    last_sr: Option<LastSr>,
    /// Packet counts at the last two reports: we still count as a sender if we sent since the
    /// report before the last (RFC 3550 §6.4).
    sent_at_reports: [u32; 2],
}

impl RtcpSession {
    /// A session for our `ssrc` (the RTP sender's) announcing `cname` (at most 255 bytes;
    /// RFC 3550 §6.5.1 suggests `user@host` or an address).
    pub fn new(ssrc: u32, cname: &str) -> Result<RtcpSession, RtcpError> {
        if cname.len() > 255 {
            return Err(RtcpError::TextTooLong { len: cname.len() });
        }
        Ok(RtcpSession {
            ssrc,
            cname: cname.to_owned(),
            last_sr: None,
            sent_at_reports: [0; 2],
        })
    }

    /// Writes a compound report, SR if we have sent since the last report (or the one before),
    /// else RR, with a block about the caller's stream if it is valid, then SDES CNAME
    /// (RFC 3550 §6.1); starts a new loss interval in `rx`. Returns the length written.
    pub fn write_report(
        &mut self,
        now: Instant,
        ntp: NtpTimestamp,
        tx: &RtpSender,
        rx: &mut RtpReceiver,
        out: &mut [u8],
    ) -> Result<usize, RtcpError> {
        let block = self.report_block(now, rx);
        let sent = tx.packet_count();
        let n = if sent != self.sent_at_reports[1] {
            let info = SenderInfo {
                ntp,
                rtp_timestamp: tx.timestamp(),
                packet_count: sent,
                octet_count: tx.octet_count(),
            };
            write_sr(out, self.ssrc, &info, block.as_ref())?
        } else {
            write_rr(out, self.ssrc, block.as_ref())?
        };
        let n = n + write_sdes_cname(&mut out[n..], self.ssrc, &self.cname)?;
        self.sent_at_reports = [sent, self.sent_at_reports[0]];
        Ok(n)
    }

    /// Writes a final compound packet: report, SDES, then BYE with an optional reason
    /// (RFC 3550 §6.1: BYE comes last). Returns the length written.
    pub fn write_goodbye(
        &mut self,
        now: Instant,
        ntp: NtpTimestamp,
        tx: &RtpSender,
        rx: &mut RtpReceiver,
        reason: Option<&str>,
        out: &mut [u8],
    ) -> Result<usize, RtcpError> {
        let n = self.write_report(now, ntp, tx, rx, out)?;
        Ok(n + write_bye(&mut out[n..], self.ssrc, reason)?)
    }

    fn report_block(&self, now: Instant, rx: &mut RtpReceiver) -> Option<ReportBlock> {
        let ssrc = rx.ssrc()?;
        if rx.expected() == 0 {
            return None;
        }
        let interval = rx.take_interval();
        let (lsr, dlsr) = match self.last_sr {
            Some(sr) if sr.ssrc == ssrc => {
                let delay = now.saturating_duration_since(sr.arrival);
                let units = delay.as_nanos() * 65536 / 1_000_000_000;
                (sr.ntp_middle, u32::try_from(units).unwrap_or(u32::MAX))
            }
            _ => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost: fraction_lost(interval),
            cumulative_lost: clamp_cumulative_lost(rx.lost()),
            ext_highest_seq: rx.ext_max() as u32,
            jitter: rx.jitter(),
            lsr,
            dlsr,
        })
    }

    /// Reads an incoming compound packet that arrived at `now`: remembers the caller's SR for
    /// LSR/DLSR, picks out its report on our stream and notices BYE.
    pub fn on_rtcp(&mut self, now: Instant, buf: &[u8]) -> Result<RtcpSummary, RtcpError> {
        let mut summary = RtcpSummary::default();
        for (i, packet) in parse_compound(buf).enumerate() {
            let packet = packet?;
            let blocks = match packet {
                RtcpPacket::SenderReport {
                    ssrc, ntp, blocks, ..
                } => {
                    self.last_sr = Some(LastSr {
                        ssrc,
                        ntp_middle: ntp.middle32(),
                        arrival: now,
                    });
                    summary.sender_report = true;
                    summary.sender_ssrc.get_or_insert(ssrc);
                    Some(blocks)
                }
                RtcpPacket::ReceiverReport { ssrc, blocks } => {
                    summary.sender_ssrc.get_or_insert(ssrc);
                    Some(blocks)
                }
                RtcpPacket::Bye { .. } => {
                    summary.bye = true;
                    None
                }
                RtcpPacket::Sdes { .. } | RtcpPacket::Other { .. } => None,
            };
            if i == 0 && blocks.is_none() {
                return Err(RtcpError::NotCompound {
                    packet_type: buf.get(1).copied().unwrap_or(0),
                });
            }
            if let Some(mine) = blocks.into_iter().flatten().find(|b| b.ssrc == self.ssrc) {
                summary.about_us = Some(mine);
            }
        }
        Ok(summary)
    }
}

/// One packet of a compound RTCP datagram, borrowing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report (PT 200).
    SenderReport {
        ssrc: u32,
        ntp: NtpTimestamp,
        rtp_timestamp: u32,
        packet_count: u32,
        octet_count: u32,
        blocks: ReportBlocks<'a>,
    },
    /// Receiver report (PT 201).
    ReceiverReport { ssrc: u32, blocks: ReportBlocks<'a> },
    /// Source description (PT 202): the first chunk's SSRC and CNAME, if present.
    Sdes { ssrc: u32, cname: Option<&'a [u8]> },
    /// Goodbye (PT 203): the SSRCs leaving (4 bytes each) and the reason text, if any.
    Bye {
        ssrcs: &'a [u8],
        reason: Option<&'a [u8]>,
    },
    /// Any other packet type (APP, feedback, XR …), skipped.
    Other { packet_type: u8 },
}

/// Iterator over the report blocks of an SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    bytes: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (b, rest) = self.bytes.split_first_chunk::<REPORT_BLOCK_LEN>()?;
        self.bytes = rest;
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let lost = word(4);
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: word(0),
            fraction_lost: (lost >> 24) as u8,
            cumulative_lost,
            ext_highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        })
    }
}

/// Iterates the packets of a compound RTCP datagram; yields an error and stops at the first
/// malformed one.
pub fn parse_compound(buf: &[u8]) -> RtcpPackets<'_> {
    RtcpPackets { buf, offset: 0 }
}

/// Iterator returned by [`parse_compound`].
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.buf.len() {
            return None;
        }
        let result = self.next_packet();
        if result.is_err() {
            self.offset = self.buf.len();
        }
        Some(result)
    }
}

impl<'a> RtcpPackets<'a> {
    fn next_packet(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        let rest = &self.buf[self.offset..];
        let truncated = |needed| RtcpError::Truncated {
            offset: self.offset,
            needed,
            len: self.buf.len(),
        };
        let header = rest
            .first_chunk::<HEADER_LEN>()
            .ok_or(truncated(HEADER_LEN))?;
        let version = header[0] >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion { version });
        }
        let count = header[0] & 0x1F;
        let packet_type = header[1];
        let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let packet = rest.get(..len).ok_or(truncated(len))?;
        self.offset += len;
        // Padding (P bit) is counted in the length; the octet count at the end says how much of
        // the body to ignore (RFC 3550 §6.4.1).
        let body = if header[0] & 0x20 != 0 {
            let pad = usize::from(packet[len - 1]);
            packet
                .get(HEADER_LEN..len.saturating_sub(pad))
                .unwrap_or(&[])
        } else {
            &packet[HEADER_LEN..]
        };
        parse_body(packet_type, count, body)
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn parse_body(packet_type: u8, count: u8, body: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    let bad = RtcpError::BadLength { packet_type, count };
    let blocks_at = |start: usize| {
        let end = start + usize::from(count) * REPORT_BLOCK_LEN;
        body.get(start..end).map(|bytes| ReportBlocks { bytes })
    };
    match packet_type {
        PT_SR => {
            let word = |at| be32(body, at).ok_or(bad.clone());
            Ok(RtcpPacket::SenderReport {
                ssrc: word(0)?,
                ntp: NtpTimestamp((u64::from(word(4)?) << 32) | u64::from(word(8)?)),
                rtp_timestamp: word(12)?,
                packet_count: word(16)?,
                octet_count: word(20)?,
                blocks: blocks_at(4 + SENDER_INFO_LEN).ok_or(bad.clone())?,
            })
        }
        PT_RR => Ok(RtcpPacket::ReceiverReport {
            ssrc: be32(body, 0).ok_or(bad.clone())?,
            blocks: blocks_at(4).ok_or(bad)?,
        }),
        PT_SDES => {
            let ssrc = be32(body, 0).ok_or(bad)?;
            let cname = match body.get(4..6) {
                Some([SDES_CNAME, n]) => body.get(6..6 + usize::from(*n)),
                _ => None,
            };
            Ok(RtcpPacket::Sdes { ssrc, cname })
        }
        PT_BYE => {
            let ssrc_len = usize::from(count) * 4;
            let ssrcs = body.get(..ssrc_len).ok_or(bad)?;
            let reason = body.get(ssrc_len).and_then(|&n| {
                let start = ssrc_len + 1;
                body.get(start..start + usize::from(n))
            });
            Ok(RtcpPacket::Bye { ssrcs, reason })
        }
        _ => Ok(RtcpPacket::Other { packet_type }),
    }
}

#[cfg(test)]
#[path = "rtcp_tests.rs"]
mod tests;
