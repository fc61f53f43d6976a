//! Shared harness for the black-box and SIPp tests: the real server started in-process on
//! 127.0.0.1 port 0, and a small raw-SIP client (UDP and TCP) that reads what ivrd sends back.
//!
//! The server is bound before `run` starts, so it is ready when [`TestServer::start`] returns: no
//! test waits with a sleep. Every read has a timeout, so a test can fail but never hang.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod media;
pub mod sipp;

use ivrd::config::Config;
use ivrd::runtime::Server;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one message before it fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// A configuration for tests: loopback, port 0, no drain wait, short T1 so retransmission and
/// transaction timers run in test time.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.sip.listen = vec!["127.0.0.1:0".parse().expect("literal address")];
    config.sip.drain_secs = 0;
    config.sip.t1_ms = 100;
    config.sip.t2_ms = 400;
    config.sip.t4_ms = 500;
    config.metrics.listen = "127.0.0.1:0".parse().expect("literal address");
    config.storage.dir = unique_storage_dir();
    config
}

/// A fresh storage directory per test server, so recordings and cases of parallel tests never mix.
pub fn unique_storage_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ivrd-test-{}-{n}", std::process::id()))
}

/// The real server running on its own tokio runtime in a background thread.
pub struct TestServer {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The metrics/health HTTP address.
    pub metrics: SocketAddr,
    /// `[storage] dir`: recordings and the case outbox.
    pub storage: std::path::PathBuf,
    /// Cancelling this begins the drain, exactly as SIGTERM does in the binary.
    pub shutdown: CancellationToken,
    finished: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Binds the server with `config` and starts it; returns once it is ready (storage open,
    /// SIP requests handled).
    pub fn start(config: Config) -> TestServer {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (addrs_tx, addrs_rx) = mpsc::channel();
        let storage = config.storage.dir.clone();
        let (finished_tx, finished) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let server = match Server::bind(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = addrs_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let metrics = server.metrics_addr().expect("metrics bound");
                let addrs = (server.udp_addrs()[0], server.tcp_addrs()[0], metrics);
                // Tests start once requests are served, not merely queued in the socket while
                // storage opens (its fsyncs can take seconds on a busy disk).
                let ready = server.readiness();
                tokio::spawn(async move {
                    ready.ready().await;
                    let _ = addrs_tx.send(Ok(addrs));
                });
                server.run(token).await;
                let _ = finished_tx.send(());
            });
        });
        let (udp, tcp, metrics) = addrs_rx
            .recv()
            .expect("server thread reports its addresses")
            .expect("server binds");
        TestServer {
            udp,
            tcp,
            metrics,
            storage,
            shutdown,
            finished,
            thread: Some(thread),
        }
    }

    /// Waits up to `timeout` for `run` to return (after the drain); true when it did.
    pub fn wait_finished(&mut self, timeout: Duration) -> bool {
        let done = self.finished.recv_timeout(timeout).is_ok();
        if done {
            if let Some(t) = self.thread.take() {
                t.join().expect("server thread did not panic");
            }
        }
        done
    }
}

impl TestServer {
    /// The body of `GET /metrics` (Prometheus text).
    pub fn scrape(&self) -> String {
        scrape_metrics(self.metrics)
    }
}

