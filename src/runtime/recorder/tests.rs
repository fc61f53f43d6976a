//! Tests of the recorder handles and the writer against real files, read back with hound.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;

/// A scratch folder under the system temp dir, removed on drop.
pub(crate) struct ScratchDir(pub(crate) PathBuf);

impl ScratchDir {
    pub(crate) fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("ivrd-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DAY: RecordingDate = RecordingDate {
    year: 2026,
    month: 11,
    day: 26,
};

/// Distinct, frame-dependent content for the caller channel.
fn caller_frame(frame: u64) -> [i16; FRAME_SAMPLES] {
    std::array::from_fn(|i| (frame as i16).wrapping_mul(7).wrapping_add(i as i16 + 1))
}

/// Distinct content for ivrd's channel (negative, so it can never equal the caller's).
fn ivrd_frame(frame: u64) -> [i16; FRAME_SAMPLES] {
    std::array::from_fn(|i| -1 - ((frame as i16 % 1000) * 3 + i as i16 % 3))
}

fn read_all(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    (spec, samples)
}

fn assert_stereo_frame(samples: &[i16], frame: u64, silent: bool) {
    let at = frame as usize * FRAME_SAMPLES * 2;
    let (c, r) = (caller_frame(frame), ivrd_frame(frame));
    for i in 0..FRAME_SAMPLES {
        let (want_l, want_r) = if silent { (0, 0) } else { (c[i], r[i]) };
        assert_eq!(
            samples[at + 2 * i],
            want_l,
            "left, frame {frame} sample {i}"
        );
        assert_eq!(
            samples[at + 2 * i + 1],
            want_r,
            "right, frame {frame} sample {i}"
        );
    }
}

/// Stereo frames in one block.
const PER_BLOCK: u64 = (BLOCK_SAMPLES / (2 * FRAME_SAMPLES)) as u64;

/// Records `frames` frames, letting the writer catch up after each block as it would in real
/// time (a block takes 0.24 s to fill in a call, far longer than the writer needs).
fn record(writer: &RecordingWriter, name: &RecordingName, frames: u64) -> CallRecorder {
    let mut rec = CallRecorder::start(writer, name).unwrap();
    push_paced(writer, &mut rec, 0..frames);
    rec
}

fn push_paced(writer: &RecordingWriter, rec: &mut CallRecorder, frames: std::ops::Range<u64>) {
    for f in frames {
        rec.push_frame(&caller_frame(f), &ivrd_frame(f));
        if (f + 1) % PER_BLOCK == 0 {
            writer.drain_blocking().unwrap();
        }
    }
}

#[test]
fn stereo_recording_reads_back_with_both_channels_in_step() {
    let dir = ScratchDir::new("rec-stereo");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let name = RecordingName::for_call("call-1@example", DAY);
    // 11 full blocks and a 5-frame tail.
    let frames = 137;
    let rec = record(&writer, &name, frames);
    assert_eq!(rec.frames_pushed(), frames);
    let summary = rec.finish_blocking().unwrap();

    assert_eq!(summary.relative_path, name.relative_wav());
    assert_eq!(summary.path, dir.0.join(name.relative_wav()));
    assert_eq!(summary.duration_ms, frames * 20);
    assert_eq!(summary.format, "wav/pcm_s16le/8000/2");
    assert_eq!(summary.dropped_frames, 0);
    assert!(!dir.0.join(name.relative_part()).exists());

    let (spec, samples) = read_all(&summary.path);
    assert_eq!(spec.channels, 2);
    assert_eq!(spec.sample_rate, 8000);
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(samples.len(), frames as usize * FRAME_SAMPLES * 2);
    for f in 0..frames {
        assert_stereo_frame(&samples, f, false);
    }
}

#[test]
fn recordings_open_at_once_keep_their_own_bytes() {
    // Every recording's header and blocks pass through the writer thread's one staging buffer.
    let dir = ScratchDir::new("rec-many");
    let writer = RecordingWriter::spawn(&dir.0, 256).unwrap();
    let mut calls: Vec<_> = ["one", "two"]
        .iter()
        .map(|id| CallRecorder::start(&writer, &RecordingName::for_call(id, DAY)).unwrap())
        .collect();
    let mut message =
        MessageRecorder::start(&writer, &RecordingName::for_message("one", DAY, 1)).unwrap();
    let frames = 5 * PER_BLOCK + 3;
    for f in 0..frames {
        for rec in &mut calls {
            rec.push_frame(&caller_frame(f), &ivrd_frame(f));
        }
        message.push(&caller_frame(f));
    }
    let mono = message.finish_blocking().unwrap();
    let (spec, samples) = read_all(&mono.path);
    assert_eq!(spec.channels, 1);
    let want: Vec<i16> = (0..frames).flat_map(caller_frame).collect();
    assert_eq!(samples, want);
    for rec in calls {
        let summary = rec.finish_blocking().unwrap();
        let (spec, samples) = read_all(&summary.path);
        assert_eq!(spec.channels, 2);
        assert_eq!(samples.len(), frames as usize * FRAME_SAMPLES * 2);
        for f in 0..frames {
            assert_stereo_frame(&samples, f, false);
        }
    }
    assert!(
        writer.free_blocks() >= 1,
        "written blocks go back to the pool"
    );
}

#[test]
fn a_timed_writer_observes_each_file_operation() {
    let dir = ScratchDir::new("rec-timed");
    let metrics = crate::metrics::Metrics::new().unwrap();
    let writer =
        RecordingWriter::spawn_timed(&dir.0, 64, Some(metrics.recording_writer_ops())).unwrap();
    // Three full blocks and a tail: one create, three appends, one close.
    let rec = record(
        &writer,
        &RecordingName::for_call("timed", DAY),
        3 * PER_BLOCK + 1,
    );
    rec.finish_blocking().unwrap();
    let scrape = metrics.render().unwrap();
    let count = |op: &str| {
        crate::metrics::tests::value(
            &scrape,
            &format!("ivrd_recording_writer_op_seconds_count{{op=\"{op}\"}}"),
        )
    };
    assert_eq!(
        (count("create"), count("append"), count("close")),
        (Some(1.0), Some(3.0), Some(1.0))
    );
}

#[test]
fn summary_size_and_sha256_match_the_file() {
    let dir = ScratchDir::new("rec-sha");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let rec = record(&writer, &RecordingName::for_call("sha", DAY), 60);
    let summary = rec.finish_blocking().unwrap();
    let bytes = std::fs::read(&summary.path).unwrap();
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.bytes, 44 + 60 * 160 * 4);
    let digest = Sha256::digest(&bytes);
    let want: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(summary.sha256, want);
}

