//! Stream transport limits against the real server: a slowloris that never finishes its message
//! is cut off, connections beyond the cap are closed, and a good client is unaffected.

mod common;

use common::{TestServer, test_config};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads until EOF or error; returns how long that took.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed());
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn a_message_that_never_completes_is_cut_off() {
    let mut cfg = test_config();
    cfg.sip.tcp_message_secs = 1;
    cfg.sip.tcp_idle_secs = 60;
    let srv = TestServer::start(cfg);
    let mut slow = TcpStream::connect(srv.tcp).expect("connect");
    slow.write_all(
        b"INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKs\r\n",
    )
    .expect("write");
    // Dribbling more header bytes does not extend the deadline of the started message.
    slow.write_all(b"X-Slow: 1\r\n").expect("write");
    let closed = time_until_closed(&mut slow, Duration::from_secs(10))
        .expect("the server closes the connection");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    let mut cfg = test_config();
    cfg.sip.max_tcp_connections = 2;
    let srv = TestServer::start(cfg);
    let first = TcpStream::connect(srv.tcp).expect("first");
    let second = TcpStream::connect(srv.tcp).expect("second");
    let mut third = TcpStream::connect(srv.tcp).expect("the kernel accepts the third");
    let closed = time_until_closed(&mut third, Duration::from_secs(5));
    assert!(closed.is_some(), "the third connection is closed by ivrd");
    // The first two still work: OPTIONS on one of them is answered.
    let mut ok = first;
    let options = "OPTIONS sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKo\r\n\
        From: <sip:t@127.0.0.1>;tag=a\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: tcp-cap\r\nCSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    ok.write_all(options.as_bytes()).expect("write");
    ok.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let n = ok.read(&mut buf).expect("a response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));
    drop(second);
}
