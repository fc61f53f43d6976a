//! The real `ivrd` binary as a child process, for tests that must kill it with SIGKILL and start
//! it again on the same storage: a config file written per test, ports picked free, readiness
//! taken from `GET /readyz`, and the checks every case test shares (schema, recordings' sha256,
//! spool files that parse).

#![allow(dead_code)] // each test binary uses a different part

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What differs between the daemons of different tests.
#[derive(Debug)]
pub struct DaemonOptions {
    /// `[storage] dir`; kept across restarts.
    pub storage: PathBuf,
    /// `[intake] url` (empty: cases stay in the spool).
    pub intake_url: String,
    /// `[sip] max_calls`.
    pub max_calls: usize,
    /// `[dialplan] path` (the shipped 12345 plan unless changed).
    pub plan: PathBuf,
    /// More `[sip]` lines (e.g. `trusted`, per-source limits), one key per line.
    pub sip_extra: String,
    /// Where the config file and the daemon's log go (the storage dir unless a test must keep
    /// them off it, e.g. when the storage's file system is full).
    pub run_dir: PathBuf,
}

impl DaemonOptions {
    /// A fresh storage directory and the given intake URL.
    pub fn new(tag: &str, intake_url: String) -> DaemonOptions {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let storage =
            std::env::temp_dir().join(format!("ivrd-daemon-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&storage);
        std::fs::create_dir_all(&storage).expect("create storage dir");
        DaemonOptions {
            run_dir: storage.clone(),
            storage,
            intake_url,
            max_calls: 200,
            sip_extra: String::new(),
            plan: Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/12345.toml"),
        }
    }
}

impl Drop for DaemonOptions {
    fn drop(&mut self) {
        // A failed test keeps its storage (log, spool, recordings) for a post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.storage);
        }
    }
}

/// A running `ivrd run`; killed with SIGKILL when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// SIP over UDP (and TCP on the same port).
    pub sip: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
    /// Its stdout and stderr (the log), for failure messages.
    pub log: PathBuf,
}

/// A port free on both UDP and TCP a moment ago (SIP listens on both).
fn free_sip_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind probe");
    l.local_addr().expect("addr").port()
}

impl Daemon {
    /// Writes a config for `options` and starts the binary; returns once `/readyz` answers 200.
    pub fn start(options: &DaemonOptions) -> Daemon {
        let sip: SocketAddr = ([127, 0, 0, 1], free_sip_port()).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        Daemon::start_at(options, sip, metrics)
    }

    /// `kill -9`, then a new daemon on the same storage and the same addresses, so callers
    /// retransmitting to the old one reach the new one; returns once it is ready again.
    pub fn restart(&mut self, options: &DaemonOptions) {
        self.kill9();
        *self = Daemon::start_at(options, self.sip, self.metrics);
    }

    fn start_at(options: &DaemonOptions, sip: SocketAddr, metrics: SocketAddr) -> Daemon {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = format!(
            "[sip]\nlisten = [\"{sip}\"]\nmax_calls = {max}\ndrain_secs = 0\n{extra}\
             [dialplan]\npath = {plan:?}\n[prompts]\ndir = {prompts:?}\n\
             [storage]\ndir = {storage:?}\n[intake]\nurl = {url:?}\nsecret = \"s3cret\"\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            max = options.max_calls,
            extra = options.sip_extra,
            plan = options.plan,
            prompts = root.join("prompts"),
            storage = options.storage,
            url = options.intake_url,
        );
        let config_path = options.run_dir.join("ivrd-test.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = options
            .run_dir
            .join(format!("ivrd-{}.log", unique_suffix()));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_ivrd"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start ivrd");
        let mut daemon = Daemon {
            child: Some(child),
            sip,
            metrics,
            log,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(self.metrics, "/readyz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("ivrd exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "ivrd not ready within 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no drain, no flush, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while it runs (for /proc samples).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The body of `GET /metrics`.
    pub fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of one series (`name`, labels included if any) in a Prometheus text scrape.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it yields, failing the test with `what` after `timeout`. For state only
/// visible by looking (a log line, a metric, a file); an event to wait on is better where one
/// exists.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unique_suffix() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A plain HTTP/1.0 GET; `(status, body)` or `None` when nothing answers within 2 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

/// The case JSON Schema shipped with the repository, compiled.
pub fn case_validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/case.v1.json");
    let text = std::fs::read_to_string(path).expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// Checks one delivered case: valid against the schema, and every recording it names exists
/// below `storage` with the size and sha256 the case states. Returns the case's `case_id`.
pub fn check_case(validator: &jsonschema::Validator, storage: &Path, body: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(body).expect("case body is JSON");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "case invalid: {errors:?}\n{doc:#}");
    for rec in doc["recordings"].as_array().expect("recordings is a list") {
        let rel = rec["path"].as_str().expect("recording path");
        let bytes = std::fs::read(storage.join(rel))
            .unwrap_or_else(|e| panic!("recording {rel} named by a case: {e}"));
        assert_eq!(
            Some(bytes.len() as u64),
            rec["bytes"].as_u64(),
            "{rel} size"
        );
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            Some(digest.as_str()),
            rec["sha256"].as_str(),
            "{rel} sha256"
        );
    }
    doc["case_id"].as_str().expect("case_id").to_string()
}

/// Every `*.json` case file in the spool (pending and dead), each required to parse as JSON
/// (a truncated case would not).
pub fn spool_cases(storage: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for sub in ["outbox/pending", "outbox/dead"] {
        let Ok(entries) = std::fs::read_dir(storage.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".json") && !name.ends_with(".meta.json") {
                let bytes = std::fs::read(&path).expect("read spool file");
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| {
                    panic!("spool file {} does not parse: {e}", path.display())
                });
                found.push(path);
            }
        }
    }
    found
}

/// Recording files below `storage/recordings` whose name ends with `suffix`.
pub fn recordings_ending(storage: &Path, suffix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, suffix, out);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&storage.join("recordings"), suffix, &mut out);
    out
}
