//! A recording's `.wav.part` file as the writer appends to it: the canonical 44-byte header of
//! 16-bit PCM (`RIFF`/`WAVE`, a 16-byte `fmt ` chunk, `data`), then the samples.
//!
//! Why not hound's writer (hound still reads recordings and prompts): its API takes one sample
//! at a time and keeps a buffer per file, and its header update is a seek, a write, a seek, a
//! write and a seek back. The writer thread appends whole blocks (0.48 s of stereo) for
//! thousands of open files; here a block is one `write` straight from the block's samples (on a
//! little-endian machine they are already the file's bytes; elsewhere they are converted in a
//! buffer the writer owns), and a header update is one `pwrite` that leaves the append offset
//! alone. Profiled at 1,000 calls, hound's per-sample path was a fifth of the writer thread.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use zerocopy::IntoBytes;

/// Bytes before the first sample.
pub(super) const HEADER_BYTES: u64 = 44;
/// Bytes per sample (16-bit PCM).
const SAMPLE_BYTES: usize = 2;

/// An open `.wav.part`: every append goes to the end, the header is rewritten in place.
#[derive(Debug)]
pub(super) struct WavPart {
    file: File,
    channels: u16,
    sample_rate: u32,
    /// Sample bytes appended so far (what the `data` chunk holds).
    data_bytes: u64,
}

impl WavPart {
    /// Writes a header describing no samples yet to `file` (new and empty).
    pub(super) fn create(mut file: File, channels: u16, sample_rate: u32) -> io::Result<Self> {
        let part = WavPart {
            file,
            channels,
            sample_rate,
            data_bytes: 0,
        };
        let header = part.header();
        file = part.file;
        file.write_all(&header)?;
        Ok(WavPart { file, ..part })
    }

    /// Appends `samples` (interleaved) in one write. On a big-endian machine `scratch` holds
    /// their little-endian bytes; on a little-endian one the samples are written as they lie
    /// (copying them first was a sixth of the writer thread at 3,000 calls).
    pub(super) fn append(&mut self, samples: &[i16], scratch: &mut Vec<u8>) -> io::Result<()> {
        if cfg!(target_endian = "little") {
            return self.append_bytes(samples.as_bytes());
        }
        scratch.clear();
        scratch.reserve(samples.len() * SAMPLE_BYTES);
        for sample in samples {
            scratch.extend_from_slice(&sample.to_le_bytes());
        }
        self.append_bytes(scratch)
    }

    /// Appends `count` samples of silence in one write.
    pub(super) fn append_silence(&mut self, count: usize, scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        scratch.resize(count * SAMPLE_BYTES, 0);
        self.append_bytes(scratch)
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.data_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the header's sizes, so that the file is a valid WAV up to what was appended
    /// (what a killed process leaves behind).
    pub(super) fn checkpoint(&self) -> io::Result<()> {
        self.file.write_all_at(&self.header(), 0)
    }

    /// The final header, and the file back for syncing.
    pub(super) fn finalize(self) -> io::Result<File> {
        self.checkpoint()?;
        Ok(self.file)
    }

    /// The header for what is appended so far. The caller keeps `data_bytes` within a `u32`
    /// (with room for the RIFF size's 36 bytes on top); should it not, the sizes saturate.
    fn header(&self) -> [u8; HEADER_BYTES as usize] {
        let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
        let riff = data.saturating_add(HEADER_BYTES as u32 - 8);
        let block_align = self.channels * SAMPLE_BYTES as u16;
        let byte_rate = self.sample_rate * u32::from(block_align);
        let mut h = [0u8; HEADER_BYTES as usize];
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&riff.to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
        h[22..24].copy_from_slice(&self.channels.to_le_bytes());
        h[24..28].copy_from_slice(&self.sample_rate.to_le_bytes());
        h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
        h[32..34].copy_from_slice(&block_align.to_le_bytes());
        h[34..36].copy_from_slice(&(SAMPLE_BYTES as u16 * 8).to_le_bytes());
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&data.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::recorder::tests::ScratchDir;

    fn part_in(dir: &ScratchDir, channels: u16) -> (std::path::PathBuf, WavPart) {
        let path = dir.0.join("r.wav.part");
        let file = File::create(&path).expect("create");
        (
            path,
            WavPart::create(file, channels, 8_000).expect("header"),
        )
    }

    #[test]
    fn hound_reads_back_what_was_appended_after_each_checkpoint() {
        let dir = ScratchDir::new("wav-part");
        let (path, mut part) = part_in(&dir, 2);
        let mut scratch = Vec::new();
        let samples: Vec<i16> = (0..640).map(|i| (i * 97 - 30_000) as i16).collect();
        part.append(&samples, &mut scratch).expect("append");
        part.checkpoint().expect("checkpoint");
        let reader = hound::WavReader::open(&path).expect("valid after checkpoint");
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8_000, 16)
        );
        let read: Vec<i16> = reader.into_samples().map(|s| s.expect("sample")).collect();
        assert_eq!(read, samples);

        part.append_silence(320, &mut scratch).expect("silence");
        part.finalize().expect("finalize");
        let read: Vec<i16> = hound::WavReader::open(&path)
            .expect("valid after finalize")
            .into_samples()
            .map(|s| s.expect("sample"))
            .collect();
        assert_eq!(read.len(), 960);
        assert_eq!(&read[..640], &samples[..]);
        assert!(read[640..].iter().all(|&s| s == 0));
    }

    #[test]
    fn the_header_is_byte_for_byte_what_hound_writes() {
        let dir = ScratchDir::new("wav-part");
        let (path, mut part) = part_in(&dir, 1);
        part.append(&[1, -1, i16::MAX, i16::MIN], &mut Vec::new())
            .expect("append");
        part.finalize().expect("finalize");
        let ours = std::fs::read(&path).expect("read");

        let theirs_path = dir.0.join("hound.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&theirs_path, spec).expect("hound");
        for s in [1, -1, i16::MAX, i16::MIN] {
            w.write_sample(s).expect("sample");
        }
        w.finalize().expect("hound finalize");
        assert_eq!(ours, std::fs::read(&theirs_path).expect("read"));
    }

    #[test]
    fn a_file_killed_between_checkpoints_reads_as_its_last_checkpoint() {
        let dir = ScratchDir::new("wav-part");
        let (path, mut part) = part_in(&dir, 1);
        let mut scratch = Vec::new();
        part.append(&[7; 160], &mut scratch).expect("append");
        part.checkpoint().expect("checkpoint");
        part.append(&[9; 160], &mut scratch).expect("append");
        drop(part); // no checkpoint: the header still says 160 samples
        let reader = hound::WavReader::open(&path).expect("valid");
        assert_eq!(reader.len(), 160);
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            HEADER_BYTES + 640
        );
    }
}
