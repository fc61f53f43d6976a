//! The dialplan in service, with the prompts it plays, and their hot reload: a valid plan (and
//! prompt set) replaces the old one for new calls only — each call holds the [`Serving`] it
//! started with — while an invalid one is refused with the reason and the old one keeps serving.

use crate::dialplan::{DialplanError, LoadedPlan, load_file};
use crate::media::prompt::{PromptError, PromptLibrary};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a plan could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum PlanLoadError {
    #[error("{0}")]
    Dialplan(#[from] DialplanError),
    #[error("{0}")]
    Prompts(#[from] PromptError),
}

impl PlanLoadError {
    /// The reason on one line, for a log line.
    pub fn one_line(&self) -> String {
        match self {
            PlanLoadError::Dialplan(e) => e.one_line(),
            PlanLoadError::Prompts(e) => e.to_string(),
        }
    }
}

/// A plan and the prompts loaded with it.
#[derive(Debug)]
pub struct Serving {
    pub plan: Arc<LoadedPlan>,
    pub prompts: Arc<PromptLibrary>,
}

/// Where the plan comes from and the version serving now.
#[derive(Debug)]
pub struct PlanStore {
    path: PathBuf,
    prompts_dir: PathBuf,
    current: RwLock<Arc<Serving>>,
}

impl PlanStore {
    /// Loads the plan and its prompts; a daemon must not start on a plan that does not validate.
    pub fn load(path: &Path, prompts_dir: &Path) -> Result<PlanStore, PlanLoadError> {
        let serving = Self::read(path, prompts_dir)?;
        Ok(PlanStore {
            path: path.into(),
            prompts_dir: prompts_dir.into(),
            current: RwLock::new(Arc::new(serving)),
        })
    }

    fn read(path: &Path, prompts_dir: &Path) -> Result<Serving, PlanLoadError> {
        let plan = Arc::new(load_file(path, prompts_dir)?);
        let prompts = Arc::new(PromptLibrary::load_dir(prompts_dir)?);
        Ok(Serving { plan, prompts })
    }

    /// What new calls start on.
    pub fn current(&self) -> Arc<Serving> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the plan and prompts (blocking file IO: run it off the SIP loop). On success new
    /// calls use them; on failure nothing changes.
    pub fn reload(&self) -> Result<Arc<Serving>, PlanLoadError> {
        let serving = Arc::new(Self::read(&self.path, &self.prompts_dir)?);
        match self.current.write() {
            Ok(mut guard) => *guard = serving.clone(),
            Err(poisoned) => *poisoned.into_inner() = serving.clone(),
        }
        Ok(serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan directory copy with its own prompts, so the test can change both.
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }

    #[test]
    fn reload_swaps_plan_and_prompts_for_new_calls_and_refuses_bad_prompts() {
        let dir = std::env::temp_dir().join(format!(
            "ivrd-plans-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        copy_tree(Path::new("dialplans"), &dir.join("dialplans"));
        copy_tree(Path::new("prompts"), &dir.join("prompts"));
        let (plan, prompts) = (dir.join("dialplans/12345.toml"), dir.join("prompts"));
        let store = PlanStore::load(&plan, &prompts).expect("shipped plan loads");
        let before = store.current();
        // A new prompt file appears: the reload picks it up with the plan.
        let extra = crate::media::prompt::Prompt::beep();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w =
            hound::WavWriter::create(prompts.join("zh-CN/new_notice.wav"), spec).expect("wav");
        for _ in 0..extra.frame_count() * 160 {
            w.write_sample(0i16).expect("sample");
        }
        w.finalize().expect("finalize");
        let after = store.reload().expect("reload");
        let id = crate::media::prompt::PromptId::new("zh-CN/new_notice").expect("id");
        assert!(after.prompts.get(&id).is_some(), "new prompt loaded");
        assert!(
            before.prompts.get(&id).is_none(),
            "a running call keeps what it started with"
        );
        // A prompt in the wrong format refuses the reload; the last good set keeps serving.
        let stereo = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            ..spec
        };
        let mut w = hound::WavWriter::create(prompts.join("zh-CN/bad.wav"), stereo).expect("wav");
        w.write_sample(0i16).expect("sample");
        w.write_sample(0i16).expect("sample");
        w.finalize().expect("finalize");
        let err = store.reload().expect_err("bad prompt");
        assert!(err.one_line().contains("bad.wav"), "{}", err.one_line());
        assert!(Arc::ptr_eq(&store.current(), &after));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
