//! Call recording: the handles the media task pushes 20 ms frames into, and the disk writer.
//!
//! Data flow: the call's media task calls [`CallRecorder::push_frame`] once per 20 ms tick with
//! the caller's decoded frame (silence where packets were lost) and the frame ivrd sent, so the two
//! channels stay in step. The handle copies the frame into a fixed block it owns; when a block is
//! full (0.24 s stereo, 0.48 s mono) it is handed, without waiting, to the one [`RecordingWriter`]
//! thread over a bounded channel, and the handle takes an empty block from the writer's pool of
//! free blocks, which the writer refills with the blocks it has written.
//! The writer appends each block with one write (`wav_part`), rewrites the WAV header's sizes
//! about once a second (so a killed process leaves a readable `NAME.wav.part`) and, at finish,
//! writes the final header; the finisher fsyncs, renames to `NAME.wav` and hashes the file. [`crate::runtime::recording_repair`] finalises what a crash left.
//!
//! The push path never waits or touches the disk, and allocates only when the pool is empty
//! (it only try-locks the pool, once per block): a full queue means the block is dropped and
//! counted, and the writer later fills that gap with silence so the file keeps the call's
//! length. An open recording owns one block of
//! 7.5 KiB; the blocks in flight (at most the writer's queue) are the pool's, and while the
//! writer is slow (a disk stall) the pool grows and is trimmed once the writer has caught up.

mod finisher;
mod name;
mod open_recording;
mod pool;
#[cfg(test)]
pub(crate) mod tests;
mod wav_part;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;

use crate::media::g711::FRAME_SAMPLES;

pub use name::{MAX_SAFE_ID_LEN, RECORDINGS_DIR, RecordingDate, RecordingName, safe_file_stem};
pub use writer::{RecordingWriter, WriterStatsSnapshot, WriterWorker};

pub(crate) use finisher::rename_durably;
pub(crate) use name::hex;
use writer::{BLOCK_SAMPLES, Block, WriterMsg};

/// Format label of the whole-call recording, as recorded in the case.
pub const STEREO_FORMAT: &str = "wav/pcm_s16le/8000/2";
/// Format label of a caller-message recording.
pub const MONO_FORMAT: &str = "wav/pcm_s16le/8000/1";
/// Sample rate of every recording.
pub const SAMPLE_RATE: u32 = 8_000;
/// Milliseconds in one pushed frame.
pub const FRAME_MS: u64 = 20;

