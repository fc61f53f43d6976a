//! The durable end of a recording, off the writer thread: fsync the finished file, rename it
//! from `.wav.part` to `.wav`, fsync the folder, read it back for its SHA-256. Each step waits
//! on the disk (an fsync takes milliseconds on a busy one); done by the writer, at a few
//! hundred finishing calls a second they stalled every other call's block writes until the
//! writer's queue filled and new recordings were refused. One thread keeps them in order.
//!
//! Finishes that queued while the thread waited on the disk are done as one group: the writeback
//! of every file is started, each file is fsynced and renamed, then each folder is fsynced once
//! for all the renames in it (a group commit), then each file is hashed and answered. At 3,000
//! calls the folder fsync per file was a seventh of this thread.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::writer::{Reply, WriterStats};
use super::{FRAME_MS, MONO_FORMAT, RecordingError, RecordingSummary, STEREO_FORMAT, hex};

/// A recording whose header is final, waiting to be made durable and hashed.
pub(super) struct Finishing {
    pub(super) file: File,
    pub(super) part: PathBuf,
    pub(super) final_path: PathBuf,
    pub(super) relative: PathBuf,
    pub(super) channels: usize,
    pub(super) frames_written: u64,
    pub(super) dropped_frames: u64,
}

impl Finishing {
    /// Starts writing the file's data to the disk without waiting (`sync_file_range(2)`), so
    /// that the fsyncs of a group find their data on its way together instead of each waiting
    /// for its own. Only a hint: the fsync after it is what makes the file durable.
    fn start_writeback(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: plain integer arguments on a descriptor this struct owns; the call reads
            // no memory of ours.
            let _ = unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
    }

    /// fsyncs the file and renames it to its final name; the folder is not synced yet.
    fn sync_and_rename(self) -> Result<Renamed, RecordingError> {
        sync(&self.file, &self.part)?;
        drop(self.file);
        if self.final_path.exists() {
            return Err(RecordingError::AlreadyExists {
                path: self.final_path,
            });
        }
        rename(&self.part, &self.final_path)?;
        Ok(Renamed {
            path: self.final_path,
            relative: self.relative,
            channels: self.channels,
            frames_written: self.frames_written,
            dropped_frames: self.dropped_frames,
        })
    }
}

/// A finished recording under its final name, durable once its folder is synced.
struct Renamed {
    path: PathBuf,
    relative: PathBuf,
    channels: usize,
    frames_written: u64,
    dropped_frames: u64,
}

impl Renamed {
    fn folder(&self) -> &Path {
        folder_of(&self.path)
    }

    /// Hashes the file for the summary (after its folder is synced).
    fn summary(self) -> Result<RecordingSummary, RecordingError> {
        let (bytes, sha256) = hash_file(&self.path)?;
        Ok(RecordingSummary {
            path: self.path,
            relative_path: self.relative,
            duration_ms: self.frames_written * FRAME_MS,
            bytes,
            sha256,
            format: if self.channels == 2 {
                STEREO_FORMAT
            } else {
                MONO_FORMAT
            },
            dropped_frames: self.dropped_frames,
        })
    }
}

enum Job {
    Finish(Finishing, Reply),
    /// Answered once every finish queued before it is done.
    Barrier(SyncSender<()>),
}

/// The finishing thread; started with the writer's loop, joined when it ends (so a drain that
/// waits for the writer waits for every finish too).
pub(super) struct Finisher {
    stats: Arc<WriterStats>,
    /// `None` until the writer's loop starts it, or if the thread could not be started: then
    /// finishes are done in place, as before.
    thread: Option<(Sender<Job>, JoinHandle<()>)>,
}

impl Finisher {
    pub(super) fn new(stats: Arc<WriterStats>) -> Self {
        Finisher {
            stats,
            thread: None,
        }
    }

    /// Starts the thread (from the writer's own thread, when its loop begins).
    pub(super) fn start(&mut self) {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::clone(&self.stats);
        let spawned = std::thread::Builder::new()
            .name("ivrd-rec-finish".into())
            .spawn(move || {
                let mut group = Vec::new();
                while let Ok(first) = rx.recv() {
                    group.push(first);
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    run(group.drain(..), &stats);
                }
            });
        match spawned {
            Ok(handle) => self.thread = Some((tx, handle)),
            Err(e) => {
                tracing::warn!(error = %e, "recording finisher thread not started; finishing on the writer")
            }
        }
    }

    pub(super) fn finish(&self, finishing: Finishing, reply: Reply) {
        self.submit(Job::Finish(finishing, reply));
    }

    pub(super) fn barrier(&self, done: SyncSender<()>) {
        self.submit(Job::Barrier(done));
    }

