//! Start-up repair of recordings a crash left unfinished.
//!
//! Runs once, before the recording writer starts: every `*.wav.part` under
//! `[storage] dir/recordings` belongs to a call that died with the process. Its samples reached
//! the kernel in whole blocks, but the WAV header only knows the length at the last `flush()`
//! (or 0), so the RIFF and `data` sizes are rewritten from the real file length, cut down to a
//! whole sample frame, and the file is renamed to `.wav`. A file whose header cannot be
//! understood is moved aside as `.wav.broken` for a person to look at: nothing is deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::runtime::recorder::{RECORDINGS_DIR, RecordingError};

/// The suffix of a recording still being written (or left by a crash).
pub const PART_SUFFIX: &str = ".wav.part";
/// The suffix given to an unfinished recording that could not be repaired.
pub const BROKEN_SUFFIX: &str = ".wav.broken";

/// Header bytes read to find the `fmt ` and `data` chunks (ours are 44 bytes).
const HEADER_SCAN: usize = 4096;

/// One repaired recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairedRecording {
    /// The finished `.wav`.
    pub path: PathBuf,
    /// Audio length recovered, in milliseconds.
    pub duration_ms: u64,
    /// Bytes cut off the end (a half-written sample frame).
    pub truncated_bytes: u64,
}

/// What [`repair_orphans`] did; log it and count it in metrics.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// `.wav.part` files that are now valid `.wav` files.
    pub repaired: Vec<RepairedRecording>,
    /// Files that were not WAV recordings we can fix, now under their `.wav.broken` name.
    pub broken: Vec<PathBuf>,
    /// Failures (unreadable folders, files that could be neither fixed nor moved aside).
    pub errors: Vec<RecordingError>,
}

/// Where the pieces of an unfinished WAV are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WavLayout {
    /// Offset of the `data` chunk's size field.
    data_size_at: u64,
    /// Offset of the first sample.
    data_start: u64,
    /// Bytes per sample frame (all channels).
    block_align: u64,
    sample_rate: u64,
}

/// Repairs every `*.wav.part` under `storage_dir/recordings` (see the module doc). Call before
/// the [`crate::runtime::recorder::RecordingWriter`] starts: it would take a live file for an
/// orphan. Blocking IO; from async code run it in `spawn_blocking`.
pub fn repair_orphans(storage_dir: &Path) -> RepairReport {
    let mut report = RepairReport::default();
    let root = storage_dir.join(RECORDINGS_DIR);
    let mut parts = Vec::new();
    if root.is_dir() {
        find_parts(&root, &mut parts, &mut report.errors);
    }
    parts.sort();
    for part in parts {
        match repair_one(&part) {
            Ok(done) => report.repaired.push(done),
            Err(RepairFailure::NotRepairable) => match move_aside(&part) {
                Ok(broken) => report.broken.push(broken),
                Err(e) => report.errors.push(e),
            },
            Err(RepairFailure::Io(e)) => report.errors.push(e),
        }
    }
    report
}

/// Collects `*.wav.part` files below `dir` (symlinks are not followed).
fn find_parts(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<RecordingError>) {
    let scan_err = |source| RecordingError::Scan {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return errors.push(scan_err(e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(scan_err(e));
                continue;
            }
        };
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => find_parts(&path, out, errors),
            Ok(t) if t.is_file() && is_part(&path) => out.push(path),
            Ok(_) => {}
            Err(e) => errors.push(scan_err(e)),
        }
    }
}

fn is_part(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > PART_SUFFIX.len() && n.ends_with(PART_SUFFIX))
}

enum RepairFailure {
    /// Not a WAV we know how to fix (or the finished name is taken): move it aside.
    NotRepairable,
    Io(RecordingError),
}

