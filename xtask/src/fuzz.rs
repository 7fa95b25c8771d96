//! `cargo xtask fuzz`: coverage-guided fuzzing of the recording decoder and replay with
//! cargo-fuzz (libFuzzer), for a bounded time. Not part of `cargo xtask test`: it needs
//! nightly, builds everything with sanitizers, and is worth running for minutes, not seconds;
//! the proptest properties in memtrace/src/record/tests/fuzz.rs keep running in the tests.
//!
//! The seed corpus lives in fuzz/corpus/replay (small recordings, kept in the repository); what
//! libFuzzer finds goes to fuzz/target/corpus (ignored), so a run never grows the repository.
//! A crash is saved under fuzz/artifacts/replay, and the run fails.

use std::process::Command;

use anyhow::Result;

use crate::{cmd, workspace::Workspace};

/// The cargo-fuzz release installed when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Debug, clap::Args)]
pub struct FuzzOptions {
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
}

pub fn fuzz(workspace: &Workspace, options: &FuzzOptions) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace.root.join("fuzz");
    let working_corpus = fuzz_dir.join("target/corpus");
    std::fs::create_dir_all(&working_corpus)?;
    cmd::step(format!(
        "fuzzing the recording decoder and replay for {} s",
        options.seconds
    ));
    cmd::run(
        workspace
            .cargo()
            .args(["+nightly", "fuzz", "run", "replay"])
            .arg(&working_corpus)
            .arg(fuzz_dir.join("corpus/replay"))
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            // A replay of a few hundred KiB of input that takes seconds, or gigabytes, is a
            // finding in itself: the issue behind this target was a 9 MB recording taking 3 GB.
            .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=262144"])
            // memtrace's build script builds the eBPF programs; replay does not need them.
            .env("AYA_BUILD_SKIP", "1"),
    )
}

/// `cargo install cargo-fuzz` from crates.io, once.
fn ensure_cargo_fuzz() -> Result<()> {
    if cmd::probe(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        cmd::step("cargo-fuzz: already installed");
        return Ok(());
    }
    cmd::step(format!("installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
    cmd::run(Command::new("cargo").args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}
