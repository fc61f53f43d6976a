//! A durable marker for each call in progress, so that a call interrupted by a crash still leaves
//! a case (DOMAIN.md: a caller who got no answer must be called back). The marker is written when
//! the call is answered and removed once the call's own case is spooled; markers left over at
//! start-up become `abandoned` cases with the repaired recording attached.

use crate::case::skeleton::{Hangup, RecordingRef};
use crate::case::{CallFacts, CaseId, CaseSkeleton};
use crate::runtime::recorder::STEREO_FORMAT;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What is known about a call when it is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMarker {
    pub case_id: String,
    pub call_id: String,
    pub caller: String,
    pub called: String,
    pub trunk: String,
    pub received_unix_ms: i64,
    pub answered_unix_ms: i64,
    /// The call recording's final path relative to the storage dir, if one was started.
    pub recording: Option<String>,
    pub host: String,
}

/// `<storage>/active`.
pub fn marker_dir(storage: &Path) -> PathBuf {
    storage.join("active")
}

fn marker_path(storage: &Path, case_id: &str) -> PathBuf {
    marker_dir(storage).join(format!("{case_id}.json"))
}

/// Writes the marker durably (temp file, fsync, rename, fsync the directory). Blocking IO.
pub fn write(storage: &Path, marker: &CallMarker) -> std::io::Result<()> {
    let dir = marker_dir(storage);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_vec(marker).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{}.json.tmp", marker.case_id));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&json)?;
    file.sync_all()?;
    std::fs::rename(&tmp, marker_path(storage, &marker.case_id))?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Removes the marker once the call's case is spooled. Blocking IO.
pub fn remove(storage: &Path, case_id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(marker_path(storage, case_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The cases of calls a crash interrupted, one per leftover marker, with their case ids.
/// Run after recordings were repaired. Unreadable markers are logged and skipped.
pub fn recover(storage: &Path) -> Vec<(CaseId, CaseSkeleton)> {
    let Ok(entries) = std::fs::read_dir(marker_dir(storage)) else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|x| x != "json") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let marker: Option<CallMarker> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(marker) = marker else {
            tracing::error!(path = %path.display(), "unreadable call marker skipped");
            continue;
        };
        let Ok(case_id) = CaseId::parse(&marker.case_id) else {
            tracing::error!(path = %path.display(), "call marker with a bad case id skipped");
            continue;
        };
        cases.push((case_id, interrupted_case(storage, &marker)));
    }
    cases
}

fn interrupted_case(storage: &Path, marker: &CallMarker) -> CaseSkeleton {
    let recording = marker
        .recording
        .as_deref()
        .and_then(|rel| recording_ref(storage, rel));
    // The recording's length is the best record of how long the call lasted before the crash.
    let ended_ms = recording.as_ref().map_or(marker.answered_unix_ms, |r| {
        marker.answered_unix_ms + i64::try_from(r.duration_ms).unwrap_or(0)
    });
    let facts = CallFacts {
        case_id: marker.case_id.clone(),
        call_id: marker.call_id.clone(),
        caller: marker.caller.clone(),
        called: marker.called.clone(),
        trunk: marker.trunk.clone(),
        received_unix_ms: marker.received_unix_ms,
        answered_unix_ms: Some(marker.answered_unix_ms),
        ended_unix_ms: ended_ms,
        hangup: Hangup {
            side: "none".into(),
            reason: "ivrd_restart".into(),
        },
        host: marker.host.clone(),
    };
    let mut case = CaseSkeleton::rejected(&facts);
    case.outcome = "abandoned".into();
    case.ivr_seconds = (ended_ms - marker.answered_unix_ms) as f64 / 1000.0;
    case.recordings = recording.into_iter().collect();
    case
}

/// The repaired call recording as the case references it, when it exists and reads as a WAV.
fn recording_ref(storage: &Path, relative: &str) -> Option<RecordingRef> {
    let path = storage.join(relative);
    let bytes = std::fs::read(&path).ok()?;
    let reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).ok()?;
    let spec = reader.spec();
    let duration_ms = u64::from(reader.duration()) * 1000 / u64::from(spec.sample_rate.max(1));
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(RecordingRef {
        kind: "call".into(),
        path: relative.to_string(),
        format: STEREO_FORMAT.into(),
        duration_ms,
        bytes: bytes.len() as u64,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leftover_marker_becomes_an_abandoned_case_with_its_recording() {
        let storage = std::env::temp_dir().join(format!(
            "ivrd-marker-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let rel = "recordings/2026/11/26/x.wav";
        std::fs::create_dir_all(storage.join("recordings/2026/11/26")).expect("mkdir");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(storage.join(rel), spec).expect("wav");
        for _ in 0..(8000 * 2 * 3) {
            w.write_sample(0i16).expect("sample");
        }
        w.finalize().expect("finalize");
        let id = CaseId::new(1_795_706_043_250, 7);
        let marker = CallMarker {
            case_id: id.to_string(),
            call_id: "c@x".into(),
            caller: "sip:+8613800000000@t".into(),
            called: "sip:12345@i".into(),
            trunk: "127.0.0.1".into(),
            received_unix_ms: 1_795_706_043_000,
            answered_unix_ms: 1_795_706_043_250,
            recording: Some(rel.into()),
            host: "test".into(),
        };
        write(&storage, &marker).expect("write");
        let cases = recover(&storage);
        assert_eq!(cases.len(), 1);
        let (case_id, case) = &cases[0];
        assert_eq!(case_id, &id);
        assert_eq!(
            (case.outcome.as_str(), case.hangup.reason.as_str()),
            ("abandoned", "ivrd_restart")
        );
        assert_eq!(case.recordings.len(), 1);
        assert_eq!(case.recordings[0].duration_ms, 3000);
        let file = std::fs::read(storage.join(rel)).expect("read");
        let digest: String = Sha256::digest(&file)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(case.recordings[0].sha256, digest);
        remove(&storage, &marker.case_id).expect("remove");
        assert!(recover(&storage).is_empty(), "a removed marker is gone");
        remove(&storage, &marker.case_id).expect("removing twice is fine");
        let _ = std::fs::remove_dir_all(&storage);
    }
}