/// Why a recording could not be started, written or finished. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The dated folder could not be created.
    #[error("cannot create recording folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file of that name (finished or in progress) is already there; it is never overwritten.
    #[error("recording {path} already exists")]
    AlreadyExists { path: PathBuf },
    /// Creating the `.wav.part` file or writing its header failed.
    #[error("cannot create recording {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Appending samples or updating the header failed; the rest of the recording is lost.
    #[error("cannot write recording {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// fsync of the file or its folder failed.
    #[error("cannot sync {path} to disk: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Renaming `.wav.part` to `.wav` (or aside to `.wav.broken`) failed.
    #[error("cannot rename {path} to {to}: {source}")]
    Rename {
        path: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    /// Reading the finished file back for its SHA-256 failed.
    #[error("cannot read {path} to hash it: {source}")]
    Hash {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The writer thread could not be started for this storage folder.
    #[error("cannot start the recording writer for {path}: {source}")]
    SpawnWriter {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The writer's queue is full, so this recording was not started.
    #[error("recording writer is overloaded; {path} not started")]
    WriterBusy { path: PathBuf },
    /// The writer thread is gone (shut down or panicked); nothing more is written.
    #[error("recording writer has stopped; {path} is incomplete")]
    WriterGone { path: PathBuf },
    /// Listing a folder during start-up repair failed.
    #[error("cannot scan {path} for unfinished recordings: {source}")]
    Scan {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading or patching an unfinished recording during repair failed.
    #[error("cannot repair {path}: {source}")]
    Repair {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a finished recording is, for the case's media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// Full path of the finished `.wav`.
    pub path: PathBuf,
    /// The same path relative to `[storage] dir` (what the case JSON stores).
    pub relative_path: PathBuf,
    /// Audio length: frames in the file × 20 ms (dropped blocks are in it as silence).
    pub duration_ms: u64,
    /// File size in bytes, header included.
    pub bytes: u64,
    /// SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// [`STEREO_FORMAT`] or [`MONO_FORMAT`].
    pub format: &'static str,
    /// Frames that were replaced by silence because the writer could not keep up.
    pub dropped_frames: u64,
}

/// Counters one recording shares with the writer (atomics only; read without locking).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Frames in the file as of the last header flush (what survives a crash for sure).
    pub(crate) frames_flushed: AtomicU64,
}

/// The part shared by both handles: a block being filled and the way to the writer.
#[derive(Debug)]
struct RecorderCore {
    id: u64,
    channels: usize,
    writer: RecordingWriter,
    relative: PathBuf,
    /// The block being filled; `None` only once the recording is closed.
    current: Option<Box<Block>>,
    /// Samples in `current`. Kept here, beside the other per-push fields, and written to the
    /// block's `len` only when the block leaves: the block's header is a cache line of its own,
    /// which every push would otherwise load (a miss per call per tick in the media clock).
    filled: usize,
    frames_pushed: u64,
    dropped_frames: u64,
    progress: Arc<Progress>,
    closed: bool,
}

impl RecorderCore {
    fn start(
        writer: &RecordingWriter,
        name: &RecordingName,
        channels: usize,
    ) -> Result<Self, RecordingError> {
        let progress = Arc::new(Progress::default());
        let id = writer.open(name, channels, Arc::clone(&progress))?;
        Ok(RecorderCore {
            id,
            channels,
            writer: writer.clone(),
            relative: name.relative_wav(),
            current: Some(writer.take_block(0)),
            filled: 0,
            frames_pushed: 0,
            dropped_frames: 0,
            progress,
            closed: false,
        })
    }

    fn frames_per_block(&self) -> usize {
        BLOCK_SAMPLES / (FRAME_SAMPLES * self.channels)
    }

    /// Appends one frame's interleaved samples, written by `fill` into the block's free space.
    /// No allocation unless the writer's pool is empty when a block is full.
    fn push_with(&mut self, fill: impl FnOnce(&mut [i16])) {
        self.frames_pushed += 1;
        let per_frame = FRAME_SAMPLES * self.channels;
        let Some(block) = self.current.as_mut() else {
            self.dropped_frames += 1;
            return;
        };
        let end = self.filled + per_frame;
        fill(&mut block.samples[self.filled..end]);
        self.filled = end;
        if end == self.frames_per_block() * per_frame {
            self.send_current();
        }
    }

    /// The block being filled, with its `len` set, for the writer.
    fn take_current(&mut self) -> Option<Box<Block>> {
        let mut block = self.current.take()?;
        block.len = std::mem::take(&mut self.filled);
        Some(block)
    }

    fn send_current(&mut self) {
        let Some(block) = self.take_current() else {
            return;
        };
        let msg = WriterMsg::Block { id: self.id, block };
        match self.writer.try_send(msg) {
            Ok(()) => self.current = Some(self.writer.take_block(self.frames_pushed)),
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                if let WriterMsg::Block { mut block, .. } = msg {
                    self.dropped_frames += block.frames(self.channels) as u64;
                    self.writer
                        .count_dropped(block.frames(self.channels) as u64);
                    block.reset(self.frames_pushed);
                    self.current = Some(block);
                }
            }
        }
    }

    fn finish_msg(
        &mut self,
        reply: tokio::sync::oneshot::Sender<Result<RecordingSummary, RecordingError>>,
    ) -> WriterMsg {
        self.closed = true;
        WriterMsg::Finish {
            id: self.id,
            tail: self.take_current(),
            frames_total: self.frames_pushed,
            dropped_frames: self.dropped_frames,
            reply,
        }
    }

    async fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let msg = self.finish_msg(reply);
        self.writer.send_async(msg).await?;
        answer.await.map_err(|_| self.gone())?
    }

    fn finish_blocking(mut self) -> Result<RecordingSummary, RecordingError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let msg = self.finish_msg(reply);
        self.writer.send_blocking(msg)?;
        answer.blocking_recv().map_err(|_| self.gone())?
    }

    fn gone(&self) -> RecordingError {
        RecordingError::WriterGone {
            path: self.relative.clone(),
        }
    }
}

