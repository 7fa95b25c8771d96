//! memtrace loads BPF programs, which needs root (CAP_BPF + CAP_PERFMON); this decides how to
//! start it from an unprivileged xtask.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

pub fn is_root() -> Result<bool> {
    Ok(effective_uid()? == 0)
}

/// The effective uid, from `/proc/self/status` ("Uid: real effective saved filesystem"), which
/// avoids a libc dependency for one call.
fn effective_uid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .context("/proc/self/status has no Uid line")?;
    let effective = uids
        .split_whitespace()
        .nth(1)
        .context("/proc/self/status has a short Uid line")?;
    effective
        .parse()
        .with_context(|| format!("parsing effective uid {effective:?}"))
}

/// A command that runs `program` as root: directly when we are root, through `sudo -E` when sudo
/// is installed (keeping the environment, e.g. RUST_LOG), and an error otherwise.
pub fn root_command(program: &Path) -> Result<Command> {
    if is_root()? {
        return Ok(Command::new(program));
    }
    let Some(sudo) = find_in_path("sudo") else {
        bail!(
            "memtrace needs root (CAP_BPF + CAP_PERFMON) and sudo is not installed: run this as root"
        );
    };
    let mut command = Command::new(sudo);
    command.arg("-E").arg(program);
    Ok(command)
}

pub fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}
