//! Where things are: the repository root and cargo's target directory.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::cmd;

pub struct Workspace {
    pub root: PathBuf,
    /// Cargo's target directory as cargo itself resolves it (honouring `CARGO_TARGET_DIR` and
    /// config), so the binary we run is the one `cargo build` just wrote.
    pub target_dir: PathBuf,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        // xtask lives at <root>/xtask, and is always run from this checkout.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        let metadata = cmd::read_stdout(
            Command::new("cargo")
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .current_dir(&root),
        )
        .context("asking cargo for the workspace's target directory")?;
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).context("parsing `cargo metadata` output")?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .context("`cargo metadata` output has no target_directory")?
            .into();
        Ok(Self { root, target_dir })
    }

    /// A `cargo` command run from the repository root.
    pub fn cargo(&self) -> Command {
        let mut command = Command::new("cargo");
        command.current_dir(&self.root);
        command
    }

    /// The userspace binary `cargo xtask build` produces.
    pub fn memtrace_binary(&self) -> PathBuf {
        self.target_dir.join("release").join("memtrace")
    }

    /// Scratch space for xtask's own outputs (the LLVM prefix, the benchmark's workload).
    pub fn xtask_dir(&self) -> PathBuf {
        self.target_dir.join("xtask")
    }
}
