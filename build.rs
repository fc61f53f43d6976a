//! Build script: stamps the git commit into the binary for `ivrd_build_info`.
//!
//! It only asks the local `git` (no network). Outside a checkout, or without git, the sha is
//! "unknown"; packagers building from a tarball can set `IVRD_GIT_SHA` themselves.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=IVRD_GIT_SHA");
    let sha = std::env::var("IVRD_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=IVRD_GIT_SHA={}", sha.trim());
    watch_head();
}

/// Re-run when HEAD moves, so the stamped sha follows commits (worktrees keep HEAD apart from refs).
fn watch_head() {
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"])
            .and_then(|name| git(&["rev-parse", "--git-path", name.trim()])),
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    {
        // A path that does not exist would make cargo re-run this script on every build.
        if !std::path::Path::new(path.trim()).exists() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.trim());
    }
}

/// The trimmed stdout of a successful git command; `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
