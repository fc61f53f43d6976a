//! Batched UDP I/O: `sendmmsg(2)` sends many datagrams (each to its own address) in one system
//! call and `recvmmsg(2)` reads what is queued in one, without blocking. Two users:
//! - the media clock (`runtime::media_call`) drains each call's RTP socket once per 20 ms tick:
//!   with `recv_from` that was two calls per socket per tick (the packet, then the `EAGAIN`);
//! - `ivrd-loadgen` sends one tick of every call's audio from one socket and drains ivrd's RTP.
//!
//! A socket asked with [`enable_receive_timestamps`] also hands each datagram's kernel receive
//! time over ([`Datagram::received_at`]): the media clock reads a socket only every few ticks,
//! and RTP jitter and RTCP's delay since the last SR are about when a packet arrived.
//!
//! std and socket2 offer neither call, so this is where the `unsafe` is. The unsafe blocks only
//! hand the kernel pointers into buffers that [`SendBatch`] and [`RecvBatch`] own and do not
//! touch during the call; the safe API cannot make them dangle.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, SystemTime};

use socket2::SockAddr;

/// The kernel's limit on messages per `sendmmsg`/`recvmmsg` call (`UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

/// What one [`SendBatch::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams given up on (the kernel refused them; a network would have dropped them too).
    pub dropped: usize,
    /// System calls made.
    pub calls: usize,
}

/// Up to `capacity` datagrams of at most `slot` bytes each, waiting to be sent together.
pub struct SendBatch {
    slot: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<SockAddr>,
}

impl SendBatch {
    /// An empty batch; `capacity` is clamped to 1..=[`MAX_BATCH`].
    pub fn new(capacity: usize, slot: usize) -> SendBatch {
        let capacity = capacity.clamp(1, MAX_BATCH);
        SendBatch {
            slot,
            data: vec![0; capacity * slot],
            lens: Vec::with_capacity(capacity),
            addrs: Vec::with_capacity(capacity),
        }
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Whether another datagram would not fit (flush first).
    pub fn is_full(&self) -> bool {
        self.lens.len() == self.lens.capacity()
    }

    /// Copies one datagram in. Returns false, keeping nothing, when the batch is full or the
    /// datagram is longer than a slot.
    pub fn push(&mut self, to: SocketAddr, bytes: &[u8]) -> bool {
        if self.is_full() || bytes.len() > self.slot {
            return false;
        }
        let at = self.lens.len() * self.slot;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
        self.lens.push(bytes.len());
        self.addrs.push(SockAddr::from(to));
        true
    }

    /// Sends everything waiting from `socket` (which should be non-blocking) and empties the
    /// batch. A datagram the kernel refuses (e.g. `EAGAIN` with a full send buffer) is dropped
    /// and the rest still go: this is UDP test traffic, and a stalled tick would be worse.
    pub fn flush(&mut self, socket: &impl AsFd) -> Flushed {
        let mut done = Flushed::default();
        let n = self.lens.len();
        // One base pointer per buffer, offsets from it: no reborrow invalidates an earlier one.
        let data = self.data.as_mut_ptr();
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(n);
        for (i, &len) in self.lens.iter().enumerate() {
            iov.push(libc::iovec {
                iov_base: data.wrapping_add(i * self.slot).cast(),
                iov_len: len,
            });
        }
        let iov_base = iov.as_mut_ptr();
        let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(n);
        for (i, addr) in self.addrs.iter().enumerate() {
            // SAFETY: msghdr is plain data for which all-zero is a valid (empty) value.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = addr.as_ptr().cast_mut().cast();
            hdr.msg_namelen = addr.len();
            hdr.msg_iov = iov_base.wrapping_add(i);
            hdr.msg_iovlen = 1;
            hdrs.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        let fd = socket.as_fd().as_raw_fd();
        let mut from = 0;
        while from < n {
            // SAFETY: `hdrs[from..]` are initialised headers whose name and iovec pointers point
            // into `self.addrs`, `iov` and `self.data`, all alive and unmoved until we return;
            // the kernel only reads them (and writes `msg_len`).
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[from..].as_mut_ptr(),
                    (n - from) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            done.calls += 1;
            if r > 0 {
                done.sent += r as usize;
                from += r as usize;
            } else {
                // sendmmsg reports an error only when the first message of the call failed
                // (sendmmsg(2), RETURN VALUE): skip that one datagram and go on.
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                done.dropped += 1;
                from += 1;
            }
        }
        self.lens.clear();
        self.addrs.clear();
        done
    }
}

/// Buffers for receiving up to `capacity` datagrams in one `recvmmsg`. Each is cut to `slot`
/// bytes (the kernel discards the rest) and flagged as [`Datagram::truncated`]: the load
/// generator reads only RTP headers that way, the media clock refuses such packets.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    names: Vec<libc::sockaddr_storage>,
    /// Room for each datagram's control messages (the receive timestamp) and what they said.
    controls: Vec<Control>,
    received_at: Vec<Option<SystemTime>>,
    /// The kernel's view of the buffers above, rebuilt in place before each call (no
    /// allocation on the packet path).
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers in `iov` and `hdrs` only ever point into this struct's own heap
// buffers and are rewritten before every use; moving the struct to another thread moves the
// buffers with it.
unsafe impl Send for RecvBatch {}

/// Room for one `SCM_TIMESTAMPNS` control message (a `cmsghdr` and a `timespec`: 32 bytes on
/// 64-bit Linux) with slack, aligned as `cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Where it came from (`None` only for an address family UDP does not use).
    pub source: Option<SocketAddr>,
    /// Its bytes, at most the batch's slot.
    pub bytes: &'a [u8],
    /// It was longer than the slot and `bytes` is its beginning only.
    pub truncated: bool,
    /// When the kernel received it (wall clock), on a socket with
    /// [`enable_receive_timestamps`]; `None` otherwise.
    pub received_at: Option<SystemTime>,
}

impl RecvBatch {
    /// Empty buffers; `capacity` is clamped to 1..=[`MAX_BATCH`], `slot` to at least 1.
    pub fn new(capacity: usize, slot: usize) -> RecvBatch {
        let capacity = capacity.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        RecvBatch {
            slot,
            data: vec![0; capacity * slot],
            lens: vec![0; capacity],
            truncated: vec![false; capacity],
            // SAFETY: sockaddr_storage is plain data for which all-zero is valid.
            names: vec![unsafe { zeroed() }; capacity],
            controls: vec![Control([0; 64]); capacity],
            received_at: vec![None; capacity],
            iov: Vec::with_capacity(capacity),
            hdrs: Vec::with_capacity(capacity),
            received: 0,
        }
    }

