//! The case outbox: a crash-safe spool directory between "a call ended" and "the intake backend has
//! the case".
//!
//! Data flow: case builder ─▶ [`Outbox::enqueue`] (durable on return) ─▶ `runtime::delivery` worker
//! ─▶ HTTP POST ─▶ removed on 2xx, or moved to `dead/` with a reason.
//!
//! Layout below `<storage dir>/outbox/`:
//! - `pending/<case_id>.json` — the case body, exactly the bytes given to `enqueue`;
//! - `pending/<case_id>.meta.json` — delivery bookkeeping ([`DeliveryMeta`]), written only after the
//!   first failed attempt, so attempt counts and the case's age survive a restart. A case without one
//!   has had no failed attempt; its first enqueue time is the case file's modification time;
//! - `dead/<case_id>.json` + `dead/<case_id>.reason.txt` — dead letters and why;
//! - `*.tmp` — a write in progress. Every file is written as temp file → fsync → rename → fsync of
//!   the directory, so a crash leaves either the complete old state, the complete new state, or a
//!   stray `.tmp`. [`Outbox::open`] deletes stray `.tmp` files: their `enqueue` never returned, so the
//!   caller was never told the case was safe (and with the case builder being deterministic, nothing
//!   the caller relied on is lost).
//!
//! Delivery is at-least-once: a crash between a 2xx and the file removal re-sends the case after the
//! restart with the same `Idempotency-Key`. One process owns a spool: `ivrd outbox` commands only
//! move dead letters back and read counts, and the daemon picks such files up with [`Outbox::rescan`].

use crate::case::CaseId;
use crate::runtime::group_commit::GroupCommit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, broadcast};

#[path = "outbox_enqueue.rs"]
mod enqueue;

const CASE_SUFFIX: &str = ".json";
const META_SUFFIX: &str = ".meta.json";
const REASON_SUFFIX: &str = ".reason.txt";
const TMP_SUFFIX: &str = ".tmp";

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("outbox: case {case_id} is not valid JSON: {source}")]
    NotJson {
        case_id: CaseId,
        source: serde_json::Error,
    },
    #[error("outbox: case {case_id} is already in the spool")]
    Duplicate { case_id: CaseId },
    #[error("outbox: the enqueue task for case {case_id} did not finish")]
    EnqueueTask { case_id: CaseId },
}

/// Delivery bookkeeping for one pending case, persisted as `<case_id>.meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryMeta {
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the case entered the outbox (Unix ms); the max-age rule counts from here.
    pub first_enqueued_unix_ms: u64,
    /// Not to be attempted before this time (Unix ms).
    pub next_due_unix_ms: u64,
    /// What the last failed attempt ran into, for people reading the spool.
    pub last_error: Option<String>,
}

impl DeliveryMeta {
    /// Bookkeeping for a case that has not been attempted yet: due at once.
    pub fn fresh(first_enqueued_unix_ms: u64) -> DeliveryMeta {
        DeliveryMeta {
            attempts: 0,
            first_enqueued_unix_ms,
            next_due_unix_ms: 0,
            last_error: None,
        }
    }
}

/// Spool counts for `ivrd outbox` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Cases waiting for delivery.
    pub pending: usize,
    /// Dead letters waiting for an operator.
    pub dead: usize,
    /// Age of the oldest pending case, `None` when nothing is pending.
    pub oldest_pending_age: Option<Duration>,
}

impl fmt::Display for OutboxCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pending: {}\ndead: {}\n", self.pending, self.dead)?;
        match self.oldest_pending_age {
            Some(age) => writeln!(f, "oldest pending: {} s", age.as_secs()),
            None => writeln!(f, "oldest pending: -"),
        }
    }
}

/// What happened to a case; broadcast for logs, metrics and tests (see [`Outbox::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxEvent {
    /// The case is durably spooled.
    Enqueued { case_id: CaseId },
    /// The receiver acknowledged it; its files are gone. `attempts` counts this one.
    Delivered { case_id: CaseId, attempts: u32 },
    /// An attempt failed and another is scheduled after `delay`.
    RetryScheduled {
        case_id: CaseId,
        attempts: u32,
        delay: Duration,
        error: String,
    },
    /// The case was moved to `dead/` for `reason`.
    DeadLettered { case_id: CaseId, reason: String },
}

