//! The durable end of a recording, off the writer thread: fsync the finished file, rename it
//! from `.wav.part` to `.wav`, fsync the folder, read it back for its SHA-256. Each step waits
//! on the disk (an fsync takes milliseconds on a busy one); done by the writer, at a few
//! hundred finishing calls a second they stalled every other call's block writes until the
//! writer's queue filled and new recordings were refused. One thread keeps them in order.

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
    fn complete(self) -> Result<RecordingSummary, RecordingError> {
        sync(&self.file, &self.part)?;
        drop(self.file);
        if self.final_path.exists() {
            return Err(RecordingError::AlreadyExists {
                path: self.final_path,
            });
        }
        rename_durably(&self.part, &self.final_path)?;
        let (bytes, sha256) = hash_file(&self.final_path)?;
        Ok(RecordingSummary {
            path: self.final_path,
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
                for job in rx {
                    run(job, &stats);
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
        run(job, &self.stats);
    }

    /// Waits for every finish handed over so far.
    pub(super) fn stop(&mut self) {
        if let Some((tx, handle)) = self.thread.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn run(job: Job, stats: &WriterStats) {
    match job {
        Job::Finish(finishing, reply) => {
            let result = finishing.complete();
            match &result {
                Ok(_) => &stats.recordings_finished,
                Err(_) => &stats.recordings_failed,
            }
            .fetch_add(1, Ordering::Relaxed);
            // The call may have stopped waiting; the file is finished either way.
            let _ = reply.send(result);
        }
        Job::Barrier(done) => {
            // The waiter may have given up; nothing to do then.
            let _ = done.try_send(());
        }
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
    fs::rename(from, to).map_err(|source| RecordingError::Rename {
        path: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    let dir = to.parent().unwrap_or(Path::new("."));
    let dir_file = File::open(dir).map_err(|source| RecordingError::Sync {
        path: dir.to_path_buf(),
        source,
    })?;
    sync(&dir_file, dir)
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
