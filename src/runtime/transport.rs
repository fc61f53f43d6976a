//! SIP transports: UDP sockets and TCP connections (RFC 3261 §18). Each delivers whole messages
//! to the SIP driver through one channel; TCP frames by Content-Length (§18.3).

use crate::sip::header::Transport;
use crate::sip::message::{MAX_MESSAGE_BYTES, frame_len};
use crate::sip::uas::ConnId;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the transports tell the SIP driver.
#[derive(Debug)]
pub enum TransportEvent {
    /// One message (datagram or stream frame).
    Message {
        transport: Transport,
        source: SocketAddr,
        local: SocketAddr,
        conn: Option<ConnId>,
        data: Bytes,
    },
    /// A stream connection opened; responses for it go to `writer`.
    Opened {
        conn: ConnId,
        writer: mpsc::Sender<Bytes>,
    },
    /// A stream connection closed.
    Closed { conn: ConnId },
    /// Garbage on a stream that cannot be framed; the connection is closed.
    Unframeable { source: SocketAddr },
}

/// The SIP UDP sockets, shared by the SIP driver and the call tasks (a call sends its own 200).
/// Each socket's local address is read once, so picking the socket for a peer costs no syscall.
#[derive(Clone, Default)]
pub struct UdpSenders(Arc<[(Arc<UdpSocket>, SocketAddr)]>);

impl UdpSenders {
    /// The bound sockets; one whose address cannot be read is left out (it could not send).
    pub fn new(sockets: &[Arc<UdpSocket>]) -> UdpSenders {
        let bound: Vec<_> = sockets
            .iter()
            .filter_map(|s| s.local_addr().ok().map(|a| (s.clone(), a)))
            .collect();
        UdpSenders(bound.into())
    }

    /// Sends one datagram to `to` from the first socket of its address family. A failure is
    /// logged only: SIP over UDP recovers by retransmission.
    pub async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        let socket = self.0.iter().find(|(_, a)| a.is_ipv4() == to.is_ipv4());
        if let Some((socket, _)) = socket {
            if let Err(e) = socket.send_to(bytes, to).await {
                tracing::debug!(error = %e, %to, "UDP send failed");
            }
        }
    }
}

/// Binds a UDP socket; IPv6 sockets are v6-only so `0.0.0.0` and `[::]` can both be listened on.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Large buffers absorb bursts of INVITEs at call set-up peaks.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Binds a TCP listener (v6-only for IPv6, as for UDP).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Receives datagrams until cancelled.
pub async fn run_udp(
    socket: Arc<UdpSocket>,
    events: mpsc::Sender<TransportEvent>,
    stop: CancellationToken,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            // Keep-alive CRLFs (RFC 5626 §3.5.1) carry no message.
            Ok((n, _)) if buf[..n].iter().all(|b| b.is_ascii_whitespace()) => {}
            Ok((n, source)) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                let event = TransportEvent::Message {
                    transport: Transport::Udp,
                    source,
                    local,
                    conn: None,
                    data,
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "UDP receive error"),
        }
    }
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Limits on stream connections: how many at once, how long one may idle between messages, and
/// how long a started message may take to complete (slowloris defence).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub idle: Duration,
    pub partial_message: Duration,
}

/// Accepts TCP connections until cancelled; each gets a reader and a writer task. Beyond
/// `max_connections` new connections are closed at once.
pub async fn run_tcp(
    listener: TcpListener,
    events: mpsc::Sender<TransportEvent>,
    limits: TcpLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = limits.max_connections, "TCP connection limit reached; closing");
                    drop(stream);
                    continue;
                };
                let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                let events = events.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    run_connection(stream, peer, conn, events, limits, stop).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    events: mpsc::Sender<TransportEvent>,
    limits: TcpLimits,
    stop: CancellationToken,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    if events
        .send(TransportEvent::Opened { conn, writer: tx })
        .await
        .is_err()
    {
        return;
    }
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(8192);
    // When the bytes of an unfinished message started arriving.
    let mut partial_since: Option<tokio::time::Instant> = None;
    'read: loop {
        let deadline = match partial_since {
            Some(started) => started + limits.partial_message,
            None => tokio::time::Instant::now() + limits.idle,
        };
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout_at(deadline, reader.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                let why = if partial_since.is_some() {
                    "message incomplete too long"
                } else {
                    "idle"
                };
                tracing::debug!(%peer, why, "closing TCP connection");
                break;
            }
            Ok(Ok(_)) => {}
        }
        loop {
            match frame_len(&buf) {
                Ok(Some(n)) => {
                    partial_since = None;
                    let frame = buf.split_to(n).freeze();
                    let event = TransportEvent::Message {
                        transport: Transport::Tcp,
                        source: peer,
                        local,
                        conn: Some(conn),
                        data: frame,
                    };
                    if events.send(event).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => {
                    // Keep-alive CRLFs alone do not start a message.
                    let started = buf.iter().any(|b| !b.is_ascii_whitespace());
                    partial_since = match (started, partial_since) {
                        (false, _) => None,
                        (true, Some(t)) => Some(t),
                        (true, None) => Some(tokio::time::Instant::now()),
                    };
                    break;
                }
                Err(_) => {
                    let _ = events
                        .send(TransportEvent::Unframeable { source: peer })
                        .await;
                    break 'read;
                }
            }
        }
    }
    let _ = events.send(TransportEvent::Closed { conn }).await;
    writer_task.abort();
}
