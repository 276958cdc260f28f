//! Build script: the git revision for `account_sync_build_info{revision}`.
//!
//! `ACCOUNT_SYNC_GIT_SHA` in the build environment wins (container builds without `.git`);
//! otherwise `git rev-parse`; otherwise "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=ACCOUNT_SYNC_GIT_SHA");
    let sha = std::env::var("ACCOUNT_SYNC_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuild when HEAD moves (checkout) or the branch it points to moves (commit). Only paths
    // that exist: a missing one would make Cargo rerun this script on every build.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        let head = dir.join("HEAD");
        let branch = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| dir.join(r.trim())));
        for path in [Some(head), branch, Some(dir.join("packed-refs"))]
            .into_iter()
            .flatten()
            .filter(|p| p.exists())
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rustc-env=ACCOUNT_SYNC_GIT_SHA={sha}");
}
