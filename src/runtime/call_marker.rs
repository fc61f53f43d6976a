//! A durable marker for each call in progress, so that a call interrupted by a crash still leaves
//! a case (DOMAIN.md: a caller who got no answer must be called back). The marker is written when
//! the call is answered and cleared once the call's own case is spooled; markers left over at
//! start-up become `abandoned` cases with the repaired recording attached.
//!
//! Markers live in the pre-allocated slot file `<storage>/active/markers.slots`
//! ([`marker_slots`](super::marker_slots)), so one can be written while the volume is full.
//! A marker too long for a slot, or written while the slot file could not be opened, goes to
//! `<storage>/active/<case>.json` (temp file, fsync, rename, directory fsync), the format of
//! earlier versions, whose leftovers are still recovered.

use crate::case::skeleton::{Hangup, RecordingRef};
use crate::case::{CallFacts, CaseId, CaseSkeleton};
use crate::runtime::case_writer::CaseSpool;
use crate::runtime::group_commit::GroupCommit;
use crate::runtime::marker_slots::{Leftover, SlotError, SlotFile};
use crate::runtime::recorder::STEREO_FORMAT;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The slot file's name in the marker directory.
const SLOT_FILE: &str = "markers.slots";
/// Slots allocated at start-up at most (16 MiB): a `max_calls` set far above what the machine
/// can carry (a load test's 100,000) should not cost that much disk; beyond it the file grows
/// as calls come, which needs free space.
const MAX_PREALLOCATED: usize = 16_384;

/// Where one call's marker was written, to clear it when the call's case is spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerPlace {
    Slot(usize),
    /// `<storage>/active/<case id>.json`.
    File(String),
}

/// A marker found at start-up: its case, and where it is, to clear once the case is spooled.
#[derive(Debug)]
pub struct Interrupted {
    pub case_id: CaseId,
    pub case: CaseSkeleton,
    pub place: MarkerPlace,
}

/// The markers of calls in progress. Every method but [`MarkerStore::write_async`] is
/// blocking IO.
pub struct MarkerStore {
    writer: Arc<MarkerWriter>,
    /// Markers of calls being answered, written in groups (one `fdatasync` per group).
    group: GroupCommit<MarkerJob>,
}

/// What writes and clears markers; shared with the group commit thread.
#[derive(Debug)]
struct MarkerWriter {
    storage: PathBuf,
    /// `None` when the slot file could not be opened; markers then go to files.
    slots: Option<SlotFile>,
}

/// A marker waiting for its group's `fdatasync`.
struct MarkerJob {
    marker: CallMarker,
    reply: tokio::sync::oneshot::Sender<std::io::Result<MarkerPlace>>,
}

impl std::fmt::Debug for MarkerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.writer.fmt(f)
    }
}

impl MarkerStore {
    /// Opens the slot file with room for `calls` markers (at most `MAX_PREALLOCATED`), creating
    /// it if needed, and returns the calls a crash interrupted, from slots and from marker
    /// files. Run after recordings were repaired. Unreadable and torn markers are logged and
    /// skipped.
    pub fn open(storage: &Path, calls: usize) -> (MarkerStore, Vec<Interrupted>) {
        let dir = marker_dir(storage);
        let opened = std::fs::create_dir_all(&dir)
            .map_err(|source| SlotError::Io {
                path: dir.clone(),
                source,
            })
            .and_then(|()| SlotFile::open(&dir.join(SLOT_FILE), calls.min(MAX_PREALLOCATED)));
        let (slots, leftovers) = match opened {
            Ok((slots, leftovers)) => (Some(slots), leftovers),
            Err(e) => {
                tracing::error!(error = %e, "call marker slots not opened; markers need free space");
                (None, Vec::new())
            }
        };
        let mut interrupted = Vec::new();
        for leftover in leftovers {
            match leftover {
                Leftover::Torn { slot } => {
                    tracing::error!(slot, "torn call marker skipped (a crash during its write)");
                }
                Leftover::Payload { slot, bytes } => {
                    let place = MarkerPlace::Slot(slot);
                    match serde_json::from_slice::<CallMarker>(&bytes) {
                        Ok(marker) => interrupted.extend(interrupted_call(storage, &marker, place)),
                        Err(e) => {
                            tracing::error!(slot, error = %e, "unreadable call marker skipped")
                        }
                    }
                }
            }
        }
        interrupted.extend(recover_files(storage));
        let writer = MarkerWriter {
            storage: storage.to_path_buf(),
            slots,
        };
        (MarkerStore::new(writer), interrupted)
    }

