//! `/metrics` after real traffic: SIPp calls (answered, one 488), a raw 403 and an OPTIONS move
//! exactly the counters they should; the live scrape passes `promtool check metrics`; and a real
//! Prometheus server scrapes ivrd and answers `ivrd_calls_answered_total` > 0 from its query API.

mod common;
mod common_daemon;
mod common_sipp;

use common::{Leg, TestServer, UdpPeer, branch, sdp_offer, test_config};
use common_daemon::http_get;
use common_sipp::{Sipp, SippRun};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CALLS: u32 = 5;

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {series}"))
}

/// Sum of every sample of `name` (all label sets).
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http_get(addr, "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    body
}

/// An INVITE from 127.0.0.2, which the config does not trust: 403 and no call.
fn untrusted_invite(server: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let local = socket.local_addr().unwrap();
    let leg = Leg::new(local, "UDP");
    let offer = sdp_offer(local, &[0], None);
    let invite = leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer));
    socket.send_to(invite.as_bytes(), server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("a response to the INVITE");
        let msg = common::Msg::parse(&String::from_utf8_lossy(&buf[..n]));
        if msg.code().is_some_and(|c| c >= 200) {
            assert_eq!(msg.code(), Some(403));
            return;
        }
    }
}

fn options_ping(server: SocketAddr) {
    let peer = UdpPeer::new(server);
    let leg = Leg::new(peer.local(), "UDP");
    peer.send(&leg.request("OPTIONS", &branch(), 1, "OPTIONS", &[], None));
    peer.expect(200, "OPTIONS");
}

#[test]
#[ignore = "needs sipp"]
fn sipp_traffic_moves_exactly_the_expected_counters() {
    let mut config = test_config();
    config.sip.trusted = vec!["127.0.0.1/32".parse().unwrap()];
    let srv = TestServer::start(config);
    Sipp::start(srv.udp, SippRun::new("basic_call", CALLS)).expect_all_ok();
    Sipp::start(srv.udp, SippRun::new("codec_488", 1)).expect_all_ok();
    untrusted_invite(srv.udp);
    options_ping(srv.udp);
    // Call tasks record their end after the BYE; wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = scrape(srv.metrics);
        if sum(&text, "ivrd_calls_ended_total") >= f64::from(CALLS) {
            break text;
        }
        assert!(Instant::now() < deadline, "calls never ended:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let n = f64::from(CALLS);
    let expect = [
        ("ivrd_calls_offered_total", n + 2.0),
        ("ivrd_calls_answered_total", n),
        (r#"ivrd_calls_rejected_total{reason="codec"}"#, 1.0),
        (r#"ivrd_calls_rejected_total{reason="acl"}"#, 1.0),
        (r#"ivrd_calls_rejected_total{reason="overload"}"#, 0.0),
        ("ivrd_sip_acl_rejections_total", 1.0),
        ("ivrd_calls_active", 0.0),
        (
            r#"ivrd_sip_requests_received_total{method="INVITE"}"#,
            n + 2.0,
        ),
        (r#"ivrd_sip_requests_received_total{method="ACK"}"#, n + 1.0),
        (r#"ivrd_sip_requests_received_total{method="BYE"}"#, n),
        (r#"ivrd_sip_requests_received_total{method="OPTIONS"}"#, 1.0),
        (r#"ivrd_sip_requests_received_total{method="CANCEL"}"#, 0.0),
        // The untrusted INVITE is refused statelessly: no 100 Trying for it.
        (
            r#"ivrd_sip_responses_sent_total{class="1xx",code="100",method="INVITE"}"#,
            n + 1.0,
        ),
        (
            r#"ivrd_sip_responses_sent_total{class="2xx",code="200",method="INVITE"}"#,
            n,
        ),
        (
            r#"ivrd_sip_responses_sent_total{class="4xx",code="488",method="INVITE"}"#,
            1.0,
        ),
        (
            r#"ivrd_sip_responses_sent_total{class="4xx",code="403",method="INVITE"}"#,
            1.0,
        ),
        (
            r#"ivrd_sip_responses_sent_total{class="2xx",code="200",method="BYE"}"#,
            n,
        ),
        (
            r#"ivrd_sip_responses_sent_total{class="2xx",code="200",method="OPTIONS"}"#,
            1.0,
        ),
        (r#"ivrd_recording_files_total{kind="call"}"#, n),
        (r#"ivrd_recording_files_total{kind="message"}"#, 0.0),
        ("ivrd_sip_parse_errors_total", 0.0),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(series, want)| value(&text, series) != *want)
        .map(|(series, want)| format!("{series} = {} (want {want})", value(&text, series)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\n{text}");
    // Every answered call ended with some outcome, and no other call did.
    assert_eq!(sum(&text, "ivrd_calls_ended_total"), n);
    promtool_check(&text);
}

/// `promtool check metrics` on a scrape; skipped with a note when promtool is not installed.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("note: promtool not installed (Debian package prometheus); check skipped");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn live_scrape_passes_promtool_check_metrics() {
    let srv = TestServer::start(test_config());
    options_ping(srv.udp);
    promtool_check(&scrape(srv.metrics));
}

/// A real Prometheus scraping the test server every second.
#[test]
#[ignore = "needs prometheus"]
fn prometheus_server_scrapes_ivrd_and_answers_queries() {
    let srv = TestServer::start(test_config());
    // One answered call, from a raw SIP client.
    let peer = UdpPeer::new(srv.udp);
    let leg = Leg::new(peer.local(), "UDP");
    let offer = sdp_offer(peer.local(), &[0], None);
    peer.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    peer.expect(200, "INVITE");
    let dir = std::env::temp_dir().join(common::unique("ivrd-prom-"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: ivrd\n    static_configs:\n      - targets: ['{}']\n",
        srv.metrics
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (Debian package prometheus)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let answered = loop {
        if let Some((200, body)) = http_get(web, "/api/v1/query?query=ivrd_calls_answered_total") {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let v = doc["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(v) = v {
                break v;
            }
            last = body;
        }
        if Instant::now() > deadline {
            let _ = prometheus.kill();
            panic!("no ivrd_calls_answered_total from Prometheus within 60 s; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(answered > 0.0, "ivrd_calls_answered_total = {answered}");
}