/// The body of `GET /metrics` from ivrd's metrics listener at `metrics`.
pub fn scrape_metrics(metrics: SocketAddr) -> String {
    let mut stream = TcpStream::connect(metrics).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: ivrd\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The thread ends by itself once the drain is over; a test does not wait for it.
        self.shutdown.cancel();
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(1);

/// A value unique within the test process (for Call-IDs, tags and branches).
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// A fresh RFC 3261 branch (magic cookie prefix).
pub fn branch() -> String {
    unique("z9hG4bK")
}

/// An SDP offer from `addr` with the given static payload types, optional direction attribute.
pub fn sdp_offer(addr: SocketAddr, pts: &[u8], direction: Option<&str>) -> String {
    let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
    let mut sdp = format!(
        "v=0\r\no=tester 1 1 IN {v} {ip}\r\ns=-\r\nc=IN {v} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {fmts}\r\n",
        v = if addr.is_ipv4() { "IP4" } else { "IP6" },
        ip = addr.ip(),
        port = addr.port(),
        fmts = fmts.join(" "),
    );
    for pt in pts {
        let name = match pt {
            0 => "PCMU",
            8 => "PCMA",
            18 => "G729",
            9 => "G722",
            101 => "telephone-event",
            _ => continue,
        };
        sdp.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
    }
    if let Some(d) = direction {
        sdp.push_str(&format!("a={d}\r\n"));
    }
    sdp
}

/// One SIP message as received: start line, headers in order, body.
#[derive(Debug, Clone)]
pub struct Msg {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Msg {
    /// Parses one whole message (the test client's own small reader, independent of ivrd's).
    pub fn parse(text: &str) -> Msg {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Msg {
            start,
            headers,
            body: body.to_string(),
        }
    }

    /// The status code, for a response.
    pub fn code(&self) -> Option<u16> {
        let rest = self.start.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The method, for a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/") {
            None
        } else {
            self.start.split(' ').next()
        }
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The CSeq method.
    pub fn cseq_method(&self) -> &str {
        self.header("CSeq")
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or_default()
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<String> {
        tag_of(self.header("To")?)
    }

    /// The Contact URI without angle brackets.
    pub fn contact_uri(&self) -> Option<String> {
        let c = self.header("Contact")?;
        let c = c.split_once('<').map_or(c, |(_, r)| r);
        Some(c.split('>').next().unwrap_or(c).to_string())
    }
}

/// The `tag` parameter of a From/To value.
pub fn tag_of(value: &str) -> Option<String> {
    value
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_string)
}

/// A caller's side of one dialog: identifiers and our transport address.
#[derive(Debug, Clone)]
pub struct Leg {
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub cseq: u32,
    /// Our address, as written in Via and Contact.
    pub local: SocketAddr,
    /// "UDP" or "TCP".
    pub transport: &'static str,
    /// The request URI for in-dialog requests (the 200's Contact), once known.
    pub remote_target: Option<String>,
}

impl Leg {
    /// A new leg for a call from `local`.
    pub fn new(local: SocketAddr, transport: &'static str) -> Leg {
        Leg {
            call_id: unique("call-"),
            from_tag: unique("ft"),
            to_tag: None,
            cseq: 1,
            local,
            transport,
            remote_target: None,
        }
    }

    /// Builds a request in this leg with a given branch; `cseq` is the CSeq number to use.
    pub fn request(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        cseq_method: &str,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> String {
        let uri = self
            .remote_target
            .clone()
            .unwrap_or_else(|| "sip:12345@127.0.0.1".to_string());
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let mut msg = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{tr} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: \"Caller\" <sip:13800138000@{host}>;tag={from_tag}\r\n\
             To: <sip:12345@127.0.0.1>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:caller@{local}{tp}>\r\n",
            tr = self.transport,
            local = self.local,
            host = match self.local {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            },
            from_tag = self.from_tag,
            call_id = self.call_id,
            tp = if self.transport == "TCP" {
                ";transport=tcp"
            } else {
                ""
            },
        );
        for (name, value) in extra {
            msg.push_str(&format!("{name}: {value}\r\n"));
        }
        match body {
            Some(b) => msg.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => msg.push_str("Content-Length: 0\r\n\r\n"),
        }
        msg
    }

    /// Takes the dialog state from a 2xx (or other tagged final) to the INVITE.
    pub fn learn(&mut self, resp: &Msg) {
        self.to_tag = resp.to_tag();
        if let Some(c) = resp.contact_uri() {
            self.remote_target = Some(c);
        }
    }

    /// The next CSeq number for a new in-dialog request.
    pub fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }
}

/// A raw-SIP peer over UDP.
pub struct UdpPeer {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

impl UdpPeer {
    /// A loopback socket on port 0 (of `server`'s address family) talking to `server`.
    pub fn new(server: SocketAddr) -> UdpPeer {
        let any: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("literal")
        } else {
            "[::1]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(any).expect("bind client socket");
        UdpPeer { socket, server }
    }

    /// Our address.
    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// Sends one datagram.
    pub fn send(&self, msg: &str) {
        self.socket
            .send_to(msg.as_bytes(), self.server)
            .expect("send datagram");
    }

    /// The next message within `timeout`, or `None`.
    pub fn recv_within(&self, timeout: Duration) -> Option<Msg> {
        let mut buf = vec![0u8; 65_536];
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("set timeout");
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => Some(Msg::parse(&String::from_utf8_lossy(&buf[..n]))),
            Err(_) => None,
        }
    }

    /// The next message; fails the test after [`READ_TIMEOUT`].
    pub fn recv(&self) -> Msg {
        self.recv_within(READ_TIMEOUT)
            .expect("a message from ivrd within the read timeout")
    }

    /// The next response to `method` with code `code`, skipping provisional responses and
    /// retransmissions of other responses; fails on any other final response.
    pub fn expect(&self, code: u16, method: &str) -> Msg {
        self.expect_all(&[(code, method)]).remove(0)
    }

    /// Every response in `wanted`, in any order (see [`UdpPeer::expect`]); returned in
    /// `wanted`'s order.
    pub fn expect_all(&self, wanted: &[(u16, &str)]) -> Vec<Msg> {
        expect_from(|t| self.recv_within(t), wanted)
    }

    /// The next final response to `method`, whatever its code (other messages are skipped).
    pub fn recv_final(&self, method: &str) -> Msg {
        loop {
            let m = self.recv();
            if m.code().is_some_and(|c| c >= 200) && m.cseq_method() == method {
                return m;
            }
        }
    }

    /// Asserts that nothing at all arrives within `window` (a negative check, so it must wait).
    pub fn expect_silence(&self, window: Duration, what: &str) {
        let deadline = Instant::now() + window;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(m) = self.recv_within(left) {
                panic!("expected no {what}, got {:?}", m.start);
            }
        }
    }
}