struct Entry {
    meta: DeliveryMeta,
    in_flight: bool,
}

struct Inner {
    pending_dir: PathBuf,
    dead_dir: PathBuf,
    state: Mutex<BTreeMap<CaseId, Entry>>,
    notify: Notify,
    events: broadcast::Sender<OutboxEvent>,
}

/// A handle on the spool, cheap to clone and shared by the call tasks (enqueue) and the delivery
/// worker. Promises: `enqueue` returns only once the case is on disk and would survive a crash.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
    /// Cases enqueued from async code, written in groups (see `outbox_enqueue.rs`).
    group: Arc<GroupCommit<enqueue::EnqueueJob>>,
}

impl Outbox {
    /// Opens (creating if needed) `<storage_dir>/outbox/`, deletes writes that a crash interrupted
    /// (stray `.tmp`, orphan sidecars) and loads the pending cases so delivery resumes.
    pub fn open(storage_dir: &Path) -> Result<Outbox, OutboxError> {
        let (pending_dir, dead_dir) = spool_dirs(storage_dir);
        for dir in [&pending_dir, &dead_dir] {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            sync_dir(dir)?;
        }
        let listing = Listing::read(&pending_dir)?;
        let dead = Listing::read(&dead_dir)?;
        let mut removed = Vec::new();
        removed.extend(listing.tmp.iter().cloned());
        removed.extend(listing.orphan_sidecars(META_SUFFIX));
        removed.extend(dead.tmp.iter().cloned());
        removed.extend(dead.orphan_sidecars(REASON_SUFFIX));
        for path in &removed {
            tracing::warn!(path = %path.display(), "outbox: removing interrupted write");
            remove_file(path)?;
        }
        sync_dir(&pending_dir)?;
        sync_dir(&dead_dir)?;
        let state = listing.entries(&pending_dir);
        tracing::debug!(
            pending = state.len(),
            dead = dead.cases.len(),
            "outbox opened"
        );
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            pending_dir,
            dead_dir,
            state: Mutex::new(state),
            notify: Notify::new(),
            events,
        });
        Ok(Outbox {
            group: Arc::new(enqueue::group_commit(inner.clone())),
            inner,
        })
    }

    /// The directory where pending cases are spooled (for logs and file-based integrations).
    pub fn pending_dir(&self) -> &Path {
        &self.inner.pending_dir
    }

    /// Whether `case_id` is pending or a dead letter (a delivered case is no longer known).
    pub fn contains(&self, case_id: &CaseId) -> bool {
        self.lock().contains_key(case_id)
            || self
                .inner
                .dead_dir
                .join(format!("{case_id}{CASE_SUFFIX}"))
                .exists()
    }

    /// Pending and dead counts as this process sees them (dead letters are counted on disk).
    pub fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let now = unix_ms(SystemTime::now());
        let state = self.lock();
        let oldest = state.values().map(|e| e.meta.first_enqueued_unix_ms).min();
        let dead = Listing::read(&self.inner.dead_dir)?.cases.len();
        Ok(OutboxCounts {
            pending: state.len(),
            dead,
            oldest_pending_age: oldest.map(|t| Duration::from_millis(now.saturating_sub(t))),
        })
    }

    /// A snapshot of every pending case and its bookkeeping, oldest id first.
    pub fn pending_entries(&self) -> Vec<(CaseId, DeliveryMeta)> {
        let state = self.lock();
        state
            .iter()
            .map(|(id, e)| (id.clone(), e.meta.clone()))
            .collect()
    }

    /// Moves every dead letter back to `pending/` with fresh bookkeeping (attempts 0, age 0) and
    /// wakes the worker. Returns how many were requeued.
    pub fn requeue_dead(&self) -> Result<usize, OutboxError> {
        let now = unix_ms(SystemTime::now());
        let ids = requeue_files(&self.inner.pending_dir, &self.inner.dead_dir, now)?;
        let mut state = self.lock();
        for id in &ids {
            state.insert(
                id.clone(),
                Entry {
                    meta: DeliveryMeta::fresh(now),
                    in_flight: false,
                },
            );
        }
        drop(state);
        self.inner.notify.notify_one();
        Ok(ids.len())
    }

    /// Adds pending cases that appeared on disk without `enqueue` (another process requeued dead
    /// letters). Deletes nothing. Returns how many were added.
    pub fn rescan(&self) -> Result<usize, OutboxError> {
        let mut state = self.lock();
        let found = Listing::read(&self.inner.pending_dir)?.entries(&self.inner.pending_dir);
        let mut added = 0;
        for (id, entry) in found {
            if let std::collections::btree_map::Entry::Vacant(slot) = state.entry(id) {
                slot.insert(entry);
                added += 1;
            }
        }
        drop(state);
        if added > 0 {
            self.inner.notify.notify_one();
        }
        Ok(added)
    }

    /// Receives every [`OutboxEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<OutboxEvent> {
        self.inner.events.subscribe()
    }

    /// Worker side: up to `limit` cases due at `now_ms` and not in flight, oldest id first; they are
    /// marked in flight until [`Outbox::finish`] is called for them.
    pub(crate) fn take_due(&self, now_ms: u64, limit: usize) -> Vec<(CaseId, DeliveryMeta)> {
        let mut state = self.lock();
        let mut due = Vec::new();
        for (id, entry) in state.iter_mut() {
            if due.len() >= limit {
                break;
            }
            if !entry.in_flight && entry.meta.next_due_unix_ms <= now_ms {
                entry.in_flight = true;
                due.push((id.clone(), entry.meta.clone()));
            }
        }
        due
    }

    /// Worker side: the earliest due time among cases not in flight.
    pub(crate) fn next_due(&self) -> Option<u64> {
        let state = self.lock();
        state
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| e.meta.next_due_unix_ms)
            .min()
    }

    /// Worker side: a future that completes after the next `enqueue`/requeue (or at once if one
    /// happened since the last wait).
    pub(crate) async fn enqueued(&self) {
        self.inner.notify.notified().await
    }

    /// Worker side: the case body to POST.
    pub(crate) fn case_path(&self, case_id: &CaseId) -> PathBuf {
        self.inner
            .pending_dir
            .join(format!("{case_id}{CASE_SUFFIX}"))
    }

    /// Worker side: applies the result of an attempt to disk and to the index, then clears the
    /// in-flight mark. The disk work happens under the index lock so `rescan` never sees a half-done
    /// move.
    pub(crate) fn finish(&self, case_id: &CaseId, result: Finish) -> Result<(), OutboxError> {
        let mut state = self.lock();
        let applied = self.apply(case_id, &result);
        match (&applied, result) {
            // A sidecar that failed to write still sets the schedule in memory, so a broken disk
            // does not turn into a tight retry loop against the receiver.
            (_, Finish::Retry(meta)) => {
                if let Some(entry) = state.get_mut(case_id) {
                    entry.meta = meta;
                    entry.in_flight = false;
                }
            }
            (Ok(()), _) => {
                state.remove(case_id);
            }
            (Err(_), _) => {
                if let Some(entry) = state.get_mut(case_id) {
                    entry.in_flight = false;
                }
            }
        }
        applied
    }

    /// Worker side: forgets a case whose file vanished (delivered by an earlier run).
    pub(crate) fn forget(&self, case_id: &CaseId) {
        self.lock().remove(case_id);
    }

    /// Worker side: clears the in-flight mark without any change (attempt cancelled by shutdown).
    pub(crate) fn release(&self, case_id: &CaseId) {
        if let Some(entry) = self.lock().get_mut(case_id) {
            entry.in_flight = false;
        }
    }

    pub(crate) fn emit(&self, event: OutboxEvent) {
        // No subscriber is normal (no test, no metrics yet), so a send error is not a failure.
        let _ = self.inner.events.send(event);
    }

    /// The disk side of [`Outbox::finish`]; the caller holds the index lock.
    fn apply(&self, case_id: &CaseId, result: &Finish) -> Result<(), OutboxError> {
        let pending = &self.inner.pending_dir;
        let case_path = self.case_path(case_id);
        let meta_path = pending.join(format!("{case_id}{META_SUFFIX}"));
        match result {
            Finish::Delivered => {
                remove_file(&case_path)?;
                remove_file(&meta_path)?;
                sync_dir(pending)
            }
            Finish::Retry(meta) => {
                let bytes = meta_bytes(meta);
                write_durable(pending, &format!("{case_id}{META_SUFFIX}"), &bytes).map(|_| ())
            }
            Finish::Dead(reason) => {
                let dead = &self.inner.dead_dir;
                let text = format!("{reason}\n");
                write_durable(dead, &format!("{case_id}{REASON_SUFFIX}"), text.as_bytes())?;
                let target = dead.join(format!("{case_id}{CASE_SUFFIX}"));
                fs::rename(&case_path, &target).map_err(io_err("move", &case_path))?;
                sync_dir(dead)?;
                remove_file(&meta_path)?;
                sync_dir(pending)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<CaseId, Entry>> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<CaseId, Entry>> {
        // A panic while holding the lock leaves the index as consistent as the disk is; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How an attempt ended, as the spool must record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    Delivered,
    Retry(DeliveryMeta),
    Dead(String),
}

/// `ivrd outbox`: counts read straight from disk, changing nothing (safe while the daemon runs).
pub fn outbox_status(storage_dir: &Path) -> Result<OutboxCounts, OutboxError> {
    let (pending_dir, dead_dir) = spool_dirs(storage_dir);
    let now = unix_ms(SystemTime::now());
    if !pending_dir.exists() {
        return Ok(OutboxCounts {
            pending: 0,
            dead: 0,
            oldest_pending_age: None,
        });
    }
    let entries = Listing::read(&pending_dir)?.entries(&pending_dir);
    let dead = if dead_dir.exists() {
        Listing::read(&dead_dir)?.cases.len()
    } else {
        0
    };
    let oldest = entries
        .values()
        .map(|e| e.meta.first_enqueued_unix_ms)
        .min();
    Ok(OutboxCounts {
        pending: entries.len(),
        dead,
        oldest_pending_age: oldest.map(|t| Duration::from_millis(now.saturating_sub(t))),
    })
}

/// `ivrd outbox --requeue`: moves every dead letter back to `pending/` with fresh bookkeeping.
/// Safe while the daemon runs (it deletes no temp files); the daemon picks them up on its next
/// rescan. Returns how many were requeued.
pub fn requeue(storage_dir: &Path) -> Result<usize, OutboxError> {
    let (pending_dir, dead_dir) = spool_dirs(storage_dir);
    if !dead_dir.exists() {
        return Ok(0);
    }
    fs::create_dir_all(&pending_dir).map_err(io_err("create", &pending_dir))?;
    let now = unix_ms(SystemTime::now());
    requeue_files(&pending_dir, &dead_dir, now).map(|ids| ids.len())
}

/// Wall-clock time as Unix milliseconds (0 before 1970, which only a broken clock produces).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A sidecar's bytes. Serialising this plain struct of numbers and a string cannot fail.
fn meta_bytes(meta: &DeliveryMeta) -> Vec<u8> {
    serde_json::to_vec(meta).unwrap_or_default()
}

fn spool_dirs(storage_dir: &Path) -> (PathBuf, PathBuf) {
    let root = storage_dir.join("outbox");
    (root.join("pending"), root.join("dead"))
}

/// Per dead letter: a fresh sidecar in `pending/` first, then the case moves, then the reason goes.
/// A crash in between leaves an orphan sidecar (removed at open) or a reason-less dead letter.
fn requeue_files(pending: &Path, dead: &Path, now: u64) -> Result<Vec<CaseId>, OutboxError> {
    let listing = Listing::read(dead)?;
    let meta = meta_bytes(&DeliveryMeta::fresh(now));
    for id in listing.cases.keys() {
        write_durable(pending, &format!("{id}{META_SUFFIX}"), &meta)?;
        let from = dead.join(format!("{id}{CASE_SUFFIX}"));
        let to = pending.join(format!("{id}{CASE_SUFFIX}"));
        fs::rename(&from, &to).map_err(io_err("move", &from))?;
        sync_dir(pending)?;
        sync_dir(dead)?;
        remove_file(&dead.join(format!("{id}{REASON_SUFFIX}")))?;
    }
    sync_dir(dead)?;
    Ok(listing.cases.keys().cloned().collect())
}

/// One directory's files, classified by name.
struct Listing {
    /// Case files with their modification time (Unix ms).
    cases: BTreeMap<CaseId, u64>,
    /// Sidecars (`.meta.json`, `.reason.txt`) by suffix and id.
    sidecars: Vec<(&'static str, CaseId, PathBuf)>,
    tmp: Vec<PathBuf>,
}

impl Listing {
    fn read(dir: &Path) -> Result<Listing, OutboxError> {
        let mut listing = Listing {
            cases: BTreeMap::new(),
            sidecars: Vec::new(),
            tmp: Vec::new(),
        };
        for item in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let item = item.map_err(io_err("list", dir))?;
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "outbox: ignoring non-UTF-8 file name");
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                listing.tmp.push(path);
            } else if let Some(id) = id_with_suffix(&name, META_SUFFIX) {
                listing.sidecars.push((META_SUFFIX, id, path));
            } else if let Some(id) = id_with_suffix(&name, REASON_SUFFIX) {
                listing.sidecars.push((REASON_SUFFIX, id, path));
            } else if let Some(id) = id_with_suffix(&name, CASE_SUFFIX) {
                let modified = item.metadata().and_then(|m| m.modified());
                let mtime = modified.map(unix_ms).unwrap_or(0);
                listing.cases.insert(id, mtime);
            } else {
                tracing::warn!(path = %path.display(), "outbox: ignoring unexpected file");
            }
        }
        Ok(listing)
    }

    /// Sidecars of `suffix` whose case file is missing.
    fn orphan_sidecars(&self, suffix: &str) -> Vec<PathBuf> {
        self.sidecars
            .iter()
            .filter(|(s, id, _)| *s == suffix && !self.cases.contains_key(id))
            .map(|(_, _, path)| path.clone())
            .collect()
    }

    /// Index entries for the pending cases, from their sidecars or, lacking one, their mtime.
    fn entries(&self, dir: &Path) -> BTreeMap<CaseId, Entry> {
        let mut out = BTreeMap::new();
        for (id, mtime) in &self.cases {
            let path = dir.join(format!("{id}{META_SUFFIX}"));
            let meta = match fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                    tracing::warn!(path = %path.display(), %error, "outbox: unreadable sidecar, starting over");
                    DeliveryMeta::fresh(*mtime)
                }),
                Err(_) => DeliveryMeta::fresh(*mtime),
            };
            out.insert(
                id.clone(),
                Entry {
                    meta,
                    in_flight: false,
                },
            );
        }
        out
    }
}

fn id_with_suffix(name: &str, suffix: &str) -> Option<CaseId> {
    name.strip_suffix(suffix)
        .and_then(|stem| CaseId::parse(stem).ok())
}

/// Temp file, write, fsync, rename over `name`, fsync the directory.
fn write_durable(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, OutboxError> {
    let tmp = write_temp_synced(dir, name, bytes)?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Writes `dir/<name>.tmp` and fsyncs it; returns its path. A failed write leaves no temp file
/// behind when it can be removed (a full disk gets its space back).
fn write_temp_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, OutboxError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let written = File::create(&tmp)
        .map_err(io_err("create", &tmp))
        .and_then(|mut file| {
            file.write_all(bytes).map_err(io_err("write", &tmp))?;
            file.sync_all().map_err(io_err("fsync", &tmp))
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Makes renames and removals in `dir` durable (POSIX: they live in the directory's data).
fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Removes a file; one that is already gone is fine (the goal state holds).
fn remove_file(path: &Path) -> Result<(), OutboxError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(OutboxError::Io {
            op: "remove",
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutboxError {
    let path = path.to_owned();
    move |source| OutboxError::Io { op, path, source }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
