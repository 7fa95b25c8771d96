//! `cargo xtask build`: set up, then build the release binary (memtrace/build.rs builds the eBPF
//! programs it embeds).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::{cmd, setup, workspace::Workspace};

/// Builds target/release/memtrace and returns its path.
pub fn build(workspace: &Workspace) -> Result<PathBuf> {
    setup::setup(workspace)?;
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