    /// How many datagrams fit in one call.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Receives what is queued on `socket` without blocking, up to [`RecvBatch::capacity`]
    /// datagrams, replacing the previous batch. Returns how many arrived (0 when none were
    /// queued). `ECONNREFUSED` reports an ICMP error from an earlier send; the socket stays
    /// usable.
    pub fn recv(&mut self, socket: &impl AsFd) -> io::Result<usize> {
        let n = self.capacity();
        let data = self.data.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let controls = self.controls.as_mut_ptr();
        self.iov.clear();
        for i in 0..n {
            self.iov.push(libc::iovec {
                iov_base: data.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            });
        }
        let iov_base = self.iov.as_mut_ptr();
        self.hdrs.clear();
        for i in 0..n {
            // SAFETY: msghdr is plain data for which all-zero is a valid (empty) value.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = names.wrapping_add(i).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = iov_base.wrapping_add(i);
            hdr.msg_iovlen = 1;
            hdr.msg_control = controls.wrapping_add(i).cast();
            hdr.msg_controllen = size_of::<Control>();
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        self.received = 0;
        let r = loop {
            // SAFETY: every header points at a name buffer and a control buffer of the sizes it
            // declares and one iovec over a distinct `slot`-byte part of `self.data`; all outlive
            // the call. No timeout.
            let r = unsafe {
                libc::recvmmsg(
                    socket.as_fd().as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        };
        for (i, hdr) in self.hdrs.iter().enumerate().take(r) {
            // msg_len is the datagram's bytes copied into our slot (at most `slot`).
            self.lens[i] = (hdr.msg_len as usize).min(self.slot);
            self.truncated[i] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.received_at[i] = receive_timestamp(&hdr.msg_hdr);
        }
        self.received = r;
        Ok(r)
    }

    /// The datagrams of the last [`RecvBatch::recv`], in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        (0..self.received).map(move |i| {
            let at = i * self.slot;
            Datagram {
                source: socket_addr(&self.names[i]),
                bytes: &self.data[at..at + self.lens[i]],
                truncated: self.truncated[i],
                received_at: self.received_at[i],
            }
        })
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received datagram, if the kernel attached one.
fn receive_timestamp(hdr: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: `hdr` is a header recvmmsg just filled in: its control pointer and (shortened)
    // length describe our own `Control` buffer, which the CMSG_* walk stays inside of.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET
                && c.cmsg_type == libc::SCM_TIMESTAMPNS
                && c.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                let secs = u64::try_from(ts.tv_sec).ok()?;
                let nanos = u32::try_from(ts.tv_nsec).ok()?;
                return SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Asks the kernel to stamp each datagram `socket` receives with the wall-clock time of its
/// arrival (`SO_TIMESTAMPNS`), which [`RecvBatch::recv`] then reports in
/// [`Datagram::received_at`].
pub fn enable_receive_timestamps(socket: &impl AsFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from the pointer we pass with its size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Dissolves a UDP socket's `connect`: it takes datagrams from every source again and needs an
/// address to send to. std has no call for it; `connect(2)` to an `AF_UNSPEC` address is how.
/// The socket keeps its port only if its `bind` named one (as `RtpPortPool` binds a call's
/// sockets): Linux unbinds a socket bound to port 0 on disconnect.
pub fn disconnect(socket: &impl AsFd) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr is a valid address of family AF_UNSPEC (0); connect reads only
    // the size we pass.
    let mut unspec: libc::sockaddr = unsafe { zeroed() };
    unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: the pointer and size describe `unspec`, which outlives the call.
    let r = unsafe {
        libc::connect(
            socket.as_fd().as_raw_fd(),
            &unspec,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The address in a `sockaddr_storage` the kernel filled in (IPv4 or IPv6).
fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let v4 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

/// Asks for a receive buffer of `bytes` on `socket`: `SO_RCVBUFFORCE` where we may (root or
/// CAP_NET_ADMIN may exceed `net.core.rmem_max`), else `SO_RCVBUF` (capped by the kernel).
/// Returns the size the kernel reports afterwards (it doubles the request for its bookkeeping).
pub fn set_recv_buffer(socket: &std::net::UdpSocket, bytes: usize) -> io::Result<usize> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from the pointer we pass with its size.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let sock = socket2::SockRef::from(socket);
    if forced != 0 {
        sock.set_recv_buffer_size(bytes)?;
    }
    sock.recv_buffer_size()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn bound() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[test]
    fn a_batch_goes_out_in_one_call_to_several_destinations_and_comes_back_in_one() {
        let tx = bound();
        let rx_a = bound();
        let rx_b = bound();
        let mut batch = SendBatch::new(8, 32);
        for i in 0..6u8 {
            let to = if i % 2 == 0 { &rx_a } else { &rx_b };
            assert!(batch.push(to.local_addr().unwrap(), &[i; 20]));
        }
        assert_eq!(batch.len(), 6);
        let done = batch.flush(&tx);
        assert_eq!(
            done,
            Flushed {
                sent: 6,
                dropped: 0,
                calls: 1
            }
        );
        assert!(batch.is_empty());

        // Loopback delivery happens inside sendmmsg, so everything is queued already.
        let mut recv = RecvBatch::new(16, 12);
        assert_eq!(recv.recv(&rx_a).unwrap(), 3);
        for (k, d) in recv.iter().enumerate() {
            assert_eq!(d.source, Some(tx.local_addr().unwrap()));
            // 20-byte datagrams cut to the 12-byte slot, in send order 0, 2, 4, and flagged.
            assert_eq!(d.bytes, &vec![(2 * k) as u8; 12]);
            assert!(d.truncated);
        }
        assert_eq!(recv.recv(&rx_b).unwrap(), 3);
        assert_eq!(
            recv.recv(&rx_b).unwrap(),
            0,
            "drained: no datagram, no error"
        );
    }

    #[test]
    fn nothing_queued_is_zero_and_a_batch_reads_in_order_up_to_its_capacity() {
        let (rx, tx) = (bound(), bound());
        let mut recv = RecvBatch::new(8, 1500);
        assert_eq!(recv.recv(&rx).unwrap(), 0);
        assert_eq!(recv.iter().count(), 0);
        for i in 0..11u8 {
            tx.send_to(&vec![i; 10 + usize::from(i)], rx.local_addr().unwrap())
                .unwrap();
        }
        assert_eq!(recv.recv(&rx).unwrap(), 8);
        for (i, d) in recv.iter().enumerate() {
            assert_eq!(d.bytes, vec![i as u8; 10 + i].as_slice());
            assert_eq!(d.source, Some(tx.local_addr().unwrap()));
            assert!(!d.truncated);
        }
        assert_eq!(recv.recv(&rx).unwrap(), 3);
        assert_eq!(recv.recv(&rx).unwrap(), 0);
    }

    #[test]
    fn datagrams_carry_their_kernel_receive_time_once_the_socket_is_asked() {
        let (rx, tx) = (bound(), bound());
        let mut recv = RecvBatch::new(4, 1500);
        tx.send_to(b"before", rx.local_addr().unwrap()).unwrap();
        assert_eq!(recv.recv(&rx).unwrap(), 1);
        assert_eq!(recv.iter().next().unwrap().received_at, None);

        enable_receive_timestamps(&rx).unwrap();
        let sent = SystemTime::now();
        tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        tx.send_to(b"two", rx.local_addr().unwrap()).unwrap();
        assert_eq!(recv.recv(&rx).unwrap(), 2);
        let read = SystemTime::now();
        let stamps: Vec<SystemTime> = recv.iter().filter_map(|d| d.received_at).collect();
        assert_eq!(stamps.len(), 2);
        // Between the send and the read, in arrival order.
        assert!(sent <= stamps[0] && stamps[0] <= stamps[1] && stamps[1] <= read);
    }

    #[test]
    fn ipv6_sources_are_read_back() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            // No IPv6 loopback on this machine: the IPv4 tests cover the call itself.
            return;
        };
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"six", rx.local_addr().unwrap()).unwrap();
        let mut recv = RecvBatch::new(4, 64);
        assert_eq!(recv.recv(&rx).unwrap(), 1);
        let d = recv.iter().next().unwrap();
        assert_eq!(
            (d.bytes, d.source),
            (&b"six"[..], Some(tx.local_addr().unwrap()))
        );
    }

    #[test]
    fn a_full_batch_or_an_oversized_datagram_is_refused_not_truncated() {
        let mut batch = SendBatch::new(2, 4);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(!batch.push(to, &[0; 5]));
        assert!(batch.push(to, &[0; 4]));
        assert!(batch.push(to, &[0; 1]));
        assert!(batch.is_full());
        assert!(!batch.push(to, &[0; 1]));
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn a_refused_datagram_is_dropped_and_the_rest_still_go() {
        let tx = bound();
        let rx = bound();
        let mut batch = SendBatch::new(4, 16);
        // An IPv6 destination from an IPv4 socket fails with EAFNOSUPPORT/EINVAL at once.
        assert!(batch.push("[::1]:9".parse().unwrap(), b"lost"));
        assert!(batch.push(rx.local_addr().unwrap(), b"kept"));
        let done = batch.flush(&tx);
        assert_eq!((done.sent, done.dropped), (1, 1), "{done:?}");
        let mut recv = RecvBatch::new(4, 16);
        assert_eq!(recv.recv(&rx).unwrap(), 1);
        assert_eq!(
            recv.iter().next().map(|d| (d.bytes.to_vec(), d.truncated)),
            Some((b"kept".to_vec(), false))
        );
    }

    #[test]
    fn capacity_is_clamped_to_the_kernel_limit_and_a_full_batch_is_one_call() {
        let tx = bound();
        let rx = bound();
        set_recv_buffer(&rx, 4 << 20).unwrap();
        let mut batch = SendBatch::new(MAX_BATCH + 10, 8);
        let mut pushed = 0;
        while batch.push(rx.local_addr().unwrap(), &[1; 8]) {
            pushed += 1;
        }
        assert_eq!(pushed, MAX_BATCH, "capacity is clamped to UIO_MAXIOV");
        let done = batch.flush(&tx);
        assert_eq!((done.sent, done.calls), (MAX_BATCH, 1), "{done:?}");
        // Without root the receive buffer stays small and the kernel drops the overflow.
        let mut recv = RecvBatch::new(MAX_BATCH, 8);
        let mut got = 0;
        while let Ok(n) = recv.recv(&rx) {
            if n == 0 {
                break;
            }
            got += n;
        }
        assert!(got > 0 && got <= MAX_BATCH, "{got}");
    }

    #[test]
    fn the_receive_buffer_can_be_raised() {
        let s = bound();
        let before = socket2::SockRef::from(&s).recv_buffer_size().unwrap();
        let after = set_recv_buffer(&s, 2 << 20).unwrap();
        assert!(after >= before, "{before} -> {after}");
    }

    #[test]
    fn a_disconnected_socket_hears_every_source_again_on_its_own_port() {
        // Bound to a named port, as a call's RTP socket is.
        let port = bound().local_addr().unwrap().port();
        let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        s.set_nonblocking(true).unwrap();
        let (peer, other) = (bound(), bound());
        s.connect(peer.local_addr().unwrap()).unwrap();
        other.send_to(b"refused", s.local_addr().unwrap()).unwrap();
        peer.send_to(b"peer", s.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"peer"[..], peer.local_addr().unwrap())
        );
        assert!(
            s.recv_from(&mut buf).is_err(),
            "the other source was refused"
        );

        disconnect(&s).unwrap();
        assert!(s.peer_addr().is_err());
        assert_eq!(s.local_addr().unwrap().port(), port);
        other.send_to(b"other", s.local_addr().unwrap()).unwrap();
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"other"[..], other.local_addr().unwrap())
        );
    }
}
