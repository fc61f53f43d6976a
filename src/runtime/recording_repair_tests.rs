//! Tests of start-up repair on `.part` files built by hand and by a recorder that "crashed".

use std::path::{Path, PathBuf};

use super::*;
use crate::runtime::recorder::tests::ScratchDir;
use crate::runtime::recorder::{CallRecorder, RecordingDate, RecordingName, RecordingWriter};

/// A canonical 44-byte PCM header written field by field (independent of hound and of the code
/// under test), with whatever sizes a crash left in it.
fn header(channels: u16, riff_size: u32, data_size: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff_size.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&8000u32.to_le_bytes());
    h.extend_from_slice(&(8000 * 2 * u32::from(channels)).to_le_bytes());
    h.extend_from_slice(&(2 * channels).to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_size.to_le_bytes());
    h
}

fn samples(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (i as i16).wrapping_mul(31).wrapping_add(5))
        .collect()
}

fn le_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn day_dir(storage: &Path) -> PathBuf {
    let dir = storage.join("recordings/2026/11/26");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_samples(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    (spec, r.samples::<i16>().map(|s| s.unwrap()).collect())
}

#[test]
fn header_saying_zero_length_gets_the_real_length() {
    let dir = ScratchDir::new("repair-zero");
    let part = day_dir(&dir.0).join("zero.wav.part");
    let audio = samples(37 * 160 * 2);
    let mut bytes = header(2, 36, 0);
    bytes.extend(le_bytes(&audio));
    std::fs::write(&part, &bytes).unwrap();

    let report = repair_orphans(&dir.0);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.broken.is_empty());
    assert_eq!(report.repaired.len(), 1);
    let fixed = &report.repaired[0];
    assert_eq!(fixed.path, part.with_file_name("zero.wav"));
    assert_eq!(fixed.duration_ms, 37 * 20);
    assert_eq!(fixed.truncated_bytes, 0);
    assert!(!part.exists());
    let (spec, got) = read_samples(&fixed.path);
    assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
    assert_eq!(got, audio);
}

#[test]
fn half_written_frame_is_cut_off() {
    let dir = ScratchDir::new("repair-half");
    let part = day_dir(&dir.0).join("half.wav.part");
    let audio = samples(10 * 160 * 2);
    // The header claims more than is there, and a stereo frame is 2 bytes short of whole.
    let mut bytes = header(2, 999_999, 999_999);
    bytes.extend(le_bytes(&audio));
    bytes.extend_from_slice(&[1, 2]);
    std::fs::write(&part, &bytes).unwrap();

    let report = repair_orphans(&dir.0);
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert_eq!(report.repaired[0].truncated_bytes, 2);
    let path = &report.repaired[0].path;
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        44 + audio.len() as u64 * 2
    );
    assert_eq!(read_samples(path).1, audio);
}

#[test]
fn extra_chunks_before_data_are_kept() {
    let dir = ScratchDir::new("repair-list");
    let part = day_dir(&dir.0).join("list.wav.part");
    let mut bytes = header(1, 0, 0);
    // Insert an odd-sized LIST chunk (padded to even) between fmt and data.
    let data_hdr = bytes.split_off(36);
    bytes.extend_from_slice(b"LIST");
    bytes.extend_from_slice(&5u32.to_le_bytes());
    bytes.extend_from_slice(b"abcde\0");
    bytes.extend(data_hdr);
    let audio = samples(160 * 3);
    bytes.extend(le_bytes(&audio));
    std::fs::write(&part, &bytes).unwrap();

    let report = repair_orphans(&dir.0);
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert_eq!(report.repaired[0].duration_ms, 60);
    // hound does not skip RIFF pad bytes, so check the bytes: 36 + LIST (8 + 5 + pad) + data.
    let fixed = std::fs::read(&report.repaired[0].path).unwrap();
    assert_eq!(&fixed[36..50], b"LIST\x05\0\0\0abcde\0");
    assert_eq!(&fixed[50..54], b"data");
    let data_len = u32::from_le_bytes(fixed[54..58].try_into().unwrap());
    assert_eq!(data_len as usize, audio.len() * 2);
    let riff_len = u32::from_le_bytes(fixed[4..8].try_into().unwrap());
    assert_eq!(riff_len as usize, fixed.len() - 8);
    assert_eq!(&fixed[58..], &le_bytes(&audio)[..]);
}

