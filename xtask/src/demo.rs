//! The built-in demo: `cargo xtask run` with no arguments traces tests/programs/demo.c, which
//! replays the three incidents of shared/docs/scenarios.md in miniature, so a newcomer sees
//! every finding memtrace makes in one report.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{cmd, workspace::Workspace};

/// The demo's programs: (source in tests/programs, binary name, extra gcc flags).
const PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("demo", "demo", &[]),
    ("doublemapper", "doublemapper", &[]),
    ("bigalloc", "bigalloc", &[]),
    ("brk_starve", "brk_starve", &[]),
    // A 32-bit parent starting a 64-bit child (sshd -> bash).
    ("exec_child", "exec_child32", &["-m32"]),
    (
        "counts",
        "counts",
        &[
            "-static",
            "-nostdlib",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
        ],
    ),
];

/// Builds the demo programs and returns memtrace's arguments to trace them.
pub fn prepare(workspace: &Workspace) -> Result<Vec<OsString>> {
    let dir = workspace.xtask_dir().join("demo");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    cmd::step("compiling the demo workload (tests/programs/demo.c and the scenarios it runs)");
    for (source, binary, flags) in PROGRAMS {
        compile(
            &workspace.root.join("tests/programs"),
            source,
            &dir.join(binary),
            flags,
        )?;
    }
    Ok(vec![
        "--follow".into(),
        "--".into(),
        dir.join("demo").into_os_string(),
        dir.into_os_string(),
    ])
}

fn compile(sources: &Path, source: &str, binary: &PathBuf, flags: &[&str]) -> Result<()> {
    cmd::run(
        Command::new("gcc")
            .args(["-O1", "-g", "-Wall"])
            .args(flags)
            .arg("-o")
            .arg(binary)
            .arg(sources.join(format!("{source}.c"))),
    )
}
