//! The shipped Prometheus rules and Grafana dashboard stay in step with the metrics ivrd exports:
//! every `ivrd_` name they query exists in the registry, and the alert unit tests pass under
//! `promtool test rules` when promtool is installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use ivrd::metrics::Metrics;

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts_test.yml";
const DASHBOARD: &str = "deploy/grafana/ivrd.json";

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `ivrd_…` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ivrd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // A bare "ivrd_" is prose about the prefix, not a metric.
        if end > "ivrd_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The series names a scrape can contain: each family, and for histograms its three suffixes.
fn exported_series() -> BTreeSet<String> {
    let text = Metrics::new().unwrap().render().unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(decl) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = decl.split_once(' ').unwrap();
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Families that only appear once the runtime has labels for them (dialplan info, per-node and
/// per-classification counters, response codes); they are checked by the unit tests instead.
fn label_dependent() -> BTreeSet<String> {
    [
        "ivrd_dialplan_info",
        "ivrd_ivr_node_entries_total",
        "ivrd_ivr_node_timeouts_total",
        "ivrd_ivr_node_invalid_keys_total",
        "ivrd_ivr_node_hangups_total",
        "ivrd_ivr_classifications_total",
        "ivrd_sip_responses_sent_total",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[test]
fn alerts_and_dashboard_only_query_exported_metrics() {
    let exported = exported_series();
    let pending = label_dependent();
    for file in [ALERTS, ALERT_TESTS, DASHBOARD] {
        for name in metric_names(&read(file)) {
            assert!(
                exported.contains(&name) || pending.contains(&name),
                "{file} uses {name}, which ivrd does not export"
            );
        }
    }
}

#[test]
fn dashboard_is_valid_json_with_a_node_funnel() {
    let text = read(DASHBOARD);
    // No JSON crate in the dependency set: check balance and the panels that matter.
    assert_eq!(text.matches('{').count(), text.matches('}').count());
    assert!(text.contains("sum by (node) (increase(ivrd_ivr_node_entries_total"));
    assert!(text.contains("ivrd_ivr_node_hangups_total"));
    assert!(text.contains("ivrd_outbox_pending_cases"));
}

#[test]
fn promtool_passes_the_alert_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("promtool")
        .args(["test", "rules", ALERT_TESTS])
        .current_dir(dir)
        .output();
    let Ok(out) = out else {
        println!("note: promtool not on PATH; skipping `promtool test rules`");
        return;
    };
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
