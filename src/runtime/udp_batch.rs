//! Reading several UDP datagrams with one system call (`recvmmsg(2)`, non-blocking).
//!
//! The media clock drains every call's RTP socket once per 20 ms tick. With `recv_from` that
//! is two calls per socket per tick — the packet, then the `EAGAIN` that says there is no
//! other — and system calls are most of what a call costs. `recvmmsg` with `MSG_DONTWAIT`
//! returns what is queued, up to the batch size, in one call. std and socket2 do not offer it,
//! so this is the one place with `unsafe`: a thin wrapper with a safe, bounds-checked API.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams one call can return.
pub const BATCH: usize = 32;
/// Bytes of the largest datagram read: an Ethernet MTU, more than any G.711 RTP packet. A
/// longer one is returned empty (so that the RTP parser counts it as malformed) rather than
/// cut to a prefix that might parse.
pub const DATAGRAM_BYTES: usize = 1500;

/// Buffers for one batch, reused across calls.
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM_BYTES]; BATCH]>,
    lens: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: Box::new([[0; DATAGRAM_BYTES]; BATCH]),
            lens: [0; BATCH],
            sources: [None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last [`recv_batch`]: bytes and source address.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        (0..self.count).filter_map(|i| Some((&self.bufs[i][..self.lens[i]], self.sources[i]?)))
    }
}

/// Reads up to [`BATCH`] queued datagrams without waiting. Returns how many were read; 0 when
/// none was queued. Errors are the socket's (`ECONNREFUSED` reports an ICMP error from an
/// earlier send; the socket stays usable).
pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.count = 0;
    // SAFETY: all-zero is a valid value for these C structs (integers and null pointers).
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut iovecs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    for i in 0..BATCH {
        iovecs[i] = libc::iovec {
            iov_base: batch.bufs[i].as_mut_ptr().cast(),
            iov_len: DATAGRAM_BYTES,
        };
        headers[i].msg_hdr.msg_name = (&raw mut addrs[i]).cast();
        headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        headers[i].msg_hdr.msg_iov = &raw mut iovecs[i];
        headers[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live buffer, iovec and address of the right sizes, all
    // of which outlive the call; the kernel writes at most `BATCH` headers.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock => Ok(0),
            _ => Err(err),
        };
    }
    let n = (n as usize).min(BATCH);
    for i in 0..n {
        let truncated = headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        batch.lens[i] = if truncated {
            0
        } else {
            (headers[i].msg_len as usize).min(DATAGRAM_BYTES)
        };
        batch.sources[i] = socket_addr(&addrs[i], headers[i].msg_hdr.msg_namelen);
    }
    batch.count = n;
    Ok(n)
}

/// The address the kernel wrote, for IPv4 and IPv6 (the only families a UDP socket receives).
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is large enough.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(ip: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind((ip, 0)).expect("bind");
        let b = UdpSocket::bind((ip, 0)).expect("bind");
        (a, b)
    }

    #[test]
    fn nothing_queued_is_zero_not_an_error() {
        let (rx, _) = pair("127.0.0.1");
        let mut batch = RecvBatch::default();
        assert_eq!(recv_batch(&rx, &mut batch).expect("recv"), 0);
        assert_eq!(batch.datagrams().count(), 0);
    }

    #[test]
    fn reads_what_is_queued_in_order_with_sources_up_to_the_batch() {
        let (rx, tx) = pair("127.0.0.1");
        let to = rx.local_addr().expect("addr");
        for i in 0..(BATCH + 3) {
            tx.send_to(&vec![i as u8; 10 + i], to).expect("send");
        }
        let mut batch = RecvBatch::default();
        assert_eq!(recv_batch(&rx, &mut batch).expect("recv"), BATCH);
        let from = tx.local_addr().expect("addr");
        for (i, (bytes, source)) in batch.datagrams().enumerate() {
            assert_eq!(bytes, vec![i as u8; 10 + i].as_slice());
            assert_eq!(source, from);
        }
        assert_eq!(recv_batch(&rx, &mut batch).expect("recv"), 3);
        assert_eq!(
            batch.datagrams().next().map(|(b, _)| b.len()),
            Some(10 + BATCH)
        );
        assert_eq!(recv_batch(&rx, &mut batch).expect("recv"), 0);
    }

    #[test]
    fn ipv6_sources_and_oversize_datagrams_come_back_empty() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            // No IPv6 loopback on this machine: the IPv4 tests cover the call itself.
            return;
        };
        let tx = UdpSocket::bind("[::1]:0").expect("bind");
        tx.send_to(&[7u8; DATAGRAM_BYTES + 200], rx.local_addr().expect("addr"))
            .expect("send");
        let mut batch = RecvBatch::default();
        assert_eq!(recv_batch(&rx, &mut batch).expect("recv"), 1);
        let (bytes, source) = batch.datagrams().next().expect("one");
        assert!(bytes.is_empty());
        assert_eq!(source, tx.local_addr().expect("addr"));
    }
}
