//! A caller's voice message end to end: the load generator's caller (RTP audio, RFC 4733 keys)
//! chooses the English desk, which is closed at night in the shipped plan and takes a message;
//! `#` ends the message and the caller hangs up during the thank-you. The case must say
//! `message_left` and link the caller's mono message WAV (sha256 matching) besides the call WAV.
//! When the English desk is open (office hours) the plan transfers instead; the loadgen then
//! answers the REFER with a failing NOTIFY, and the plan falls back to the same message node.

mod common;

use common::{TestServer, test_config};
use ivrd::loadgen::media::RtpDrain;
use ivrd::loadgen::{Options, parse_keys, run};
use sha2::{Digest, Sha256};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_recorded_linked_and_counted_as_left() {
    let server = TestServer::start(test_config());
    let options = Options {
        target: server.udp,
        calls: 1,
        rate: 1.0,
        duration: Duration::from_secs(22),
        keys: parse_keys("2s:2,18s:#").expect("keys"),
        called: "12345".into(),
        transfer_status: "486 Busy Here".into(),
        rtp_drain: RtpDrain::Full,
    };
    let report = run(&options).await.expect("loadgen");
    assert_eq!((report.answered, report.failed), (1, 0), "{report:?}");
    assert_eq!(
        report.no_media, 0,
        "ivrd's RTP reached the shared socket: {report:?}"
    );
    let storage = server.storage.clone();
    // The case is spooled when the call task ends; wait for it without a blind sleep.
    let pending = storage.join("outbox/pending");
    let mut case = None;
    for _ in 0..200 {
        let found = std::fs::read_dir(&pending).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"))
        });
        if let Some(path) = found {
            case = std::fs::read(&path).ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let case: serde_json::Value = serde_json::from_slice(&case.expect("a case")).expect("json");
    assert_eq!(case["outcome"], "message_left", "{case:#}");
    let recordings = case["recordings"].as_array().expect("recordings");
    let message = recordings
        .iter()
        .find(|r| r["kind"] == "message")
        .expect("a message recording");
    assert_eq!(message["format"], "wav/pcm_s16le/8000/1");
    assert!(
        message["duration_ms"].as_u64().is_some_and(|ms| ms > 5_000),
        "{message}"
    );
    let bytes = std::fs::read(storage.join(message["path"].as_str().expect("path")))
        .expect("the WAV exists");
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(message["sha256"], digest.as_str());
    assert!(
        recordings.iter().any(|r| r["kind"] == "call"),
        "and the whole call"
    );
}
