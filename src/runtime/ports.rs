//! The RTP port pool: even ports for RTP, the odd one above for RTCP (RFC 3550 §11). A port is
//! reserved by binding both sockets, so a call is only answered with a port that really is ours.

use crate::sip::uas::RtpPortSource;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Receive buffer asked for on each RTP socket (the kernel doubles it for its bookkeeping).
const RTP_RECV_BUFFER: usize = 512 * 1024;

/// Bound RTP and RTCP sockets of one reserved port pair.
#[derive(Debug)]
pub struct RtpSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

/// Round-robin pool over an even port range; reusing ports late lets stray packets of an ended
/// call fade before the port serves a new one.
#[derive(Debug)]
pub struct RtpPortPool {
    bind_ip: IpAddr,
    first: u16,
    pairs: usize,
    next: usize,
    in_use: Vec<bool>,
    bound: HashMap<u16, RtpSockets>,
    used: usize,
}

impl RtpPortPool {
    /// A pool over `first..=last` (first is even), binding on `bind_ip`.
    pub fn new(bind_ip: IpAddr, first: u16, last: u16) -> Self {
        let pairs = usize::from((last - first).div_ceil(2));
        RtpPortPool {
            bind_ip,
            first,
            pairs,
            next: 0,
            in_use: vec![false; pairs],
            bound: HashMap::new(),
            used: 0,
        }
    }

    /// Hands the sockets of a reserved port to its call.
    pub fn take(&mut self, port: u16) -> Option<RtpSockets> {
        self.bound.remove(&port)
    }

    /// Ports reserved now, and the pool's size.
    pub fn usage(&self) -> (usize, usize) {
        (self.used, self.pairs)
    }

    fn bind_pair(&self, port: u16) -> Option<RtpSockets> {
        let rtp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port)).ok()?;
        let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port + 1)).ok()?;
        rtp.set_nonblocking(true).ok()?;
        // Room for a flood's backlog between two reads of the media clock, so that the
        // caller's packets are not the ones the kernel drops. Only what is queued costs
        // memory; without CAP_NET_ADMIN the kernel caps the request at `net.core.rmem_max`.
        let _ = crate::udp_batch::set_recv_buffer(&rtp, RTP_RECV_BUFFER);
        rtcp.set_nonblocking(true).ok()?;
        // The media clock reads these every few ticks; jitter and DLSR need the arrival time.
        for socket in [&rtp, &rtcp] {
            if let Err(e) = crate::udp_batch::enable_receive_timestamps(socket) {
                tracing::debug!(port, error = %e, "no kernel receive timestamps on a media socket");
            }
        }
        Some(RtpSockets { rtp, rtcp })
    }
}

impl RtpPortSource for RtpPortPool {
    fn reserve(&mut self) -> Option<u16> {
        for _ in 0..self.pairs {
            let index = self.next;
            self.next = (self.next + 1) % self.pairs;
            if self.in_use[index] {
                continue;
            }
            let port = self.first + 2 * index as u16;
            // A port another process holds is skipped, not fatal.
            if let Some(sockets) = self.bind_pair(port) {
                self.in_use[index] = true;
                self.used += 1;
                self.bound.insert(port, sockets);
                return Some(port);
            }
        }
        None
    }

    fn release(&mut self, port: u16) {
        let index = usize::from((port - self.first) / 2);
        if let Some(slot) = self.in_use.get_mut(index).filter(|s| **s) {
            *slot = false;
            self.used -= 1;
        }
        self.bound.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds six consecutive free ports starting at an even port, holding all of them.
    fn hold_block(ip: IpAddr) -> (u16, Vec<UdpSocket>) {
        for _ in 0..500 {
            let probe = UdpSocket::bind((ip, 0)).expect("probe");
            let base = probe.local_addr().expect("addr").port() & !1;
            drop(probe);
            let held: Vec<UdpSocket> = (base..base.saturating_add(6))
                .filter_map(|p| UdpSocket::bind((ip, p)).ok())
                .collect();
            if held.len() == 6 {
                return (base, held);
            }
        }
        panic!("no six free consecutive ports")
    }

    #[test]
    fn reserves_even_pairs_round_robin_and_skips_taken_ports() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let (base, mut held) = hold_block(ip);
        // Keep base+2/base+3 held elsewhere; free the rest for the pool.
        let blocker = held.remove(2);
        drop(held);
        let mut pool = RtpPortPool::new(ip, base, base + 5);
        assert_eq!(pool.reserve(), Some(base));
        assert_eq!(
            pool.reserve(),
            Some(base + 4),
            "the pair held elsewhere is skipped"
        );
        assert_eq!(pool.reserve(), None, "exhausted");
        assert!(pool.take(base).is_some());
        pool.release(base);
        assert_eq!(pool.usage().0, 1);
        pool.release(base);
        assert_eq!(pool.usage().0, 1, "double release is harmless");
        drop(blocker);
    }

    #[test]
    fn a_calls_sockets_come_non_blocking_with_kernel_receive_timestamps() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let (base, held) = hold_block(ip);
        drop(held);
        let mut pool = RtpPortPool::new(ip, base, base + 1);
        let port = pool.reserve().expect("a pair");
        let sockets = pool.take(port).expect("bound");
        let mut batch = crate::udp_batch::RecvBatch::new(4, 1500);
        assert_eq!(batch.recv(&sockets.rtp).expect("non-blocking"), 0);
        let caller = UdpSocket::bind((ip, 0)).expect("caller");
        for socket in [&sockets.rtp, &sockets.rtcp] {
            let to = socket.local_addr().expect("addr");
            caller.send_to(b"x", to).expect("send");
            assert_eq!(batch.recv(socket).expect("recv"), 1);
            assert!(batch.iter().all(|d| d.received_at.is_some()), "{to}");
        }
    }
}
