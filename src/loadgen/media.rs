//! The load generator's one RTP socket for every call.
//!
//! Every call's SDP offer advertises this socket's port, so all audio and RFC 4733 key packets
//! leave from it (keys from the same address as the audio, as ivrd's symmetric-RTP latch
//! requires: it takes the first source that matches and ignores others). ivrd sends each call's
//! RTP from that call's own port, so ivrd's source port tells which call a packet belongs to:
//! that is how media arrival is counted per call without a socket per call.
//!
//! Sending goes through [`SendBatch`] (one `sendmmsg` per tick instead of one `sendto` per
//! packet). Receiving is chosen by [`RtpDrain`]: every tick, only in a short window each second,
//! or never (the kernel drops what overflows the receive buffer, which costs us nothing). Reads
//! use `recvmmsg` and copy only the 12-byte RTP header of each packet.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::LoadgenError;
use crate::media::rtp::RTP_HEADER_LEN;
use crate::udp_batch::{Flushed, MAX_BATCH, RecvBatch, SendBatch, set_recv_buffer};

/// Bytes of each received datagram we look at: the RTP fixed header.
const RECV_SLOT: usize = RTP_HEADER_LEN;
/// Receive buffer asked for with [`RtpDrain::Full`]: 4 MB (the kernel books twice that, ~600 B
/// per queued datagram here) holds ~13,000 packets, ~90 ms of ivrd's RTP at 3,000 calls, so a
/// late tick loses nothing. [`RtpDrain::Sampled`] needs it too: the buffer must hold one tick of
/// every call's packets, because ivrd's workers send their calls in the same order every tick;
/// with 1 MB (~1,700 datagrams) the calls sent last found it full in every window and counted
/// as "no media" (up to 198 of 6,000 at 3,000 calls).
const RECV_BUFFER: usize = 4 << 20;
/// Tries to find an even port whose odd neighbour is free too.
const BIND_ATTEMPTS: usize = 64;
/// [`RtpDrain::Sampled`]: read during the first `SAMPLE_WINDOW` of every `SAMPLE_PERIOD`.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
const SAMPLE_WINDOW: Duration = Duration::from_millis(100);

/// Whether and when ivrd's RTP to us is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpDrain {
    /// Never: no `no_media` count, no receive cost.
    Off,
    /// Every tick: every packet is read and counted.
    Full,
    /// Every tick of the first 100 ms of each second. ivrd sends every call's frame each 20 ms,
    /// so a window sees about five packets of every call that has media then, and any call
    /// with more than 1.1 s of media is seen; the rest of the second the kernel queues up to the
    /// buffer and drops the rest, and the window's first read takes that backlog (still counted
    /// by source port).
    Sampled,
}

impl std::str::FromStr for RtpDrain {
    type Err = String;

    fn from_str(s: &str) -> Result<RtpDrain, String> {
        match s {
            "off" => Ok(RtpDrain::Off),
            "full" => Ok(RtpDrain::Full),
            "sampled" => Ok(RtpDrain::Sampled),
            other => Err(format!("{other:?}: expected full, sampled or off")),
        }
    }
}

/// Counters of the shared socket over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RtpStats {
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Packets the kernel refused (dropped, as a network would).
    pub dropped: u64,
    /// `sendmmsg` calls.
    pub send_calls: u64,
    /// Packets received from ivrd (only when draining).
    pub received: u64,
    /// `recvmmsg` calls.
    pub recv_calls: u64,
}

/// The shared RTP socket, its send batch and the per-call arrival counts.
pub struct SharedRtp {
    socket: UdpSocket,
    /// Bound at the RTP port + 1 (RFC 3550 §11) so that ivrd's RTCP reaches a socket instead of
    /// provoking ICMP port-unreachable; never read.
    _rtcp: UdpSocket,
    port: u16,
    out: SendBatch,
    inbox: Option<RecvBatch>,
    mode: RtpDrain,
    since: Instant,
    /// ivrd's RTP port → index + 1 of the call it is sending for (0: none).
    call_by_port: Vec<u32>,
    /// Packets from ivrd per call index.
    received: Vec<u32>,
    stats: RtpStats,
}

