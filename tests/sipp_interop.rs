//! Interop with SIPp: each scenario under `tests/sipp/` runs against the real server started
//! in-process, and must finish with SIPp's exit status 0 and no failed call. How SIPp is run and judged: `tests/common/sipp.rs`.

mod common;

use common::sipp::{SIPP, count_sent, finish_sipp, spawn_sipp, work_dir};
use common::{TestServer, test_config};
use ivrd::config::Config;
use std::time::{Duration, Instant};

/// Runs scenario `name` `calls` times against a server started with `config`.
fn run_scenario(name: &str, config: Config, calls: u32) {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let srv = TestServer::start(config);
    let dir = work_dir();
    let child = spawn_sipp(name, srv.udp, calls, &dir, &[]);
    finish_sipp(child, calls, &dir);
}

/// The same over TCP (SIPp's `-t t1`: one connection, RFC 3261 §18.3 framing).
fn run_scenario_over_tcp(name: &str, calls: u32) {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let srv = TestServer::start(test_config());
    let dir = work_dir();
    let child = spawn_sipp(name, srv.tcp, calls, &dir, &["-t", "t1"]);
    finish_sipp(child, calls, &dir);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_basic_call() {
    run_scenario("basic_call", test_config(), 20);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_cancel_before_answer() {
    let mut config = test_config();
    // Long enough that the CANCEL always lands while ivrd is still ringing.
    config.sip.answer_delay_ms = 2000;
    run_scenario("cancel", config, 5);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_late_offer() {
    run_scenario("late_offer", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_reinvite_hold() {
    run_scenario("reinvite_hold", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_update_hold() {
    run_scenario("update_hold", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_basic_call_and_update_over_tcp() {
    run_scenario_over_tcp("basic_call", 10);
    run_scenario_over_tcp("update_hold", 5);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_no_common_codec_488() {
    run_scenario("codec_488", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_options_ping() {
    run_scenario("options", test_config(), 10);
}

#[test]
#[ignore = "needs sipp"]
fn sipp_bye_from_ivrd_on_drain() {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let mut config = test_config();
    config.sip.drain_secs = 1;
    let mut srv = TestServer::start(config);
    let dir = work_dir();
    let calls = 3;
    let child = spawn_sipp("drain_bye", srv.udp, calls, &dir, &[]);
    // Stop the server once every call is up: SIPp has sent its last ACK (it logs each message
    // it sends as it sends it).
    let log = dir.join("messages.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_sent(&log, "ACK sip:") < calls as usize {
        assert!(
            Instant::now() < deadline,
            "calls not up; traces in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.shutdown.cancel();
    finish_sipp(child, calls, &dir);
    assert!(
        srv.wait_finished(Duration::from_secs(10)),
        "server stops after the drain"
    );
}
