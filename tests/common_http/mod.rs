//! A minimal scripted HTTP/1.1 receiver for outbox tests: it stands in for the intake backend.
//!
//! Every request is parsed (request line, headers, `Content-Length` body), recorded into a channel
//! *before* the reply is chosen and sent, so tests synchronise on arrivals instead of sleeping.
//! Replies come from a script, then a default. The receiver can also stall (read the request, never
//! answer) or be down (listener closed, connections refused) and come back up on the same port.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// This status with an empty body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u32 },
    /// Read the request and never answer.
    Stall,
}

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    pub reply: Reply,
}

impl Received {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    default: Option<Reply>,
}

/// The receiver; dropping it stops accepting.
pub struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    tx: mpsc::UnboundedSender<Received>,
    rx: mpsc::UnboundedReceiver<Received>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and answers 200 until told otherwise.
    pub async fn start() -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut receiver = Receiver {
            addr: "127.0.0.1:0".parse().unwrap(),
            script: Arc::new(Mutex::new(Script::default())),
            tx,
            rx,
            accept: None,
        };
        receiver.up().await;
        receiver
    }

    /// The URL to deliver to.
    pub fn url(&self) -> String {
        format!("http://{}/cases", self.addr)
    }

    /// The reply used once the script is exhausted.
    pub fn set_default(&self, reply: Reply) {
        self.script.lock().unwrap().default = Some(reply);
    }

    /// Replies for the next requests, in order.
    pub fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().queue.extend(replies);
    }

    /// The next recorded request; panics after 20 s so a hung test fails instead of hanging.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("no request within 20 s")
            .expect("receiver channel closed")
    }

    /// A request if one is already recorded.
    pub fn try_next(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    /// Closes the listener: new connections are refused until [`Receiver::up`].
    pub async fn down(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again, on the same port once one was assigned.
    pub async fn up(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(64).unwrap();
        self.addr = listener.local_addr().unwrap();
        let (script, tx) = (self.script.clone(), self.tx.clone());
        self.accept = Some(tokio::spawn(accept_loop(listener, script, tx)));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    script: Arc<Mutex<Script>>,
    tx: mpsc::UnboundedSender<Received>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, script.clone(), tx.clone()));
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Mutex<Script>>,
    tx: mpsc::UnboundedSender<Received>,
) {
    let Some((method, path, headers, body)) = read_request(&mut stream).await else {
        return;
    };
    let reply = {
        let mut script = script.lock().unwrap();
        let default = script.default.unwrap_or(Reply::Status(200));
        script.queue.pop_front().unwrap_or(default)
    };
    let _ = tx.send(Received {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        reply,
    });
    let head = match reply {
        Reply::Status(code) => format!("HTTP/1.1 {code} Test\r\n"),
        Reply::TooMany { retry_after_secs } => {
            format!("HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after_secs}\r\n")
        }
        Reply::Stall => {
            // Hold the connection until the client gives up.
            let mut sink = [0u8; 256];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
    };
    let response = format!("{head}Content-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

type Parsed = (String, String, Vec<(String, String)>, Vec<u8>);

async fn read_request(stream: &mut TcpStream) -> Option<Parsed> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some((method, path, headers, body))
}