#[test]
fn garbage_and_cut_headers_are_moved_aside_not_deleted() {
    let dir = ScratchDir::new("repair-garbage");
    let day = day_dir(&dir.0);
    let garbage: Vec<u8> = (0..500u32).map(|i| (i * 37 % 251) as u8).collect();
    std::fs::write(day.join("junk.wav.part"), &garbage).unwrap();
    std::fs::write(day.join("short.wav.part"), &header(2, 0, 0)[..30]).unwrap();
    let mut eight_bit = header(1, 0, 0);
    eight_bit[34] = 8;
    std::fs::write(day.join("u8.wav.part"), &eight_bit).unwrap();

    let report = repair_orphans(&dir.0);
    assert!(report.repaired.is_empty(), "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut broken = report.broken.clone();
    broken.sort();
    let want = ["junk", "short", "u8"].map(|n| day.join(format!("{n}.wav.broken")));
    assert_eq!(broken, want);
    assert_eq!(std::fs::read(&want[0]).unwrap(), garbage);
    assert!(!day.join("junk.wav").exists());
    assert!(!day.join("junk.wav.part").exists());
}

#[test]
fn a_taken_name_moves_the_part_aside_with_a_counter() {
    let dir = ScratchDir::new("repair-taken");
    let day = day_dir(&dir.0);
    std::fs::write(day.join("t.wav"), b"finished earlier").unwrap();
    std::fs::write(day.join("t.wav.broken"), b"older").unwrap();
    let mut bytes = header(1, 0, 0);
    bytes.extend(le_bytes(&samples(160)));
    std::fs::write(day.join("t.wav.part"), &bytes).unwrap();

    let report = repair_orphans(&dir.0);
    assert_eq!(report.broken, vec![day.join("t.wav.broken.1")]);
    assert_eq!(
        std::fs::read(day.join("t.wav")).unwrap(),
        b"finished earlier"
    );
    assert_eq!(std::fs::read(day.join("t.wav.broken")).unwrap(), b"older");
}

#[test]
fn recorder_part_is_repaired_past_its_last_header_flush() {
    let dir = ScratchDir::new("repair-recorder");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let day = RecordingDate {
        year: 2026,
        month: 11,
        day: 26,
    };
    let name = RecordingName::for_call("crashed", day);
    let mut rec = CallRecorder::start(&writer, &name).unwrap();
    let frame: [i16; 160] = std::array::from_fn(|i| i as i16 + 1);
    // Blocks hold 12 stereo frames: 7 blocks reach the file, the 85th frame does not.
    for f in 0..85 {
        rec.push_frame(&frame, &frame);
        if f % 12 == 11 {
            writer.drain_blocking().unwrap();
        }
    }
    // The header is flushed once 50 frames are written since the last flush: at 60 frames
    // (block 5), not again by 84.
    std::mem::forget(rec);
    writer.drain_blocking().unwrap();
    let part = dir.0.join(name.relative_part());
    assert_eq!(read_samples(&part).1.len(), 60 * 320);

    let report = repair_orphans(&dir.0);
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert_eq!(report.repaired[0].path, dir.0.join(name.relative_wav()));
    assert_eq!(report.repaired[0].duration_ms, 84 * 20);
    let (_, got) = read_samples(&report.repaired[0].path);
    assert_eq!(got.len(), 84 * 320);
    assert!(
        got.chunks(320)
            .all(|f| f[0] == 1 && f[1] == 1 && f[319] == 160)
    );
}

#[test]
fn finished_files_and_missing_folders_are_left_alone() {
    let dir = ScratchDir::new("repair-none");
    assert!(repair_orphans(&dir.0).repaired.is_empty());
    let day = day_dir(&dir.0);
    std::fs::write(day.join("done.wav"), b"x").unwrap();
    std::fs::write(day.join(".wav.part"), b"x").unwrap();
    let report = repair_orphans(&dir.0);
    assert!(report.repaired.is_empty() && report.broken.is_empty() && report.errors.is_empty());
    assert_eq!(std::fs::read(day.join("done.wav")).unwrap(), b"x");
}
