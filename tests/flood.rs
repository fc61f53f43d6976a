//! An untrusted INVITE flood while a trusted trunk places calls with media, against the real
//! `ivrd` binary: every trusted call succeeds, the flood creates no call and is counted, the
//! trunk's OPTIONS are still answered; then the trunk's per-source call cap and per-source
//! INVITE rate answer 503 with Retry-After. A second test bursts OPTIONS from the trunk past its
//! out-of-dialog request rate.
//!
//! ivrd trusts only 127.0.0.2 (the SIPp trunk); the flooder (`ivrd-flood`, the same tool
//! `bench/flood.sh` uses) sends 10,000 INVITEs a second, each with its own Call-ID, from
//! 127.0.0.1. No timing is asserted: the machine may be slow, the outcome may not change.

mod common;
mod common_daemon;

use common::media::tone_alaw;
use common::sipp::{SIPP, finish_sipp, spawn_sipp, work_dir};
use common::{Leg, UdpPeer, branch, sdp_offer};
use common_daemon::{Daemon, DaemonOptions, metric, wait_for};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TRUNK_IP: &str = "127.0.0.2";
const TRUSTED_CALLS: u32 = 10;
/// `[sip] max_calls_per_source` for the trunk.
const PER_SOURCE_CAP: usize = 6;
/// `[sip] invites_per_sec_per_source` and `invite_burst_per_source` for the trunk: far above
/// what SIPp places (5 a second), far below what the test sends in a burst.
const PER_SOURCE_RATE: u32 = 20;
/// INVITEs the trunk sends back to back to meet its rate limit.
const TRUNK_BURST: usize = 200;
/// Flooded INVITEs ivrd must have refused before the trusted calls start.
const FLOOD_SEEN: f64 = 2_000.0;

/// The flooder, killed when dropped so a failing test leaves nothing running.
struct Flooder(Child);

