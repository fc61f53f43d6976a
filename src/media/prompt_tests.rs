use super::*;
use crate::media::g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("ivrd-prompt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[i16]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
}

fn spec(sample_rate: u32, channels: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

fn ramp(n: usize) -> Vec<i16> {
    (0..n).map(|i| (i as i32 * 97 - 16000) as i16).collect()
}

#[test]
fn loads_nested_wavs_with_slash_ids_and_padded_frames() {
    let dir = TempDir::new("nested");
    let welcome = ramp(330);
    write_wav(&dir.0.join("zh-CN/welcome.wav"), spec(8000, 1), &welcome);
    write_wav(&dir.0.join("en/menu/main.WAV"), spec(8000, 1), &ramp(160));
    std::fs::write(dir.0.join("README.txt"), "not audio").unwrap();

    let library = PromptLibrary::load_dir(&dir.0).unwrap();
    let ids: Vec<&str> = library.ids().iter().map(|id| id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "builtin/beep",
            "builtin/silence",
            "en/menu/main",
            "zh-CN/welcome"
        ]
    );

    let prompt = library
        .get(&PromptId::new("zh-CN/welcome").unwrap())
        .unwrap();
    assert_eq!(
        prompt.frame_count(),
        3,
        "330 samples is two frames and a bit"
    );
    assert_eq!(prompt.duration_ms(), 41);
    let last = prompt.frame(Codec::Pcma, 2).unwrap();
    assert_eq!(last[9], linear_to_alaw(welcome[329]));
    assert!(
        last[10..].iter().all(|&b| b == 0xD5),
        "padded with A-law silence"
    );
    let first_u = prompt.frame(Codec::Pcmu, 0).unwrap();
    for (i, &b) in first_u.iter().enumerate() {
        assert_eq!(b, linear_to_ulaw(welcome[i]));
    }
    let last_u = prompt.frames(Codec::Pcmu).last().unwrap();
    assert!(
        last_u[10..].iter().all(|&b| b == 0xFF),
        "padded with µ-law silence"
    );
    assert!(prompt.frame(Codec::Pcmu, 3).is_none());
}

#[test]
fn refuses_a_cd_quality_file_and_says_what_it_found() {
    let dir = TempDir::new("cd");
    write_wav(&dir.0.join("ok.wav"), spec(8000, 1), &ramp(10));
    write_wav(&dir.0.join("music.wav"), spec(44100, 2), &ramp(100));
    let err = PromptLibrary::load_dir(&dir.0).unwrap_err();
    match &err {
        PromptError::Format { file, found } => {
            assert!(file.ends_with("music.wav"));
            assert_eq!(found.to_string(), "44100 Hz, 2 ch, 16-bit");
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("music.wav"), "{message}");
    assert!(message.contains("44100 Hz, 2 ch, 16-bit"), "{message}");
}

#[test]
fn refuses_float_and_empty_files() {
    let dir = TempDir::new("float");
    let float = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(dir.0.join("f.wav"), float).unwrap();
    writer.write_sample(0.5f32).unwrap();
    writer.finalize().unwrap();
    let err = PromptLibrary::load_dir(&dir.0).unwrap_err();
    assert!(
        err.to_string().contains("8000 Hz, 1 ch, 32-bit float"),
        "{err}"
    );

    let dir = TempDir::new("empty");
    write_wav(&dir.0.join("e.wav"), spec(8000, 1), &[]);
    assert!(matches!(
        PromptLibrary::load_dir(&dir.0),
        Err(PromptError::Empty { .. })
    ));
}

#[test]
fn missing_directory_and_garbage_files_are_named() {
    let dir = TempDir::new("garbage");
    let missing = dir.0.join("nope");
    match PromptLibrary::load_dir(&missing) {
        Err(PromptError::ReadDir { dir, .. }) => assert_eq!(dir, missing),
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.0.join("bad.wav"), b"RIFF nonsense").unwrap();
    match PromptLibrary::load_dir(&dir.0) {
        Err(PromptError::Wav { file, .. }) => assert!(file.ends_with("bad.wav")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_can_replace_a_builtin() {
    let dir = TempDir::new("override");
    write_wav(&dir.0.join("builtin/beep.wav"), spec(8000, 1), &ramp(800));
    let library = PromptLibrary::load_dir(&dir.0).unwrap();
    let beep = library
        .get(&PromptId::new(PromptId::BEEP).unwrap())
        .unwrap();
    assert_eq!(beep.duration_ms(), 100);
}

#[test]
fn builtin_beep_is_a_200_ms_1khz_tone() {
    let library = PromptLibrary::with_builtins();
    let beep = library
        .get(&PromptId::new("builtin/beep").unwrap())
        .unwrap();
    assert_eq!(beep.duration_ms(), 200);
    assert_eq!(beep.frame_count(), 10);
    let mut pcm = Vec::new();
    for frame in beep.frames(Codec::Pcma) {
        pcm.extend(frame.iter().map(|&b| alaw_to_linear(b)));
    }
    // A 1 kHz sine crosses zero twice per cycle: 400 times in 200 ms.
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!((390..=410).contains(&crossings), "{crossings}");
    let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!((7000..=9000).contains(&peak), "{peak}");
    assert!(pcm[0].abs() < 100, "ramped in");

    let silence = library
        .get(&PromptId::new("builtin/silence").unwrap())
        .unwrap();
    assert_eq!(silence.duration_ms(), 1000);
    assert!(
        silence
            .frames(Codec::Pcmu)
            .all(|f| f.iter().all(|&b| b == 0xFF))
    );
}

#[test]
fn prompt_ids_are_validated() {
    assert!(PromptId::new("zh-CN/welcome").is_ok());
    for bad in ["", "/abs", "a//b", "a/../b", "./a", "a\\b", "a/"] {
        assert!(PromptId::new(bad).is_err(), "{bad:?}");
    }
    let id: PromptId = "en/menu".parse().unwrap();
    assert_eq!(id.to_string(), "en/menu");
}
