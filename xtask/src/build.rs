//! `cargo xtask build`: build the release binary (memtrace/build.rs builds the eBPF programs it
//! embeds). Each command sets up what it needs first (setup.rs), the build's needs among them.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::{cmd, workspace::Workspace};

/// Builds target/release/memtrace and returns its path.
pub fn build(workspace: &Workspace) -> Result<PathBuf> {
    cmd::step("building memtrace (release, with its eBPF programs)");
    cmd::run(
        workspace
            .cargo()
            .args(["build", "--release", "--package", "memtrace"]),
    )?;
    let binary = workspace.memtrace_binary();
    if !binary.is_file() {
        bail!("the build succeeded but left no {}", binary.display());
    }
    Ok(binary)
}