    fn new(writer: MarkerWriter) -> MarkerStore {
        let writer = Arc::new(writer);
        let committer = writer.clone();
        let group = GroupCommit::new("ivrd-markers", move |jobs: Vec<MarkerJob>| {
            let (markers, replies): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.marker, j.reply)).unzip();
            let places = committer.write_group(&markers);
            for (reply, place) in replies.into_iter().zip(places) {
                // A caller that went away (its call ended) has nothing to be told.
                let _ = reply.send(place);
            }
        });
        MarkerStore { writer, group }
    }

    /// Writes the marker durably: into a slot, or a file of its own if it does not fit one.
    pub fn write(&self, marker: &CallMarker) -> std::io::Result<MarkerPlace> {
        let mut places = self.writer.write_group(std::slice::from_ref(marker));
        places
            .pop()
            .unwrap_or_else(|| Err(std::io::Error::other("no marker written")))
    }

    /// [`MarkerStore::write`] from async code: the marker joins the next group commit, and the
    /// answer comes once the group is durable.
    pub async fn write_async(&self, marker: CallMarker) -> std::io::Result<MarkerPlace> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.group.submit(MarkerJob { marker, reply });
        answer
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("marker write did not finish")))
    }

    /// Clears a marker once its call's case is spooled.
    pub fn clear(&self, place: &MarkerPlace) -> std::io::Result<()> {
        self.writer.clear(place)
    }
}

impl MarkerWriter {
    /// Writes `markers` durably, the ones that fit into slots with one `fdatasync` for all;
    /// returns where each went, in order.
    fn write_group(&self, markers: &[CallMarker]) -> Vec<std::io::Result<MarkerPlace>> {
        let mut places = Vec::with_capacity(markers.len());
        let mut jsons = Vec::with_capacity(markers.len());
        let mut in_slots = Vec::new();
        for marker in markers {
            let json = match serde_json::to_vec(marker) {
                Ok(json) => json,
                Err(e) => {
                    places.push(Err(std::io::Error::other(e)));
                    jsons.push(Vec::new());
                    continue;
                }
            };
            match self.slots.as_ref().map(|s| s.put(&json)) {
                Some(Ok(slot)) => {
                    in_slots.push(places.len());
                    places.push(Ok(MarkerPlace::Slot(slot)));
                }
                Some(Err(SlotError::TooLarge { len })) => {
                    tracing::warn!(len, "call marker longer than a slot; written as a file");
                    places.push(self.write_file(marker, &json));
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "call marker slot not written; trying a file");
                    places.push(self.write_file(marker, &json));
                }
                None => places.push(self.write_file(marker, &json)),
            }
            jsons.push(json);
        }
        let synced = match (&self.slots, in_slots.is_empty()) {
            (Some(slots), false) => slots.sync(),
            _ => Ok(()),
        };
        if let (Err(e), Some(slots)) = (synced, &self.slots) {
            tracing::error!(error = %e, markers = in_slots.len(), "call marker slots not synced; trying files");
            for i in in_slots {
                if let Some(Ok(MarkerPlace::Slot(slot))) = places.get(i) {
                    // A slot whose payload may still reach the disk must not stay readable.
                    let _ = slots.clear(*slot);
                }
                places[i] = self.write_file(&markers[i], &jsons[i]);
            }
        }
        places
    }

    fn write_file(&self, marker: &CallMarker, json: &[u8]) -> std::io::Result<MarkerPlace> {
        write_file(&self.storage, &marker.case_id, json)?;
        Ok(MarkerPlace::File(marker.case_id.clone()))
    }

    fn clear(&self, place: &MarkerPlace) -> std::io::Result<()> {
        match (place, &self.slots) {
            (MarkerPlace::Slot(slot), Some(slots)) => {
                slots.clear(*slot).map_err(std::io::Error::other)
            }
            (MarkerPlace::Slot(_), None) => Ok(()),
            (MarkerPlace::File(case_id), _) => remove(&self.storage, case_id),
        }
    }
}

