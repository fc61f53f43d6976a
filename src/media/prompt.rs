//! Prompts: WAV files loaded once at start-up (and on reload) and pre-encoded into 20 ms G.711
//! frames for both codecs, so playing a prompt costs a slice copy per frame.
//!
//! Sits between the prompt directory and the 20 ms pacer: `runtime` calls
//! [`PromptLibrary::load_dir`] once and shares the library; the dialplan names prompts by
//! [`PromptId`]; the pacer sends [`Prompt::frame`] for the call's codec. The recorder gets ivrd's
//! side by decoding the frame it sent with [`Codec::decode`](super::g711::Codec::decode): that is
//! exactly what the caller heard, quantisation included, and it saves keeping the linear samples
//! (half the memory). This is the only media module that touches the file system.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

use super::g711::{Codec, FRAME_SAMPLES};

/// Sample rate every prompt must have: G.711's 8 kHz, so nothing is resampled.
pub const PROMPT_SAMPLE_RATE: u32 = 8000;

/// Why the prompt directory could not be loaded; every variant names the file at fault.
#[derive(Debug, Error)]
pub enum PromptError {
    /// A directory could not be listed.
    #[error("cannot read prompt directory {}: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: io::Error },
    /// A file is not a readable WAV file.
    #[error("cannot read prompt {}: {source}", file.display())]
    Wav { file: PathBuf, source: hound::Error },
    /// A WAV file is not 8000 Hz, mono, 16-bit integer PCM.
    #[error("prompt {} is {found}; prompts must be 8000 Hz, 1 ch, 16-bit", file.display())]
    Format { file: PathBuf, found: WavFormat },
    /// A WAV file holds no samples.
    #[error("prompt {} has no audio", file.display())]
    Empty { file: PathBuf },
    /// A path below the prompt directory is not UTF-8, so it cannot be a prompt id.
    #[error("prompt path {} is not valid UTF-8", file.display())]
    NonUtf8Path { file: PathBuf },
    /// A prompt id is empty, absolute, or has empty, `.` or `..` segments.
    #[error("invalid prompt id {id:?}")]
    BadId { id: String },
}

/// The format found in a WAV header, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Bits per sample.
    pub bits_per_sample: u16,
    /// IEEE float rather than integer samples.
    pub float: bool,
}

impl fmt::Display for WavFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Hz, {} ch, {}-bit",
            self.sample_rate, self.channels, self.bits_per_sample
        )?;
        if self.float {
            write!(f, " float")?;
        }
        Ok(())
    }
}

/// The name of a prompt: its path below the prompt directory without the extension, with `/`
/// separators on every platform (`zh-CN/welcome`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptId(String);

impl PromptId {
    /// The built-in 1 kHz, 200 ms beep played before recording a message.
    pub const BEEP: &'static str = "builtin/beep";
    /// The built-in second of silence, for pauses in a dialplan.
    pub const SILENCE: &'static str = "builtin/silence";

    /// Validates an id: non-empty `/`-separated segments, none of them `.` or `..`.
    pub fn new(id: &str) -> Result<PromptId, PromptError> {
        let valid = !id.is_empty()
            && !id.contains('\\')
            && id
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if !valid {
            return Err(PromptError::BadId { id: id.to_owned() });
        }
        Ok(PromptId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PromptId {
    type Err = PromptError;

    fn from_str(s: &str) -> Result<PromptId, PromptError> {
        PromptId::new(s)
    }
}

/// One prompt, pre-encoded into 160-byte frames for each codec; the last frame is padded with
/// the codec's silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    id: PromptId,
    samples: usize,
    pcmu: Vec<[u8; FRAME_SAMPLES]>,
    pcma: Vec<[u8; FRAME_SAMPLES]>,
}

impl Prompt {
    /// Encodes 8 kHz linear samples for both codecs; used by the loader, the built-ins and tests.
    pub fn from_samples(id: PromptId, samples: &[i16]) -> Prompt {
        Prompt {
            id,
            samples: samples.len(),
            pcmu: encode_frames(Codec::Pcmu, samples),
            pcma: encode_frames(Codec::Pcma, samples),
        }
    }

    /// A 1 kHz tone of 200 ms at about −12 dBFS with 5 ms ramps (no clicks); the cue before a
    /// recorded message.
    pub fn beep() -> Prompt {
        const LEN: usize = 1600;
        const RAMP: usize = 40;
        let samples: Vec<i16> = (0..LEN)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0;
                let ramp = (n.min(LEN - 1 - n) as f64 / RAMP as f64).min(1.0);
                (phase.sin() * ramp * 8192.0).round() as i16
            })
            .collect();
        Prompt::from_samples(PromptId(PromptId::BEEP.to_owned()), &samples)
    }

    /// One second of silence.
    pub fn silence() -> Prompt {
        let samples = [0i16; PROMPT_SAMPLE_RATE as usize];
        Prompt::from_samples(PromptId(PromptId::SILENCE.to_owned()), &samples)
    }

    /// The prompt's id.
    pub fn id(&self) -> &PromptId {
        &self.id
    }