    fn submit(&self, job: Job) {
        let job = match &self.thread {
            Some((tx, _)) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        run(std::iter::once(job), &self.stats);
    }

    /// Waits for every finish handed over so far.
    pub(super) fn stop(&mut self) {
        if let Some((tx, handle)) = self.thread.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// Finishes taken from the queue at once, at most: bounds how long the first of them waits for
/// the others' fsyncs before it is answered.
const MAX_GROUP: usize = 64;

/// Runs `jobs` in their order, finishes as groups: a barrier waits for the finishes before it.
fn run(jobs: impl Iterator<Item = Job>, stats: &WriterStats) {
    let mut finishes = Vec::new();
    for job in jobs {
        match job {
            Job::Finish(finishing, reply) => finishes.push((finishing, reply)),
            Job::Barrier(done) => {
                finish_group(std::mem::take(&mut finishes), stats);
                // The waiter may have given up; nothing to do then.
                let _ = done.try_send(());
            }
        }
    }
    finish_group(finishes, stats);
}

/// fsync and rename each file, fsync each folder once, then hash and answer each.
fn finish_group(group: Vec<(Finishing, Reply)>, stats: &WriterStats) {
    if group.is_empty() {
        return;
    }
    if group.len() > 1 {
        for (finishing, _) in &group {
            finishing.start_writeback();
        }
    }
    let renamed: Vec<_> = group
        .into_iter()
        .map(|(finishing, reply)| (finishing.sync_and_rename(), reply))
        .collect();
    let mut folders: Vec<(PathBuf, Option<io::Error>)> = Vec::new();
    for file in renamed
        .iter()
        .filter_map(|(result, _)| result.as_ref().ok())
    {
        if !folders.iter().any(|(folder, _)| folder == file.folder()) {
            let synced = fsync_folder(file.folder());
            folders.push((file.folder().to_path_buf(), synced.err()));
        }
    }
    for (result, reply) in renamed {
        let result = result.and_then(|file| {
            let failed = folders
                .iter()
                .find(|(folder, _)| folder == file.folder())
                .and_then(|(_, error)| error.as_ref());
            match failed {
                // Every file renamed into the folder shares its error.
                Some(error) => Err(RecordingError::Sync {
                    path: file.folder().to_path_buf(),
                    source: io::Error::new(error.kind(), error.to_string()),
                }),
                None => file.summary(),
            }
        });
        match &result {
            Ok(_) => &stats.recordings_finished,
            Err(_) => &stats.recordings_failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        // The call may have stopped waiting; the file is finished either way.
        let _ = reply.send(result);
    }
}

fn sync(file: &File, path: &Path) -> Result<(), RecordingError> {
    file.sync_all().map_err(|source| RecordingError::Sync {
        path: path.to_path_buf(),
        source,
    })
}

/// Renames `from` to `to` and fsyncs the folder, so the new name survives a power cut.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<(), RecordingError> {
    rename(from, to)?;
    sync_folder(folder_of(to))
}

fn rename(from: &Path, to: &Path) -> Result<(), RecordingError> {
    fs::rename(from, to).map_err(|source| RecordingError::Rename {
        path: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

fn folder_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// fsyncs a folder: the names renamed into it so far survive a power cut.
fn sync_folder(dir: &Path) -> Result<(), RecordingError> {
    fsync_folder(dir).map_err(|source| RecordingError::Sync {
        path: dir.to_path_buf(),
        source,
    })
}

fn fsync_folder(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Size and SHA-256 (hex) of a file, read in 64 KiB pieces.
fn hash_file(path: &Path) -> Result<(u64, String), RecordingError> {
    let err = |source| RecordingError::Hash {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::recorder::tests::ScratchDir;
    use tokio::sync::oneshot;

    /// A finished `.wav.part` holding `bytes` in `folder`, as the writer hands it over.
    fn finishing(root: &Path, folder: &str, name: &str, bytes: &[u8]) -> Finishing {
        let dir = root.join(folder);
        fs::create_dir_all(&dir).expect("folder");
        let part = dir.join(format!("{name}.wav.part"));
        fs::write(&part, bytes).expect("part");
        Finishing {
            file: File::open(&part).expect("open"),
            part,
            final_path: dir.join(format!("{name}.wav")),
            relative: Path::new(folder).join(format!("{name}.wav")),
            channels: 1,
            frames_written: 1,
            dropped_frames: 0,
        }
    }

    #[test]
    fn a_group_is_finished_with_one_result_per_file() {
        let dir = ScratchDir::new("finish-group");
        let root = &dir.0;
        fs::create_dir_all(root.join("x")).expect("folder");
        fs::write(root.join("x/taken.wav"), b"earlier").expect("existing");
        let files = [
            ("x", "a", &b"first"[..]),
            ("x", "taken", &b"second"[..]),
            ("y", "c", &b"third"[..]),
            ("x", "d", &b"fourth"[..]),
        ];
        let mut jobs = Vec::new();
        let mut replies = Vec::new();
        for (folder, name, bytes) in files {
            let (tx, rx) = oneshot::channel();
            jobs.push(Job::Finish(finishing(root, folder, name, bytes), tx));
            replies.push(rx);
        }
        let stats = WriterStats::default();
        run(jobs.into_iter(), &stats);

        for ((folder, name, bytes), mut reply) in files.into_iter().zip(replies) {
            let result = reply.try_recv().expect("answered");
            let final_path = root.join(folder).join(format!("{name}.wav"));
            if name == "taken" {
                assert!(
                    matches!(&result, Err(RecordingError::AlreadyExists { path }) if *path == final_path),
                    "{result:?}"
                );
                assert_eq!(fs::read(&final_path).expect("kept"), b"earlier");
                assert!(root.join("x/taken.wav.part").exists(), "left for a person");
                continue;
            }
            let summary = result.expect("finished");
            assert_eq!(summary.path, final_path);
            assert_eq!(fs::read(&final_path).expect("renamed"), bytes);
            assert!(!root.join(folder).join(format!("{name}.wav.part")).exists());
            assert_eq!(summary.bytes, bytes.len() as u64);
            assert_eq!(summary.sha256, hex(&Sha256::digest(bytes)));
        }
        assert_eq!(stats.recordings_finished.load(Ordering::Relaxed), 3);
        assert_eq!(stats.recordings_failed.load(Ordering::Relaxed), 1);
    }
}
