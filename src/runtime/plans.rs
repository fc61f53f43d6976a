//! The dialplan in service and its hot reload: a valid plan replaces the old one for new calls
//! only (each call holds the `Arc` it started with); an invalid plan is refused with the reason
//! and the old one keeps serving.

use crate::dialplan::{DialplanError, LoadedPlan, load_file};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where the plan comes from and the version serving now.
#[derive(Debug)]
pub struct PlanStore {
    path: PathBuf,
    prompts_dir: PathBuf,
    current: RwLock<Arc<LoadedPlan>>,
}

impl PlanStore {
    /// Loads the plan; a daemon must not start on a plan that does not validate.
    pub fn load(path: &Path, prompts_dir: &Path) -> Result<PlanStore, DialplanError> {
        let plan = load_file(path, prompts_dir)?;
        Ok(PlanStore {
            path: path.into(),
            prompts_dir: prompts_dir.into(),
            current: RwLock::new(Arc::new(plan)),
        })
    }

    /// The plan new calls start on.
    pub fn current(&self) -> Arc<LoadedPlan> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the plan file. On success new calls use it; on failure nothing changes.
    pub fn reload(&self) -> Result<Arc<LoadedPlan>, DialplanError> {
        let plan = Arc::new(load_file(&self.path, &self.prompts_dir)?);
        match self.current.write() {
            Ok(mut guard) => *guard = plan.clone(),
            Err(poisoned) => *poisoned.into_inner() = plan.clone(),
        }
        Ok(plan)
    }
}