fn repair_one(part: &Path) -> Result<RepairedRecording, RepairFailure> {
    let io_err = |source| {
        RepairFailure::Io(RecordingError::Repair {
            path: part.to_path_buf(),
            source,
        })
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut header = Vec::with_capacity(HEADER_SCAN);
    (&mut file)
        .take(HEADER_SCAN as u64)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    let layout = parse_layout(&header).ok_or(RepairFailure::NotRepairable)?;
    if layout.data_start > file_len {
        return Err(RepairFailure::NotRepairable);
    }
    // RIFF sizes are u32: keep at most what the header can describe.
    let max_data = u64::from(u32::MAX) - (layout.data_start - 8);
    let available = (file_len - layout.data_start).min(max_data);
    let data_len = available - available % layout.block_align;
    let new_len = layout.data_start + data_len;
    patch_sizes(&mut file, &layout, data_len, new_len).map_err(io_err)?;
    drop(file);
    let final_path = finished_name(part);
    if final_path.exists() {
        return Err(RepairFailure::NotRepairable);
    }
    crate::runtime::recorder::rename_durably(part, &final_path).map_err(RepairFailure::Io)?;
    Ok(RepairedRecording {
        path: final_path,
        duration_ms: data_len / layout.block_align * 1000 / layout.sample_rate,
        truncated_bytes: file_len - new_len,
    })
}

/// Cuts the file to `new_len` and writes the RIFF and `data` sizes, then fsyncs.
fn patch_sizes(file: &mut File, layout: &WavLayout, data_len: u64, new_len: u64) -> io::Result<()> {
    file.set_len(new_len)?;
    // Both fit in u32: `repair_one` bounded `data_len` by what the RIFF size can hold.
    let riff_size = (new_len - 8) as u32;
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&riff_size.to_le_bytes())?;
    file.seek(SeekFrom::Start(layout.data_size_at))?;
    file.write_all(&(data_len as u32).to_le_bytes())?;
    file.sync_all()
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds `fmt ` (16-bit PCM, as we write) and `data` in a RIFF/WAVE header; chunk sizes other
/// than `data`'s are trusted, `data`'s is not (that is what a crash leaves wrong).
fn parse_layout(header: &[u8]) -> Option<WavLayout> {
    if header.get(0..4)? != b"RIFF" || header.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut pos = 12usize;
    let mut fmt: Option<(u64, u64)> = None;
    loop {
        let id = header.get(pos..pos + 4)?;
        let size = le_u32(header, pos + 4)? as usize;
        if id == b"fmt " {
            fmt = Some(parse_fmt(header.get(pos + 8..pos + 8 + size)?)?);
        } else if id == b"data" {
            let (block_align, sample_rate) = fmt?;
            return Some(WavLayout {
                data_size_at: pos as u64 + 4,
                data_start: pos as u64 + 8,
                block_align,
                sample_rate,
            });
        }
        // RIFF chunks are padded to an even length.
        pos = pos
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size & 1)?;
    }
}

/// (block_align, sample_rate) of a 16-bit PCM `fmt ` chunk, or None for anything else.
fn parse_fmt(fmt: &[u8]) -> Option<(u64, u64)> {
    let tag = le_u16(fmt, 0)?;
    let channels = le_u16(fmt, 2)?;
    let rate = le_u32(fmt, 4)?;
    let block_align = le_u16(fmt, 12)?;
    let bits = le_u16(fmt, 14)?;
    let pcm = tag == 1 || tag == 0xFFFE;
    let sane = (1..=8).contains(&channels) && rate > 0 && bits == 16;
    (pcm && sane && block_align == channels * 2)
        .then_some((u64::from(block_align), u64::from(rate)))
}

/// `NAME.wav.part` → `NAME.wav`.
fn finished_name(part: &Path) -> PathBuf {
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    part.with_file_name(name.strip_suffix(".part").unwrap_or(name))
}

/// Renames `NAME.wav.part` to `NAME.wav.broken` (or `.broken.1`, `.2`, … if taken).
fn move_aside(part: &Path) -> Result<PathBuf, RecordingError> {
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.strip_suffix(PART_SUFFIX).unwrap_or(name);
    let base = part.with_file_name(format!("{stem}{BROKEN_SUFFIX}"));
    let mut target = base.clone();
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        let mut s = base.clone().into_os_string();
        s.push(format!(".{n}"));
        target = PathBuf::from(s);
    }
    crate::runtime::recorder::rename_durably(part, &target)?;
    Ok(target)
}

#[cfg(test)]
#[path = "recording_repair_tests.rs"]
mod tests;