/// [`MarkerStore::open`] on tokio's blocking pool.
pub async fn open(storage: &Path, calls: usize) -> (Arc<MarkerStore>, Vec<Interrupted>) {
    let dir = storage.to_path_buf();
    match tokio::task::spawn_blocking(move || MarkerStore::open(&dir, calls)).await {
        Ok((store, interrupted)) => (Arc::new(store), interrupted),
        Err(e) => {
            tracing::error!(error = %e, "call markers not opened; markers need free space");
            let writer = MarkerWriter {
                storage: storage.to_path_buf(),
                slots: None,
            };
            (Arc::new(MarkerStore::new(writer)), Vec::new())
        }
    }
}

/// Spools the case of each interrupted call and clears its marker once the case is on disk
/// (at once, or when a case held in memory for a full disk is written). A
/// call whose own case is already in the outbox (a crash between spooling it and clearing the
/// marker) gets no second case: its marker is only cleared.
pub async fn spool_interrupted(
    markers: &Arc<MarkerStore>,
    interrupted: Vec<Interrupted>,
    cases: &CaseSpool,
) {
    for call in interrupted {
        if cases.holds(&call.case_id) {
            tracing::info!(case_id = %call.case_id, "interrupted call's case already spooled; marker cleared");
            let markers = markers.clone();
            let _ = tokio::task::spawn_blocking(move || markers.clear(&call.place)).await;
            continue;
        }
        tracing::warn!(case_id = %call.case_id, call_id = %call.case.call_id, "call interrupted by a restart: case written as abandoned");
        let marker = Some((markers.clone(), call.place));
        cases.spool_clearing(call.case_id, &call.case, marker).await;
    }
}

/// `<storage>/active`.
pub fn marker_dir(storage: &Path) -> PathBuf {
    storage.join("active")
}

fn marker_path(storage: &Path, case_id: &str) -> PathBuf {
    marker_dir(storage).join(format!("{case_id}.json"))
}

/// Writes a marker file durably (temp file, fsync, rename, fsync the directory).
fn write_file(storage: &Path, case_id: &str, json: &[u8]) -> std::io::Result<()> {
    let dir = marker_dir(storage);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{case_id}.json.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(json)?;
    file.sync_all()?;
    std::fs::rename(&tmp, marker_path(storage, case_id))?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Removes a marker file.
fn remove(storage: &Path, case_id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(marker_path(storage, case_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The calls behind leftover marker files (this version's oversize markers, and every marker
/// of versions before the slot file).
fn recover_files(storage: &Path) -> Vec<Interrupted> {
    let Ok(entries) = std::fs::read_dir(marker_dir(storage)) else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.file_name().is_some_and(|n| n == SLOT_FILE) {
            continue;
        }
        if path.extension().is_none_or(|x| x != "json") {
            // A temp file: its write never completed, so the call never relied on it.
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
        let place = MarkerPlace::File(marker.case_id.clone());
        cases.extend(interrupted_call(storage, &marker, place));
    }
    cases
}

fn interrupted_call(
    storage: &Path,
    marker: &CallMarker,
    place: MarkerPlace,
) -> Option<Interrupted> {
    let Ok(case_id) = CaseId::parse(&marker.case_id) else {
        tracing::error!(case_id = %marker.case_id, "call marker with a bad case id skipped");
        return None;
    };
    Some(Interrupted {
        case_id,
        case: interrupted_case(storage, marker),
        place,
    })
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
#[path = "call_marker_tests.rs"]
mod tests;