impl SharedRtp {
    /// Binds an even port on `ip` and the odd one above it; `mode` says when ivrd's RTP is read.
    pub fn bind(ip: std::net::IpAddr, mode: RtpDrain) -> Result<SharedRtp, LoadgenError> {
        let drain = mode != RtpDrain::Off;
        let any = SocketAddr::new(ip, 0);
        let bind_err = |addr, source| LoadgenError::Bind { addr, source };
        let (socket, rtcp, port) = (0..BIND_ATTEMPTS)
            .find_map(|_| {
                let rtp = UdpSocket::bind(any).ok()?;
                let port = rtp.local_addr().ok()?.port();
                if port % 2 != 0 || port == u16::MAX {
                    return None;
                }
                let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1)).ok()?;
                Some((rtp, rtcp, port))
            })
            .ok_or_else(|| {
                bind_err(
                    any,
                    std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        "no free even/odd RTP/RTCP port pair",
                    ),
                )
            })?;
        let here = SocketAddr::new(ip, port);
        socket
            .set_nonblocking(true)
            .map_err(|source| bind_err(here, source))?;
        let buffer = match mode {
            RtpDrain::Off => None,
            RtpDrain::Full | RtpDrain::Sampled => Some(RECV_BUFFER),
        };
        if let Some(bytes) = buffer {
            set_recv_buffer(&socket, bytes).map_err(|source| bind_err(here, source))?;
        }
        Ok(SharedRtp {
            socket,
            _rtcp: rtcp,
            port,
            out: SendBatch::new(
                MAX_BATCH,
                RTP_HEADER_LEN + crate::media::g711::FRAME_SAMPLES,
            ),
            inbox: drain.then(|| RecvBatch::new(64, RECV_SLOT)),
            mode,
            since: Instant::now(),
            call_by_port: vec![0; usize::from(u16::MAX) + 1],
            received: Vec::new(),
            stats: RtpStats::default(),
        })
    }

    /// The port every call offers in its SDP.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether ivrd's RTP is read and counted.
    pub fn drains(&self) -> bool {
        self.inbox.is_some()
    }

    /// Queues one packet; sends the batch first if it is full.
    pub fn queue(&mut self, to: SocketAddr, bytes: &[u8]) {
        if self.out.is_full() {
            self.flush();
        }
        if !self.out.push(to, bytes) {
            self.stats.dropped += 1;
        }
    }

    /// Sends everything queued.
    pub fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let Flushed {
            sent,
            dropped,
            calls,
        } = self.out.flush(&self.socket);
        self.stats.sent += sent as u64;
        self.stats.dropped += dropped as u64;
        self.stats.send_calls += calls as u64;
    }

    /// From now on, RTP from `ivrd` (that call's RTP address in ivrd's answer) counts for call
    /// `call`. A port ivrd reuses for a later call is taken over by that call.
    pub fn expect_from(&mut self, call: usize, ivrd: SocketAddr) {
        if let (Some(slot), Ok(tag)) = (
            self.call_by_port.get_mut(usize::from(ivrd.port())),
            u32::try_from(call + 1),
        ) {
            *slot = tag;
        }
    }

    /// Reads everything queued from ivrd and counts it per call, when the mode says so at `now`.
    pub fn drain(&mut self, now: Instant) {
        let in_window = || {
            let offset = now.saturating_duration_since(self.since).as_nanos();
            offset % SAMPLE_PERIOD.as_nanos() < SAMPLE_WINDOW.as_nanos()
        };
        if self.mode == RtpDrain::Sampled && !in_window() {
            return;
        }
        self.drain_now();
    }

    /// Reads everything queued from ivrd (unless draining is off) and counts it per call.
    pub fn drain_now(&mut self) {
        let Some(inbox) = self.inbox.as_mut() else {
            return;
        };
        // A receive error on UDP (e.g. a queued ICMP error) says nothing about media: stop.
        while let Ok(n) = inbox.recv(&self.socket) {
            self.stats.recv_calls += 1;
            self.stats.received += n as u64;
            for datagram in inbox.iter() {
                let Some(source) = datagram.source else {
                    continue;
                };
                let tag = self.call_by_port[usize::from(source.port())];
                if let Some(index) = (tag as usize).checked_sub(1) {
                    if self.received.len() <= index {
                        self.received.resize(index + 1, 0);
                    }
                    self.received[index] = self.received[index].saturating_add(1);
                }
            }
            if n < inbox.capacity() {
                break;
            }
        }
    }

    /// Packets from ivrd counted for call `index` (0 when not draining).
    pub fn received(&self, index: usize) -> u32 {
        self.received.get(index).copied().unwrap_or(0)
    }

    /// The run's counters.
    pub fn stats(&self) -> RtpStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two "ivrd call" sockets send to the shared socket; arrivals are counted per call by
    /// source port, and our batched packets reach each of them from the one shared port.
    #[test]
    fn arrivals_are_counted_per_call_by_ivrds_source_port() {
        let ip = "127.0.0.1".parse().unwrap();
        let mut rtp = SharedRtp::bind(ip, RtpDrain::Full).unwrap();
        assert_eq!(rtp.port() % 2, 0);
        let here = SocketAddr::new(ip, rtp.port());
        let ivrd_a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ivrd_b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.expect_from(0, ivrd_a.local_addr().unwrap());
        rtp.expect_from(7, ivrd_b.local_addr().unwrap());
        for _ in 0..3 {
            ivrd_a.send_to(&[0x80; 172], here).unwrap();
        }
        ivrd_b.send_to(&[0x80; 172], here).unwrap();
        stranger.send_to(&[0x80; 172], here).unwrap();
        rtp.drain(Instant::now());
        assert_eq!(rtp.received(0), 3);
        assert_eq!(rtp.received(7), 1);
        assert_eq!(rtp.received(1), 0);
        assert_eq!(
            rtp.stats().received,
            5,
            "the stranger is read but counted for no call"
        );

        rtp.queue(ivrd_a.local_addr().unwrap(), b"to a");
        rtp.queue(ivrd_b.local_addr().unwrap(), b"to b");
        rtp.flush();
        let s = rtp.stats();
        assert_eq!((s.sent, s.dropped, s.send_calls), (2, 0, 1));
        let mut buf = [0u8; 16];
        let (n, from) = ivrd_b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"to b"[..], here));
    }

    #[test]
    fn without_draining_nothing_is_read() {
        let ip = "127.0.0.1".parse().unwrap();
        let mut rtp = SharedRtp::bind(ip, RtpDrain::Off).unwrap();
        let ivrd = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.expect_from(0, ivrd.local_addr().unwrap());
        ivrd.send_to(&[0x80; 172], SocketAddr::new(ip, rtp.port()))
            .unwrap();
        rtp.drain(Instant::now());
        rtp.drain_now();
        assert!(!rtp.drains());
        assert_eq!((rtp.received(0), rtp.stats().recv_calls), (0, 0));
    }

    #[test]
    fn sampled_draining_reads_only_in_the_window_and_then_takes_the_backlog() {
        let ip = "127.0.0.1".parse().unwrap();
        let mut rtp = SharedRtp::bind(ip, RtpDrain::Sampled).unwrap();
        let start = rtp.since;
        let ivrd = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.expect_from(4, ivrd.local_addr().unwrap());
        let here = SocketAddr::new(ip, rtp.port());
        ivrd.send_to(&[0x80; 172], here).unwrap();
        rtp.drain(start + SAMPLE_WINDOW + Duration::from_millis(1));
        rtp.drain(start + SAMPLE_PERIOD - Duration::from_millis(1));
        assert_eq!(rtp.received(4), 0, "outside the window nothing is read");
        ivrd.send_to(&[0x80; 172], here).unwrap();
        rtp.drain(start + SAMPLE_PERIOD + Duration::from_millis(10));
        assert_eq!(
            rtp.received(4),
            2,
            "the window reads the queued backlog too"
        );
    }
}