    /// Length of the audio in milliseconds, before padding to whole frames.
    pub fn duration_ms(&self) -> u64 {
        self.samples as u64 * 1000 / u64::from(PROMPT_SAMPLE_RATE)
    }

    /// Number of 20 ms frames, the padded last one included.
    pub fn frame_count(&self) -> usize {
        self.pcmu.len()
    }

    /// Frame `index` encoded for `codec`, or `None` past the end.
    pub fn frame(&self, codec: Codec, index: usize) -> Option<&[u8; FRAME_SAMPLES]> {
        self.encoded(codec).get(index)
    }

    /// All frames for `codec`, in order.
    pub fn frames(&self, codec: Codec) -> impl ExactSizeIterator<Item = &[u8; FRAME_SAMPLES]> {
        self.encoded(codec).iter()
    }

    fn encoded(&self, codec: Codec) -> &[[u8; FRAME_SAMPLES]] {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }
}

fn encode_frames(codec: Codec, samples: &[i16]) -> Vec<[u8; FRAME_SAMPLES]> {
    samples
        .chunks(FRAME_SAMPLES)
        .map(|chunk| {
            let mut frame = [codec.silence_byte(); FRAME_SAMPLES];
            codec.encode(chunk, &mut frame);
            frame
        })
        .collect()
}

/// Every prompt ivrd can play, by id; built once and shared read-only between calls.
#[derive(Debug, Clone, Default)]
pub struct PromptLibrary {
    prompts: HashMap<PromptId, Arc<Prompt>>,
}

impl PromptLibrary {
    /// A library holding only the built-ins (`builtin/beep`, `builtin/silence`).
    pub fn with_builtins() -> PromptLibrary {
        let mut library = PromptLibrary::default();
        library.insert(Prompt::beep());
        library.insert(Prompt::silence());
        library
    }

    /// Loads every `.wav` file below `dir` (recursively, in sorted order, not following
    /// symlinked directories) on top of the built-ins; a file may replace a built-in. Fails on the
    /// first file that is unreadable or not 8000 Hz mono 16-bit, naming it.
    pub fn load_dir(dir: &Path) -> Result<PromptLibrary, PromptError> {
        let mut files = Vec::new();
        collect_wavs(dir, &mut files)?;
        let mut library = PromptLibrary::with_builtins();
        for file in files {
            let id = id_for(dir, &file)?;
            let samples = read_wav(&file)?;
            library.insert(Prompt::from_samples(id, &samples));
        }
        Ok(library)
    }

    /// Adds or replaces a prompt.
    pub fn insert(&mut self, prompt: Prompt) {
        self.prompts.insert(prompt.id.clone(), Arc::new(prompt));
    }

    /// The prompt with this id.
    pub fn get(&self, id: &PromptId) -> Option<&Arc<Prompt>> {
        self.prompts.get(id)
    }

    /// Number of prompts, built-ins included.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// True when the library holds no prompt at all.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// All ids, sorted, for diagnostics and dialplan validation.
    pub fn ids(&self) -> Vec<&PromptId> {
        let mut ids: Vec<_> = self.prompts.keys().collect();
        ids.sort();
        ids
    }
}

fn collect_wavs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PromptError> {
    let read_err = |source| PromptError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_dir() {
            collect_wavs(&path, out)?;
            continue;
        }
        let is_wav = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        // A symlink to a file counts; one to a directory is not followed (no loops).
        let is_file = file_type.is_file() || (file_type.is_symlink() && path.is_file());
        if is_wav && is_file {
            out.push(path);
        }
    }
    Ok(())
}

fn id_for(root: &Path, file: &Path) -> Result<PromptId, PromptError> {
    let non_utf8 = || PromptError::NonUtf8Path {
        file: file.to_path_buf(),
    };
    let relative = file.strip_prefix(root).unwrap_or(file).with_extension("");
    let mut id = String::new();
    for part in relative.components() {
        if !id.is_empty() {
            id.push('/');
        }
        id.push_str(part.as_os_str().to_str().ok_or_else(non_utf8)?);
    }
    PromptId::new(&id)
}

fn read_wav(file: &Path) -> Result<Vec<i16>, PromptError> {
    let wav_err = |source| PromptError::Wav {
        file: file.to_path_buf(),
        source,
    };
    let mut reader = hound::WavReader::open(file).map_err(wav_err)?;
    let spec = reader.spec();
    let float = spec.sample_format == hound::SampleFormat::Float;
    if spec.sample_rate != PROMPT_SAMPLE_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || float
    {
        return Err(PromptError::Format {
            file: file.to_path_buf(),
            found: WavFormat {
                sample_rate: spec.sample_rate,
                channels: spec.channels,
                bits_per_sample: spec.bits_per_sample,
                float,
            },
        });
    }
    let samples = reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(wav_err)?;
    if samples.is_empty() {
        return Err(PromptError::Empty {
            file: file.to_path_buf(),
        });
    }
    Ok(samples)
}

#[cfg(test)]
#[path = "prompt_tests.rs"]
mod tests;
