//! Tests of the whole registry: names follow the conventions, helpers move the series they name,
//! and `promtool check metrics` accepts a scrape.

use std::time::Duration;

use prometheus::proto::MetricType;

use super::*;
use crate::media::digit::DtmfMethod;
use crate::sip::method::Method;
use crate::sip::uas::SipCounters;

/// The metric names integrations (alerts, dashboard) rely on; renaming one must fail a test.
const EXPECTED_NAMES: [&str; 53] = [
    "ivrd_build_info",
    "ivrd_dialplan_info",
    "ivrd_dialplan_reloads_total",
    "ivrd_sip_requests_received_total",
    "ivrd_sip_responses_sent_total",
    "ivrd_sip_retransmissions_sent_total",
    "ivrd_sip_parse_errors_total",
    "ivrd_sip_messages_dropped_total",
    "ivrd_sip_acl_rejections_total",
    "ivrd_sip_source_limited_total",
    "ivrd_sip_transaction_timeouts_total",
    "ivrd_calls_offered_total",
    "ivrd_calls_answered_total",
    "ivrd_calls_rejected_total",
    "ivrd_calls_active",
    "ivrd_calls_ended_total",
    "ivrd_call_duration_seconds",
    "ivrd_call_ivr_seconds",
    "ivrd_call_time_to_agent_seconds",
    "ivrd_ivr_node_entries_total",
    "ivrd_ivr_node_timeouts_total",
    "ivrd_ivr_node_invalid_keys_total",
    "ivrd_ivr_node_hangups_total",
    "ivrd_ivr_digits_total",
    "ivrd_ivr_classifications_total",
    "ivrd_ivr_transfers_total",
    "ivrd_rtp_packets_total",
    "ivrd_rtp_bytes_total",
    "ivrd_rtp_packets_lost_total",
    "ivrd_rtp_packets_late_total",
    "ivrd_rtp_packets_unexpected_source_total",
    "ivrd_rtp_jitter_seconds",
    "ivrd_rtp_send_errors_total",
    "ivrd_media_tick_lateness_seconds",
    "ivrd_media_tick_work_seconds",
    "ivrd_media_timeouts_total",
    "ivrd_rtp_ports_in_use",
    "ivrd_rtp_ports_available",
    "ivrd_recording_files_total",
    "ivrd_recording_bytes_total",
    "ivrd_recording_seconds_total",
    "ivrd_recording_failures_total",
    "ivrd_recording_dropped_seconds_total",
    "ivrd_recording_repaired_total",
    "ivrd_recording_writer_op_seconds",
    "ivrd_recording_writer_queue_messages",
    "ivrd_recording_writer_queue_capacity_messages",
    "ivrd_outbox_pending_cases",
    "ivrd_outbox_dead_cases",
    "ivrd_outbox_oldest_pending_age_seconds",
    "ivrd_outbox_deliveries_total",
    "ivrd_outbox_delivery_latency_seconds",
    "ivrd_runtime_tasks_alive",
];

/// Calls every helper once, so every family has at least one series.
fn exercise(m: &Metrics) {
    m.set_dialplan("hainan-12345", "2026.11.1", "9f2c");
    m.dialplan_reload_succeeded();
    m.dialplan_reload_failed();
    m.sip_request(&Method::Invite);
    m.sip_response(&Method::Invite, 200);
    m.observe_sip_counters(&SipCounters {
        parse_errors: 1,
        ..SipCounters::default()
    });
    m.call_rejected(RejectReason::Other);
    m.set_active_calls(3);
    m.call_ended(CallOutcome::Transferred, Duration::from_secs(20));
    m.ivr_time(Duration::from_secs(12));
    m.time_to_agent(Duration::from_secs(14));
    m.ivr_node_entered("main_menu");
    m.ivr_node_timeout("main_menu");
    m.ivr_invalid_key("main_menu");
    m.ivr_hangup("main_menu");
    m.digit_received(DtmfMethod::Inband);
    m.call_classified("P", "05");
    m.transfer_finished(TransferTarget::Queue, TransferResult::Succeeded);
    m.rtp_received(50, 8600);
    m.rtp_sent(50, 8600);
    m.rtp_lost(2);
    m.rtp_late(1);
    m.rtp_unexpected_source(4);
    m.rtp_jitter(Duration::from_millis(3));
    m.media_timeout();
    m.set_rtp_ports(10, 5000);
    m.set_recording_queue(3, 16_000);
    m.recording_finished(RecordingKind::Call, 320_044, Duration::from_secs(10));
    m.recording_failed(RecordingKind::Message);
    m.recordings_repaired(1);
    m.recording_writer_ops().create.observe(0.000_5);
    m.set_outbox_state(7, 1, Some(Duration::from_secs(90)));
    m.outbox_delivered(Duration::from_millis(300));
    m.outbox_retry();
    m.outbox_dead_lettered(DeadLetterReason::Rejected);
}