#[test]
fn message_recording_is_mono_caller_audio_and_finishes_async() {
    let dir = ScratchDir::new("rec-msg");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let name = RecordingName::for_message("call-2", DAY, 1);
    let mut rec = MessageRecorder::start(&writer, &name).unwrap();
    for f in 0..75 {
        rec.push(&caller_frame(f));
        writer.drain_blocking().unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let summary = rt.block_on(rec.finish()).unwrap();
    assert_eq!(summary.format, "wav/pcm_s16le/8000/1");
    assert_eq!(summary.duration_ms, 75 * 20);
    let (spec, samples) = read_all(&summary.path);
    assert_eq!(spec.channels, 1);
    assert_eq!(spec.sample_rate, 8000);
    let want: Vec<i16> = (0..75).flat_map(caller_frame).collect();
    assert_eq!(samples, want);
}

#[test]
fn part_file_is_a_valid_wav_after_a_flush_without_finish() {
    let dir = ScratchDir::new("rec-crash");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let name = RecordingName::for_call("crash", DAY);
    // 9 full blocks and a tail that never reaches the writer.
    let rec = record(&writer, &name, 9 * PER_BLOCK + 2);
    // A crash: the handle vanishes without finish and without the drop-time goodbye.
    std::mem::forget(rec);
    writer.drain_blocking().unwrap();

    let part = dir.0.join(name.relative_part());
    assert!(!dir.0.join(name.relative_wav()).exists());
    let (spec, samples) = read_all(&part);
    assert_eq!(spec.channels, 2);
    // The header is flushed once a second (50 frames) has been written since the last flush:
    // after block 5 (60 frames), not again by block 9 (108 frames, 48 since).
    let flushed = 5 * PER_BLOCK;
    assert_eq!(samples.len(), flushed as usize * FRAME_SAMPLES * 2);
    for f in 0..flushed {
        assert_stereo_frame(&samples, f, false);
    }
}

#[test]
fn dropped_recorder_leaves_a_complete_part_for_repair() {
    let dir = ScratchDir::new("rec-abandon");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let name = RecordingName::for_call("abandon", DAY);
    drop(record(&writer, &name, 30));
    writer.drain_blocking().unwrap();
    let (_, samples) = read_all(&dir.0.join(name.relative_part()));
    assert_eq!(samples.len(), 30 * FRAME_SAMPLES * 2);
    assert_eq!(writer.stats().recordings_abandoned, 1);
}

#[test]
fn full_queue_drops_and_counts_and_the_gap_becomes_silence() {
    let dir = ScratchDir::new("rec-full");
    // Room for the open and one block; the writer does not run yet, so nothing drains.
    let (writer, worker) = RecordingWriter::new(&dir.0, 2);
    let name = RecordingName::for_call("full", DAY);
    let mut rec = CallRecorder::start(&writer, &name).unwrap();
    // Block 0 fills the queue; blocks 1-4 find it full and are dropped; 10 frames wait.
    let pushed = 5 * PER_BLOCK + 10;
    let dropped = 4 * PER_BLOCK;
    for f in 0..pushed {
        rec.push_frame(&caller_frame(f), &ivrd_frame(f));
    }
    assert_eq!(rec.dropped_frames(), dropped);
    assert_eq!(writer.stats().frames_dropped, dropped);
    // The open and block 0 wait: the queue is full, as its gauge says.
    assert_eq!(writer.queue(), (2, 2));
    // A new recording is refused rather than queued behind a full writer.
    let other = CallRecorder::start(&writer, &RecordingName::for_call("other", DAY));
    assert!(matches!(other, Err(RecordingError::WriterBusy { .. })));

    let thread = std::thread::spawn(move || worker.run());
    writer.drain_blocking().unwrap();
    assert_eq!(
        writer.queue(),
        (0, 2),
        "the writer took everything, the barrier too"
    );
    // The recorder still works once the writer catches up.
    let total = pushed + 15;
    push_paced(&writer, &mut rec, pushed..total);
    let summary = rec.finish_blocking().unwrap();
    assert_eq!(summary.dropped_frames, dropped);
    assert_eq!(summary.duration_ms, total * 20);
    let (_, samples) = read_all(&summary.path);
    assert_eq!(samples.len(), total as usize * FRAME_SAMPLES * 2);
    for f in 0..total {
        assert_stereo_frame(&samples, f, (PER_BLOCK..PER_BLOCK + dropped).contains(&f));
    }
    drop(writer);
    thread.join().unwrap();
}

#[test]
fn an_existing_recording_is_never_overwritten() {
    let dir = ScratchDir::new("rec-exists");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let name = RecordingName::for_call("dup", DAY);
    let target = dir.0.join(name.relative_wav());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, b"earlier").unwrap();
    let err = record(&writer, &name, 10).finish_blocking().unwrap_err();
    assert!(matches!(&err, RecordingError::AlreadyExists { path } if *path == target));
    assert_eq!(std::fs::read(&target).unwrap(), b"earlier");
    assert_eq!(writer.stats().recordings_failed, 1);
}

