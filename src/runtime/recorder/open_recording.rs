//! One recording file the writer has open: where its blocks go in time (a gap before a block,
//! from blocks a call dropped, becomes silence), the size limit, the header checkpoint about
//! once a second, and the hand-over to the [`super::finisher::Finisher`] at the end.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::finisher::Finishing;
use super::wav_part::WavPart;
use super::writer::{BLOCK_SAMPLES, Block};
use super::{Progress, RecordingError, SAMPLE_RATE};
use crate::media::g711::FRAME_SAMPLES;

/// Frames of audio between two header checkpoints (1 s).
const CHECKPOINT_EVERY_FRAMES: u64 = 50;
/// WAV sizes are u32; stop a recording's data short of that (~37 h of stereo).
const MAX_DATA_BYTES: u64 = u32::MAX as u64 - 1024;

pub(super) struct OpenRecording {
    relative: PathBuf,
    part: PathBuf,
    final_path: PathBuf,
    channels: usize,
    /// `None` once an IO error happened (kept in `error`) or before the file could be made.
    wav: Option<WavPart>,
    error: Option<RecordingError>,
    frames_written: u64,
    frames_at_checkpoint: u64,
    frames_dropped: u64,
    progress: Arc<Progress>,
}

impl OpenRecording {
    /// Creates `<storage_dir>/<relative>.part`; a failure is kept (see [`Self::close`]), so that
    /// the call's finish reports it.
    pub(super) fn create(
        storage_dir: &Path,
        relative: PathBuf,
        channels: usize,
        progress: Arc<Progress>,
    ) -> Self {
        let final_path = storage_dir.join(&relative);
        let mut part = final_path.clone().into_os_string();
        part.push(".part");
        let mut rec = OpenRecording {
            relative,
            part: PathBuf::from(part),
            final_path,
            channels,
            wav: None,
            error: None,
            frames_written: 0,
            frames_at_checkpoint: 0,
            frames_dropped: 0,
            progress,
        };
        match rec.create_file() {
            Ok(wav) => rec.wav = Some(wav),
            Err(e) => rec.error = Some(e),
        }
        rec
    }

    fn create_file(&self) -> Result<WavPart, RecordingError> {
        if let Some(dir) = self.part.parent() {
            fs::create_dir_all(dir).map_err(|source| RecordingError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        if self.final_path.exists() {
            return Err(RecordingError::AlreadyExists {
                path: self.final_path.clone(),
            });
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.part)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => RecordingError::AlreadyExists {
                    path: self.part.clone(),
                },
                _ => RecordingError::Create {
                    path: self.part.clone(),
                    source,
                },
            })?;
        WavPart::create(file, self.channels as u16, SAMPLE_RATE).map_err(|source| {
            RecordingError::Create {
                path: self.part.clone(),
                source,
            }
        })
    }

    fn frame_bytes(&self) -> u64 {
        (FRAME_SAMPLES * self.channels * 2) as u64
    }

    /// Writes `block` at its place in time: a gap before it (dropped blocks) becomes silence.
    pub(super) fn append(&mut self, block: &Block, scratch: &mut Vec<u8>) {
        self.pad_to(block.first_frame, scratch);
        let samples = &block.samples[..block.len];
        let frames = block.frames(self.channels) as u64;
        let written = self.write(frames, scratch, |wav, scratch| wav.append(samples, scratch));
        if !written {
            self.frames_dropped += frames;
        }
    }

    /// Writes silence up to frame `frames`, so the file has the call's length.
    pub(super) fn pad_to(&mut self, frames: u64, scratch: &mut Vec<u8>) {
        let per_frame = FRAME_SAMPLES * self.channels;
        let chunk_frames = (BLOCK_SAMPLES / per_frame) as u64;
        // In block-sized pieces, so that the scratch buffer stays one block's bytes.
        while self.wav.is_some() && self.frames_written < frames {
            let n = (frames - self.frames_written).min(chunk_frames);
            let written = self.write(n, scratch, |wav, scratch| {
                wav.append_silence(n as usize * per_frame, scratch)
            });
            if !written {
                // Size limit reached: the rest is counted as dropped.
                self.frames_dropped += frames - self.frames_written;
                return;
            }
        }
    }

    /// Appends `frames` frames with `append`; false if they did not fit under the WAV size
    /// limit. After an IO error the recording is failed and writes are skipped (returns true:
    /// nothing is "dropped", the error reports it).
    fn write(
        &mut self,
        frames: u64,
        scratch: &mut Vec<u8>,
        append: impl FnOnce(&mut WavPart, &mut Vec<u8>) -> io::Result<()>,
    ) -> bool {
        let frame_bytes = self.frame_bytes();
        let Some(wav) = self.wav.as_mut() else {
            return true;
        };
        if frames == 0 {
            return true;
        }
        if (self.frames_written + frames) * frame_bytes > MAX_DATA_BYTES {
            return false;
        }
        if let Err(source) = append(wav, scratch) {
            self.fail(source);
            return true;
        }
        self.frames_written += frames;
        if self.frames_written - self.frames_at_checkpoint >= CHECKPOINT_EVERY_FRAMES {
            self.checkpoint();
        }
        true
    }

    /// Updates the header so the `.part` is a valid WAV up to here.
    pub(super) fn checkpoint(&mut self) {
        let Some(wav) = self.wav.as_ref() else {
            return;
        };
        match wav.checkpoint() {
            Ok(()) => {
                self.frames_at_checkpoint = self.frames_written;
                self.progress
                    .frames_flushed
                    .store(self.frames_written, Ordering::Release);
            }
            Err(source) => self.fail(source),
        }
    }

    fn fail(&mut self, source: io::Error) {
        self.wav = None;
        self.error = Some(RecordingError::Write {
            path: self.part.clone(),
            source,
        });
    }

    /// Writes the final header and hands the file over for the durable part (fsync, rename,
    /// hash), which the finisher does off the writer's thread.
    pub(super) fn close(mut self, dropped_frames: u64) -> Result<Finishing, RecordingError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let Some(wav) = self.wav.take() else {
            return Err(RecordingError::WriterGone { path: self.part });
        };
        let file: File = wav.finalize().map_err(|source| RecordingError::Write {
            path: self.part.clone(),
            source,
        })?;
        Ok(Finishing {
            file,
            part: self.part,
            final_path: self.final_path,
            relative: self.relative,
            channels: self.channels,
            frames_written: self.frames_written,
            dropped_frames: dropped_frames + self.frames_dropped,
        })
    }
}
