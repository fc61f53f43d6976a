//! Dialplan loading: arbitrary text → `load_str`; it must return a plan or an error, never panic.
//! Data files (taxonomy, holidays) read through the context come from the repository's real ones
//! where the plan names them, and every prompt exists, so fuzzed plans reach the deep checks.

#![no_main]

use ivrd::dialplan::load::{LoadContext, PromptCatalog, load_str};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::time::Duration;

const TAXONOMY: &str = include_str!("../../dialplans/taxonomy/hainan-12345.toml");
const HOLIDAYS: &str = include_str!("../../dialplans/holidays/cn-2026.toml");

/// Every prompt exists and lasts 3 s, so validation goes past the prompt checks.
struct AnyPrompt;

impl PromptCatalog for AnyPrompt {
    fn duration(&self, _language: &str, _prompt: &str) -> Option<Duration> {
        Some(Duration::from_secs(3))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let read = |p: &Path| -> std::io::Result<String> {
        let p = p.to_string_lossy();
        if p.contains("taxonomy") {
            Ok(TAXONOMY.to_string())
        } else if p.contains("holidays") {
            Ok(HOLIDAYS.to_string())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    };
    let cx = LoadContext {
        read: &read,
        prompts: &AnyPrompt,
    };
    let _ = load_str(Path::new("dialplans/fuzz.toml"), src, &cx);
});