#[test]
fn a_stopped_writer_refuses_new_recordings() {
    let dir = ScratchDir::new("rec-gone");
    let (writer, worker) = RecordingWriter::new(&dir.0, 4);
    drop(worker);
    let res = CallRecorder::start(&writer, &RecordingName::for_call("gone", DAY));
    assert!(matches!(res, Err(RecordingError::WriterGone { .. })));
}

#[test]
fn unwritable_storage_is_reported_at_finish() {
    let dir = ScratchDir::new("rec-unwritable");
    // A plain file where the recordings folder should be.
    std::fs::write(dir.0.join(RECORDINGS_DIR), b"not a folder").unwrap();
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let err = record(&writer, &RecordingName::for_call("x", DAY), 40)
        .finish_blocking()
        .unwrap_err();
    assert!(matches!(err, RecordingError::CreateDir { .. }), "{err}");
}

#[test]
fn call_ids_with_dots_keep_their_whole_stem_and_digest() {
    let date = RecordingDate::from_unix_seconds(1_795_706_043, 8 * 3600);
    let a = RecordingName::for_call("1-23077@127.0.0.1", date).relative_wav();
    let b = RecordingName::for_call("1-23077@127.0.0.2", date).relative_wav();
    assert_ne!(
        a, b,
        "call ids differing after the last dot must not share a file"
    );
    let name = a.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
    assert!(
        name.starts_with("1-23077@127.0.0.1-") && name.ends_with(".wav"),
        "{name}"
    );
    let part = RecordingName::for_call("1-23077@127.0.0.1", date).relative_part();
    assert_eq!(
        part.to_str().map(|p| p.trim_end_matches(".part")),
        a.to_str()
    );
}
