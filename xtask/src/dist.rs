//! `cargo xtask dist`: the one file to copy to a server. A statically linked memtrace for
//! x86_64-unknown-linux-musl (the eBPF programs embedded, as in every build), stripped, with its
//! debug info kept beside it and a checksum:
//!
//! - `target/dist/memtrace`: what is shipped; static, so it starts on any x86_64 Linux
//!   userland, whatever its glibc (the glibc build needs GLIBC_2.34);
//! - `target/dist/memtrace.debug`: its DWARF, found through the binary's `.gnu_debuglink`, so
//!   a crash of the shipped binary can still be symbolized (`gdb`, `addr2line -e`);
//! - `target/dist/memtrace.sha256`: `sha256sum -c memtrace.sha256` checks the copy.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, workspace::Workspace};

/// musl links statically by default (`crt-static`), and memtrace's dependencies are pure Rust.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// The shipped file's size goal: it is copied to servers by hand.
const SIZE_GOAL_BYTES: u64 = 10 << 20;

/// What `cargo xtask dist` produced.
pub struct Dist {
    pub binary: PathBuf,
}

/// Builds the static binary; the caller has set up for [`crate::setup::Purpose::Dist`].
pub fn dist(workspace: &Workspace) -> Result<Dist> {
    ensure_target_installed()?;
    cmd::step(format!(
        "building the static memtrace ({TARGET}, release, with its eBPF programs)"
    ));
    cmd::run(workspace.cargo().args([
        "build",
        "--release",
        "--package",
        "memtrace",
        "--target",
        TARGET,
    ]))?;
    let built = workspace
        .target_dir
        .join(TARGET)
        .join("release")
        .join("memtrace");
    if !built.is_file() {
        bail!("the build succeeded but left no {}", built.display());
    }

    let dir = dist_dir(workspace);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Names relative to `dir`: the debuglink records a file name, and the checksum file names
    // the binary as `sha256sum -c` will find it next to itself.
    let debug_name = "memtrace.debug";
    cmd::step("splitting the debug info off and stripping the binary");
    cmd::run(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&built)
            .arg(dir.join(debug_name)),
    )?;
    cmd::run(
        Command::new("objcopy")
            .current_dir(&dir)
            .arg("--strip-all")
            .arg(format!("--add-gnu-debuglink={debug_name}"))
            .arg(&built)
            .arg("memtrace"),
    )?;
    let checksum = cmd::read_stdout(Command::new("sha256sum").current_dir(&dir).arg("memtrace"))?;
    fs::write(dir.join("memtrace.sha256"), checksum)
        .with_context(|| format!("writing {}", dir.join("memtrace.sha256").display()))?;

    let binary = dir.join("memtrace");
    check_static(&binary)?;
    let size = fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();
    cmd::step(format!(
        "{}: {:.1} MiB (goal: under {} MiB), debug info in {debug_name}",
        binary.display(),
        size as f64 / f64::from(1 << 20),
        SIZE_GOAL_BYTES >> 20
    ));
    if size >= SIZE_GOAL_BYTES {
        cmd::step("warning: the shipped binary is over its size goal");
    }
    Ok(Dist { binary })
}

/// Where `cargo xtask dist` leaves its files.
pub fn dist_dir(workspace: &Workspace) -> PathBuf {
    workspace.target_dir.join("dist")
}

fn ensure_target_installed() -> Result<()> {
    let installed =
        cmd::read_stdout(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == TARGET) {
        cmd::step(format!("rust target {TARGET}: already installed"));
        return Ok(());
    }
    cmd::step(format!("adding the rust target {TARGET}"));
    cmd::run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// A static binary has no program interpreter (PT_INTERP); a static-pie has a PT_DYNAMIC for
/// its own relocations but still no interpreter and no needed libraries. Checked on the file
/// itself rather than trusted from the target's defaults.
fn check_static(binary: &Path) -> Result<()> {
    let headers = cmd::read_stdout(
        Command::new("readelf")
            .args(["--program-headers", "--dynamic"])
            .arg(binary),
    )?;
    if headers.contains("INTERP") || headers.contains("(NEEDED)") {
        bail!(
            "{} is not statically linked (it has a program interpreter or needed libraries)",
            binary.display()
        );
    }
    Ok(())
}
