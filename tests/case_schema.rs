//! Every kind of case ivrd writes validates against `schemas/case.v1.json`, and the schema does
//! reject documents that break it (so passing means something).

use ivrd::case::skeleton::{Hangup, RecordingRef};
use ivrd::case::{CallFacts, CaseSkeleton};
use ivrd::dialplan::calendar::WallClock;
use ivrd::dialplan::simulate::simulate_file;
use std::path::Path;

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string("schemas/case.v1.json").expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn facts() -> CallFacts {
    CallFacts {
        case_id: "01KB0000000000000000000000".into(),
        call_id: "abc@127.0.0.1".into(),
        caller: "sip:+8613800000000@trunk".into(),
        called: "sip:12345@127.0.0.1".into(),
        trunk: "127.0.0.1".into(),
        received_unix_ms: 1_795_706_043_250,
        answered_unix_ms: Some(1_795_706_043_300),
        ended_unix_ms: 1_795_706_103_300,
        hangup: Hangup {
            side: "caller".into(),
            reason: "remote_bye".into(),
        },
        host: "test".into(),
    }
}

fn recording(kind: &str) -> RecordingRef {
    RecordingRef {
        kind: kind.into(),
        path: format!("recordings/2026/11/26/abc-{kind}.wav"),
        format: "wav/pcm_s16le/8000".into(),
        duration_ms: 60_000,
        bytes: 1_920_044,
        sha256: "0".repeat(64),
    }
}

#[test]
fn cases_from_the_shipped_plan_validate() {
    let v = validator();
    // 10 PM on a Tuesday in Hainan, and 10 AM: out of hours and office hours.
    let walls = [
        WallClock::from_unix(1_795_701_600, 480),
        WallClock::from_unix(1_795_665_600, 480),
    ];
    let scripts = [
        "1", "3,1,1", "3,2", "9,1", "2", "0", "6", "7", "hangup", "4,1",
    ];
    let mut outcomes = std::collections::BTreeSet::new();
    for wall in walls {
        for (i, keys) in scripts.iter().enumerate() {
            let silence = i == 0 && wall.minute_of_day > 20 * 60;
            let report = simulate_file(
                Path::new("dialplans/12345.toml"),
                Path::new("prompts"),
                keys,
                None,
                silence,
                wall,
            )
            .expect("simulate");
            let case = CaseSkeleton::from_journal(
                &facts(),
                &report.journal,
                vec![recording("call"), recording("message")],
                false,
            );
            let doc = serde_json::to_value(&case).expect("serialise");
            let errors: Vec<String> = v
                .iter_errors(&doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "keys {keys:?}: {errors:?}\n{doc:#}");
            outcomes.insert(case.outcome.clone());
        }
    }
    assert!(
        outcomes.len() >= 3,
        "the scripts cover several outcomes: {outcomes:?}"
    );
}

#[test]
fn rejected_and_media_timeout_cases_validate() {
    let v = validator();
    let mut f = facts();
    f.answered_unix_ms = None;
    f.hangup = Hangup {
        side: "none".into(),
        reason: "overload".into(),
    };
    let rejected = serde_json::to_value(CaseSkeleton::rejected(&f)).expect("serialise");
    assert!(v.is_valid(&rejected), "{rejected:#}");
    assert_eq!(rejected["outcome"], "rejected");
    assert_eq!(rejected["caller"], "+8613800000000");
    assert_eq!(rejected["caller_masked"], "+861********00");
}

#[test]
fn the_schema_rejects_broken_documents() {
    let v = validator();
    let good = serde_json::to_value(CaseSkeleton::rejected(&facts())).expect("serialise");
    assert!(v.is_valid(&good));
    for (field, bad) in [
        ("case_id", serde_json::Value::Null),
        ("outcome", "lost".into()),
        ("received_at", "yesterday".into()),
        ("schema_version", 2.into()),
    ] {
        let mut doc = good.clone();
        doc[field] = bad;
        assert!(!v.is_valid(&doc), "{field} accepted");
    }
    let mut extra = good.clone();
    extra["surprise"] = 1.into();
    assert!(!v.is_valid(&extra), "unknown fields are refused");
}
