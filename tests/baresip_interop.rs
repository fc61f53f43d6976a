//! A second real client: baresip (Debian package) calls the real server, streams a 1 kHz tone
//! from a file and presses keys, which it sends as RFC 4733 telephone-events. The case must show
//! every key, in order, as `rfc4733`, and the recording the caller's tone on the left.
//!
//! baresip runs headless: a config directory made per test (`-f DIR`) with no stdio UI, the
//! `aufile` source for audio, and the `ctrl_tcp` module, through which the test dials, waits for
//! the CALL_ESTABLISHED event (no sleep), sends the keys with `sndcode`, and waits for
//! CALL_CLOSED after ivrd hangs up. Messages on that socket are JSON in netstrings
//! (`LEN:JSON,`).

mod common;

use common::media::{KEYS, assert_keys, assert_recording, digits_plan, sox, wait_for_cases};
use common::{TestServer, test_config, unique};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The caller's tone, as in the SIPp calls.
const TONE_HZ: u32 = 1000;

/// baresip killed when the test ends, however it ends.
struct Baresip(Child);

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port that was free a moment ago.
fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind probe");
    l.local_addr().expect("addr").port()
}

/// Writes baresip's config and account into `dir`; returns the ctrl_tcp address.
fn configure(dir: &Path) -> SocketAddr {
    let ctrl: SocketAddr = format!("127.0.0.1:{}", free_tcp_port())
        .parse()
        .expect("addr");
    let tone = dir.join("caller.wav");
    let t = TONE_HZ.to_string();
    let path = tone.to_str().expect("utf-8");
    sox(&[
        "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", path, "synth", "60", "sine", &t,
        "gain", "-10",
    ]);
    // No audio device: the source is a file and the player is aufile too (baresip 1.0 has no
    // aufile player, so nothing is played, which is what a headless test wants).
    let config = format!(
        "poll_method epoll\n\
         sip_listen 127.0.0.1:0\n\
         audio_player aufile,{dir}/heard.wav\n\
         audio_alert aufile,{dir}/heard.wav\n\
         audio_source aufile,{path}\n\
         ausrc_srate 8000\n\
         auplay_srate 8000\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module aufile.so\n\
         module_app account.so\n\
         module_app menu.so\n\
         module_app ctrl_tcp.so\n\
         ctrl_tcp_listen {ctrl}\n",
        dir = dir.display(),
    );
    std::fs::write(dir.join("config"), config).expect("write config");
    std::fs::write(dir.join("accounts"), "<sip:tester@127.0.0.1>;regint=0\n")
        .expect("write accounts");
    ctrl
}

/// baresip's control socket: commands out, responses and events in.
struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Ctrl {
    /// Connects once baresip listens (it is starting up), within `timeout`.
    fn connect(addr: SocketAddr, timeout: Duration) -> Ctrl {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(stream) = TcpStream::connect(addr) {
                return Ctrl {
                    stream,
                    buf: Vec::new(),
                };
            }
            assert!(Instant::now() < deadline, "baresip ctrl_tcp not up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&mut self, command: &str, params: &str) {
        let body = json!({"command": command, "params": params, "token": command}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.stream.write_all(frame.as_bytes()).expect("write ctrl");
    }

    /// The next message within `deadline`, or `None`.
    fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(colon) = self.buf.iter().position(|b| *b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon]).ok()?.parse().ok()?;
                if self.buf.len() > colon + len {
                    let body = self.buf[colon + 1..colon + 1 + len].to_vec();
                    self.buf.drain(..colon + len + 2);
                    return serde_json::from_slice(&body).ok();
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the event `kind`; fails the test after `timeout`.
    fn wait_event(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(msg) = self.next(deadline) {
            if msg["event"] == true && msg["type"] == kind {
                return msg;
            }
            seen.push(msg);
        }
        panic!("no {kind} within {timeout:?}; saw {seen:?}");
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("ivrd-baresip-"));
    std::fs::create_dir_all(&dir).expect("create dir");
    dir
}

#[test]
#[ignore = "needs baresip"]
fn baresip_calls_and_sends_rfc4733_keys() {
    let mut config = test_config();
    digits_plan(&mut config);
    let srv = TestServer::start(config);
    let dir = temp_dir();
    let ctrl_addr = configure(&dir);
    let log = std::fs::File::create(dir.join("baresip.log")).expect("log");
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&dir)
        .args(["-t", "60"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("baresip is installed (Debian package baresip)");
    let _baresip = Baresip(child);

    let mut ctrl = Ctrl::connect(ctrl_addr, Duration::from_secs(10));
    ctrl.send("dial", &format!("sip:12345@{}", srv.udp));
    ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    ctrl.send("sndcode", KEYS);
    // ivrd hangs up after `#` and its goodbye.
    ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30));

    let case = wait_for_cases(&srv.storage, 1, Duration::from_secs(10)).remove(0);
    assert_keys(&case, KEYS, "rfc4733");
    assert_eq!(case["hangup"]["side"], "ivrd");
    assert_recording(&case, &srv.storage, TONE_HZ);
    let _ = std::fs::remove_dir_all(&dir);
}