/// Shared by UDP and TCP: read until every wanted (code, CSeq method) final response has
/// arrived, in any order. Provisional responses and retransmissions of responses to other methods
/// are skipped; any other final response to a wanted method fails the test.
fn expect_from(mut next: impl FnMut(Duration) -> Option<Msg>, wanted: &[(u16, &str)]) -> Vec<Msg> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut found: Vec<Option<Msg>> = vec![None; wanted.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_default();
        let m = next(left).unwrap_or_else(|| panic!("no {wanted:?} within the timeout"));
        let Some(code) = m.code() else {
            panic!("expected {wanted:?}, got request {:?}", m.start)
        };
        let method = m.cseq_method().to_string();
        if let Some(i) = wanted.iter().position(|(c, w)| *c == code && *w == method) {
            if found[i].is_none() {
                found[i] = Some(m);
            }
            continue;
        }
        let wanted_method = wanted.iter().any(|(_, w)| *w == method);
        assert!(
            code < 200 || !wanted_method,
            "expected {wanted:?}, got {:?} ({})",
            m.start,
            m.header("CSeq").unwrap_or_default()
        );
    }
    found.into_iter().flatten().collect()
}

/// A response to a request ivrd sent (e.g. its BYE): the §8.2.6.2 copied headers and no body.
pub fn respond(req: &Msg, code: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in req.all("Via") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        out.push_str(&format!(
            "{name}: {}\r\n",
            req.header(name).unwrap_or_default()
        ));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// A raw-SIP peer over one TCP connection, framing by Content-Length (RFC 3261 §18.3).
pub struct TcpPeer {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpPeer {
    /// Connects to `server`.
    pub fn connect(server: SocketAddr) -> TcpPeer {
        let stream = TcpStream::connect(server).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        TcpPeer {
            stream,
            buf: Vec::new(),
        }
    }

    /// Our address.
    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Writes bytes in one `write` call (several messages may share it).
    pub fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).expect("write");
    }

    /// The next whole message within `timeout`, or `None`.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = frame(&self.buf) {
                let msg: Vec<u8> = self.buf.drain(..n).collect();
                return Some(Msg::parse(&String::from_utf8_lossy(&msg)));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set timeout");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// See [`UdpPeer::expect`].
    pub fn expect(&mut self, code: u16, method: &str) -> Msg {
        expect_from(|t| self.recv_within(t), &[(code, method)]).remove(0)
    }
}

/// Length of the first whole message in `buf`, if it is complete.
fn frame(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let len = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            n.trim().eq_ignore_ascii_case("Content-Length") || n.trim().eq_ignore_ascii_case("l")
        })
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}