impl Drop for Flooder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn value(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// A raw-SIP peer bound on the trunk's address.
fn trunk_peer(server: SocketAddr) -> UdpPeer {
    let socket = UdpSocket::bind((TRUNK_IP, 0)).expect("bind the trunk address");
    UdpPeer { socket, server }
}

fn options_answered(trunk: &UdpPeer) {
    let leg = Leg::new(trunk.local(), "UDP");
    trunk.send(&leg.request("OPTIONS", &branch(), 1, "OPTIONS", &[], None));
    trunk.expect(200, "OPTIONS");
}

#[test]
#[ignore = "needs sipp"]
fn trusted_calls_succeed_through_an_untrusted_invite_flood() {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let mut options = DaemonOptions::new("flood", String::new());
    options.sip_extra = format!(
        "trusted = [\"{TRUNK_IP}/32\"]\nmax_calls_per_source = {PER_SOURCE_CAP}\n\
         invites_per_sec_per_source = {PER_SOURCE_RATE}\ninvite_burst_per_source = {PER_SOURCE_RATE}\n"
    );
    let ivrd = Daemon::start(&options);

    let mut flooder = Flooder(
        Command::new(env!("CARGO_BIN_EXE_ivrd-flood"))
            .args(["--mode", "sip", "--bind", "127.0.0.1:0", "--rate", "10000"])
            .args(["--secs", "300", "--target", &ivrd.sip.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("start ivrd-flood"),
    );
    wait_for("ivrd refusing the flood", Duration::from_secs(30), || {
        let text = ivrd.scrape();
        (metric(&text, "ivrd_sip_acl_rejections_total")? >= FLOOD_SEEN).then_some(())
    });

    let dir = work_dir();
    tone_alaw(&dir.join("caller.alaw"), 1000, 2.0);
    let sipp = spawn_sipp(
        "media_stream",
        ivrd.sip,
        TRUSTED_CALLS,
        &dir,
        &["-i", TRUNK_IP, "-d", "3000", "-l", "5", "-r", "5"],
    );
    let trunk = trunk_peer(ivrd.sip);
    options_answered(&trunk);
    finish_sipp(sipp, TRUSTED_CALLS, &dir);
    // Metrics are brought up to date as ivrd works; no call left means the BYEs are in them.
    wait_for("the trusted calls ended", Duration::from_secs(20), || {
        (metric(&ivrd.scrape(), "ivrd_calls_active")? == 0.0).then_some(())
    });
    // The flood covered every call: it is still running now. (OPTIONS below are answered
    // while it runs.)
    assert!(
        matches!(flooder.0.try_wait(), Ok(None)),
        "the flooder stopped before the trusted calls ended"
    );
    options_answered(&trunk);
    drop(flooder);
    // One scrape is not atomic across families while the flood runs; once it has stopped the
    // two counts of the same refusals agree.
    let during = wait_for(
        "the flood's refusals settled",
        Duration::from_secs(10),
        || {
            let text = ivrd.scrape();
            let acl = metric(&text, "ivrd_sip_acl_rejections_total")?;
            let rejected = metric(&text, "ivrd_calls_rejected_total{reason=\"acl\"}")?;
            (acl == rejected).then_some(text)
        },
    );

    let answered = value(&during, "ivrd_calls_answered_total");
    assert_eq!(answered, f64::from(TRUSTED_CALLS), "only the trunk's calls");
    let acl = value(&during, "ivrd_sip_acl_rejections_total");
    assert!(acl >= FLOOD_SEEN, "flood refusals counted: {acl}");
    // Beyond a burst, refusals to the flooder are not even answered: dropped and counted.
    let dropped = value(&during, "ivrd_sip_messages_dropped_total");
    assert!(dropped >= acl - 1_000.0, "dropped {dropped} of {acl}");
    let sent_403 = value(
        &during,
        "ivrd_sip_responses_sent_total{class=\"4xx\",code=\"403\",method=\"INVITE\"}",
    );
    assert!(
        sent_403 < acl / 10.0,
        "403s sent {sent_403} for {acl} refused"
    );

    // The per-source cap: the trunk holds PER_SOURCE_CAP calls, the next INVITE gets 503.
    let media = UdpSocket::bind((TRUNK_IP, 0)).expect("media socket");
    let offer = sdp_offer(media.local_addr().expect("addr"), &[0], None);
    for _ in 0..PER_SOURCE_CAP {
        let mut leg = Leg::new(trunk.local(), "UDP");
        trunk.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
        let ok = trunk.expect(200, "INVITE");
        leg.learn(&ok);
        trunk.send(&leg.request("ACK", &branch(), 1, "ACK", &[], None));
    }
    let leg = Leg::new(trunk.local(), "UDP");
    trunk.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    let refused = trunk.expect(503, "INVITE");
    assert_eq!(refused.header("Retry-After"), Some("30"));
    let text = ivrd.scrape();
    assert_eq!(
        value(&text, "ivrd_calls_answered_total"),
        f64::from(TRUSTED_CALLS) + PER_SOURCE_CAP as f64
    );
    assert_eq!(
        value(&text, "ivrd_calls_rejected_total{reason=\"overload\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "ivrd_sip_source_limited_total{limit=\"calls\"}"),
        1.0
    );

    // The per-source INVITE rate: back-to-back INVITEs (to a number ivrd does not serve, so no
    // call is created) get 404 within the bucket and a stateless 503 + Retry-After beyond it.
    let mut leg = Leg::new(trunk.local(), "UDP");
    leg.remote_target = Some("sip:110@127.0.0.1".to_string());
    for _ in 0..TRUNK_BURST {
        leg.call_id = common::unique("burst-");
        trunk.send(&leg.request("INVITE", &branch(), 1, "INVITE", &[], Some(&offer)));
    }
    let finals = final_responses(&trunk, TRUNK_BURST);
    let limited = finals.values().filter(|(c, _)| *c == 503).count();
    let served = finals.values().filter(|(c, _)| *c == 404).count();
    assert_eq!(limited + served, TRUNK_BURST, "{finals:?}");
    assert!(limited > 0 && served > 0, "{served} 404, {limited} 503");
    assert!(
        finals
            .values()
            .all(|(c, retry)| *c != 503 || retry.as_deref() == Some("30"))
    );
    let limited_total = wait_for("the 503s in the metrics", Duration::from_secs(10), || {
        let n = metric(
            &ivrd.scrape(),
            "ivrd_sip_source_limited_total{limit=\"invite_rate\"}",
        )?;
        (n >= limited as f64).then_some(n)
    });
    assert_eq!(limited_total, limited as f64);
}

/// Reads responses at `peer` until `n` requests (one per Call-ID) have their final response;
/// returns each Call-ID's (code, Retry-After).
fn final_responses(
    peer: &UdpPeer,
    n: usize,
) -> std::collections::HashMap<String, (u16, Option<String>)> {
    let mut finals = std::collections::HashMap::new();
    while finals.len() < n {
        let m = peer.recv();
        if let (Some(code @ 200..), Some(id)) = (m.code(), m.header("Call-ID")) {
            let retry = m.header("Retry-After").map(str::to_string);
            finals.insert(id.to_string(), (code, retry));
        }
    }
    finals
}

/// `[sip] other_requests_per_sec_per_source` and `other_request_burst_per_source` for the
/// OPTIONS burst: small, so a burst sent back to back outruns the bucket on any machine.
const TRUNK_REQUEST_RATE: u32 = 5;
/// OPTIONS the trunk sends back to back.
const OPTIONS_BURST: usize = 60;

#[test]
fn a_trusted_source_bursting_options_gets_stateless_503s_beyond_its_rate() {
    let mut options = DaemonOptions::new("options-burst", String::new());
    options.sip_extra = format!(
        "trusted = [\"{TRUNK_IP}/32\"]\n\
         other_requests_per_sec_per_source = {TRUNK_REQUEST_RATE}\n\
         other_request_burst_per_source = {TRUNK_REQUEST_RATE}\n"
    );
    let ivrd = Daemon::start(&options);
    let trunk = trunk_peer(ivrd.sip);
    for _ in 0..OPTIONS_BURST {
        let leg = Leg::new(trunk.local(), "UDP");
        trunk.send(&leg.request("OPTIONS", &branch(), 1, "OPTIONS", &[], None));
    }
    let finals = final_responses(&trunk, OPTIONS_BURST);
    let ok = finals.values().filter(|(c, _)| *c == 200).count();
    let limited = finals.values().filter(|(c, _)| *c == 503).count();
    assert_eq!(ok + limited, OPTIONS_BURST, "{finals:?}");
    assert!(
        ok >= TRUNK_REQUEST_RATE as usize && limited > 0,
        "{ok} 200, {limited} 503"
    );
    assert!(
        finals
            .values()
            .all(|(c, retry)| *c != 503 || retry.as_deref() == Some("30")),
        "every 503 says when to retry"
    );
    let counted = wait_for("the 503s in the metrics", Duration::from_secs(10), || {
        let text = ivrd.scrape();
        let n = metric(
            &text,
            "ivrd_sip_source_limited_total{limit=\"request_rate\"}",
        )?;
        (n >= limited as f64).then_some(text)
    });
    assert_eq!(
        value(
            &counted,
            "ivrd_sip_source_limited_total{limit=\"request_rate\"}"
        ),
        limited as f64
    );
    assert_eq!(
        value(&counted, "ivrd_calls_rejected_total{reason=\"overload\"}"),
        0.0,
        "OPTIONS are not calls"
    );
}