impl Drop for RecorderCore {
    /// A recorder dropped without `finish` (the call task failed) is closed as a crash would leave
    /// it: its `.wav.part` stays for start-up repair. Best effort: a full queue leaves the file
    /// open in the writer until shutdown.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let msg = WriterMsg::Abandon {
            id: self.id,
            tail: self.take_current(),
        };
        // Nothing to report to: the writer counts abandoned recordings it sees.
        let _ = self.writer.try_send(msg);
    }
}

/// The whole-call recording (stereo: left = caller, right = ivrd) of one answered call.
///
/// Owned by the call's media task; all methods except `finish` are synchronous and never wait
/// for the disk.
#[derive(Debug)]
pub struct CallRecorder {
    core: RecorderCore,
}

impl CallRecorder {
    /// Starts `NAME.wav.part` under the writer's storage folder. Only queues the open: disk
    /// errors (folder, existing file) come back from [`CallRecorder::finish`]. Fails at once if
    /// the writer is overloaded or stopped.
    pub fn start(writer: &RecordingWriter, name: &RecordingName) -> Result<Self, RecordingError> {
        RecorderCore::start(writer, name, 2).map(|core| CallRecorder { core })
    }

    /// Records one 20 ms tick: the caller's frame (silence if nothing arrived) and ivrd's frame.
    /// Never blocks or waits for the disk; allocates only when a block is full and the
    /// writer's pool has none free.
    pub fn push_frame(&mut self, caller: &[i16; FRAME_SAMPLES], ivrd: &[i16; FRAME_SAMPLES]) {
        self.core.push_with(|dst| {
            for (pair, (&l, &r)) in dst.chunks_exact_mut(2).zip(caller.iter().zip(ivrd)) {
                pair[0] = l;
                pair[1] = r;
            }
        });
    }

    /// Frames pushed so far (the call's recorded length in 20 ms units).
    pub fn frames_pushed(&self) -> u64 {
        self.core.frames_pushed
    }

    /// Frames already made durable-on-crash by a header flush (lags pushes by up to ~1.5 s).
    pub fn frames_flushed(&self) -> u64 {
        self.core.progress.frames_flushed.load(Ordering::Acquire)
    }

    /// Frames lost to an overloaded writer so far (they become silence in the file).
    pub fn dropped_frames(&self) -> u64 {
        self.core.dropped_frames
    }

    /// Ends the recording: the writer writes the rest, finalises, fsyncs, renames to `NAME.wav`,
    /// fsyncs the folder and hashes the file. Must run inside a tokio runtime.
    pub async fn finish(self) -> Result<RecordingSummary, RecordingError> {
        self.core.finish().await
    }

    /// [`CallRecorder::finish`] for threads outside the async runtime (tools, tests); waits.
    pub fn finish_blocking(self) -> Result<RecordingSummary, RecordingError> {
        self.core.finish_blocking()
    }
}

/// A caller-only (mono) recording of one "leave a message" segment; the dialplan engine decides
/// when it starts and stops and how long it may be.
#[derive(Debug)]
pub struct MessageRecorder {
    core: RecorderCore,
}

impl MessageRecorder {
    /// Starts `NAME.wav.part`; same contract as [`CallRecorder::start`].
    pub fn start(writer: &RecordingWriter, name: &RecordingName) -> Result<Self, RecordingError> {
        RecorderCore::start(writer, name, 1).map(|core| MessageRecorder { core })
    }

    /// Records one 20 ms frame of the caller; same guarantees as [`CallRecorder::push_frame`].
    pub fn push(&mut self, caller: &[i16; FRAME_SAMPLES]) {
        self.core.push_with(|dst| dst.copy_from_slice(caller));
    }

    /// Frames pushed so far.
    pub fn frames_pushed(&self) -> u64 {
        self.core.frames_pushed
    }

    /// Frames already made durable-on-crash by a header flush.
    pub fn frames_flushed(&self) -> u64 {
        self.core.progress.frames_flushed.load(Ordering::Acquire)
    }

    /// Frames lost to an overloaded writer so far.
    pub fn dropped_frames(&self) -> u64 {
        self.core.dropped_frames
    }

    /// Ends the message recording; same contract as [`CallRecorder::finish`].
    pub async fn finish(self) -> Result<RecordingSummary, RecordingError> {
        self.core.finish().await
    }

    /// [`MessageRecorder::finish`] for threads outside the async runtime; waits.
    pub fn finish_blocking(self) -> Result<RecordingSummary, RecordingError> {
        self.core.finish_blocking()
    }
}