/// The value of one exact series (`name{labels}` as rendered), if present.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn every_metric_is_prefixed_and_counters_end_in_total() {
    let m = Metrics::new().unwrap();
    exercise(&m);
    let families = m.registry.gather();
    let mut names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    for f in &families {
        assert!(
            f.name().starts_with("ivrd_"),
            "{} lacks the prefix",
            f.name()
        );
        let is_counter = f.get_field_type() == MetricType::COUNTER;
        assert_eq!(is_counter, f.name().ends_with("_total"), "{}", f.name());
        if f.get_field_type() == MetricType::HISTOGRAM {
            assert!(f.name().ends_with("_seconds"), "{}", f.name());
        }
        assert!(!f.help().is_empty(), "{} has no help", f.name());
    }
    names.sort_unstable();
    let mut expected: Vec<&str> = EXPECTED_NAMES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn fixed_label_series_exist_at_zero_before_any_event() {
    let m = Metrics::new().unwrap();
    let text = m.render().unwrap();
    assert_eq!(
        value(&text, r#"ivrd_calls_rejected_total{reason="overload"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_calls_ended_total{outcome="abandoned"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_ivr_digits_total{method="rfc4733"}"#),
        Some(0.0)
    );
    let transfer = r#"ivrd_ivr_transfers_total{result="failed",target_class="emergency"}"#;
    assert_eq!(value(&text, transfer), Some(0.0));
    assert_eq!(
        value(&text, r#"ivrd_outbox_deliveries_total{result="expired"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_sip_requests_received_total{method="BYE"}"#),
        Some(0.0)
    );
    // No dialplan yet: no info series and no node series.
    assert!(!text.contains("ivrd_dialplan_info{"));
    assert!(!text.contains("ivrd_ivr_node_entries_total{"));
}

#[test]
fn build_info_carries_the_package_version() {
    let m = Metrics::new().unwrap();
    let text = m.render().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("ivrd_build_info{"))
        .unwrap();
    assert!(line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    assert!(line.contains("git_sha=\""));
    assert!(line.ends_with(" 1"));
}

#[test]
fn observe_sip_counters_adds_only_what_grew() {
    let m = Metrics::new().unwrap();
    let mut c = SipCounters {
        calls_offered: 5,
        calls_answered: 3,
        acl_rejected: 1,
        overload_rejected: 1,
        source_limited_invite_rate: 1,
        source_limited_requests: 2,
        retransmissions_sent: 4,
        ..SipCounters::default()
    };
    m.observe_sip_counters(&c);
    m.observe_sip_counters(&c);
    c.calls_offered = 7;
    c.codec_rejected = 1;
    m.observe_sip_counters(&c);
    let text = m.render().unwrap();
    assert_eq!(value(&text, "ivrd_calls_offered_total"), Some(7.0));
    assert_eq!(value(&text, "ivrd_calls_answered_total"), Some(3.0));
    assert_eq!(
        value(&text, "ivrd_sip_retransmissions_sent_total"),
        Some(4.0)
    );
    assert_eq!(value(&text, "ivrd_sip_acl_rejections_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            r#"ivrd_sip_source_limited_total{limit="invite_rate"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"ivrd_sip_source_limited_total{limit="request_rate"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_sip_source_limited_total{limit="calls"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_calls_rejected_total{reason="acl"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_calls_rejected_total{reason="codec"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_calls_rejected_total{reason="overload"}"#),
        Some(1.0)
    );

    // A new endpoint starts from zero: its counts are all new.
    m.observe_sip_counters(&SipCounters {
        calls_offered: 2,
        ..SipCounters::default()
    });
    let text = m.render().unwrap();
    assert_eq!(value(&text, "ivrd_calls_offered_total"), Some(9.0));
}

#[test]
fn set_dialplan_replaces_the_info_series() {
    let m = Metrics::new().unwrap();
    m.set_dialplan("hainan-12345", "1", "aaaa");
    m.set_dialplan("hainan-12345", "2", "bbbb");
    let text = m.render().unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ivrd_dialplan_info{"))
        .collect();
    assert_eq!(
        series,
        [r#"ivrd_dialplan_info{hash="bbbb",name="hainan-12345",version="2"} 1"#]
    );
}

#[test]
fn helpers_move_the_series_they_name() {
    let m = Metrics::new().unwrap();
    m.sip_response(&Method::Other("FOO".into()), 405);
    m.sip_response(&Method::Invite, 486);
    m.sip_response(&Method::Invite, 486);
    m.ivr_invalid_key("lang");
    m.call_ended(CallOutcome::Abandoned, Duration::from_secs(20));
    m.set_rtp_ports(12, 100);
    m.set_recording_queue(250, 1000);
    m.set_outbox_state(0, 2, None);
    m.recording_finished(RecordingKind::Message, 1000, Duration::from_millis(2500));
    m.recording_dropped(RecordingKind::Call, Duration::from_millis(500));
    m.recording_dropped(RecordingKind::Call, Duration::from_millis(250));
    let text = m.render().unwrap();
    assert_eq!(
        value(
            &text,
            r#"ivrd_recording_dropped_seconds_total{kind="call"}"#
        ),
        Some(0.75)
    );
    assert_eq!(
        value(
            &text,
            r#"ivrd_recording_dropped_seconds_total{kind="message"}"#
        ),
        Some(0.0)
    );
    let other = r#"ivrd_sip_responses_sent_total{class="4xx",code="405",method="other"}"#;
    assert_eq!(value(&text, other), Some(1.0));
    let busy = r#"ivrd_sip_responses_sent_total{class="4xx",code="486",method="INVITE"}"#;
    assert_eq!(value(&text, busy), Some(2.0));
    assert_eq!(
        value(&text, r#"ivrd_ivr_node_invalid_keys_total{node="lang"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_call_duration_seconds_bucket{le="15"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"ivrd_call_duration_seconds_bucket{le="30"}"#),
        Some(1.0)
    );
    assert_eq!(value(&text, "ivrd_call_duration_seconds_sum"), Some(20.0));
    assert_eq!(value(&text, "ivrd_rtp_ports_in_use"), Some(12.0));
    assert_eq!(value(&text, "ivrd_rtp_ports_available"), Some(88.0));
    assert_eq!(
        value(&text, "ivrd_recording_writer_queue_messages"),
        Some(250.0)
    );
    assert_eq!(
        value(&text, "ivrd_recording_writer_queue_capacity_messages"),
        Some(1000.0)
    );
    assert_eq!(value(&text, "ivrd_outbox_dead_cases"), Some(2.0));
    assert_eq!(
        value(&text, "ivrd_outbox_oldest_pending_age_seconds"),
        Some(0.0)
    );
    let secs = r#"ivrd_recording_seconds_total{kind="message"}"#;
    assert_eq!(value(&text, secs), Some(2.5));
}

#[test]
fn each_metrics_has_its_own_registry() {
    // With the global default registry the second definition would be refused as a duplicate.
    let a = Metrics::new().unwrap();
    let b = Metrics::new().unwrap();
    a.media_timeout();
    assert_eq!(
        value(&a.render().unwrap(), "ivrd_media_timeouts_total"),
        Some(1.0)
    );
    assert_eq!(
        value(&b.render().unwrap(), "ivrd_media_timeouts_total"),
        Some(0.0)
    );
}

#[test]
fn promtool_accepts_a_scrape() {
    let m = Metrics::new().unwrap();
    exercise(&m);
    let text = m.render().unwrap();
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("note: promtool not on PATH; skipping `promtool check metrics`");
        return;
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics:\n{report}");
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
}

#[test]
fn observe_sip_counters_exports_requests_and_responses_by_label() {
    let m = Metrics::new().unwrap();
    let mut c = SipCounters::default();
    c.requests.add(&Method::Invite);
    c.responses.add(&Method::Invite, 100);
    m.observe_sip_counters(&c);
    m.observe_sip_counters(&c);
    c.requests.add(&Method::Invite);
    c.requests.add(&Method::Other("FOO".into()));
    c.responses.add(&Method::Invite, 100);
    c.responses.add(&Method::Options, 200);
    m.observe_sip_counters(&c);
    let text = m.render().unwrap();
    let get = |s: &str| value(&text, s);
    assert_eq!(
        get(r#"ivrd_sip_requests_received_total{method="INVITE"}"#),
        Some(2.0)
    );
    assert_eq!(
        get(r#"ivrd_sip_requests_received_total{method="other"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"ivrd_sip_requests_received_total{method="BYE"}"#),
        Some(0.0)
    );
    let trying = r#"ivrd_sip_responses_sent_total{class="1xx",code="100",method="INVITE"}"#;
    assert_eq!(get(trying), Some(2.0));
    let ok = r#"ivrd_sip_responses_sent_total{class="2xx",code="200",method="OPTIONS"}"#;
    assert_eq!(get(ok), Some(1.0));
    // A fresh endpoint (counts restart from zero) adds its counts, never subtracts.
    let mut fresh = SipCounters::default();
    fresh.responses.add(&Method::Options, 200);
    m.observe_sip_counters(&fresh);
    let text = m.render().unwrap();
    assert_eq!(value(&text, ok), Some(2.0));
    assert_eq!(value(&text, trying), Some(2.0));
}
