//! Starting the traced command so that nothing it does escapes the trace.
//!
//! memtrace re-runs itself as a small gate process (`memtrace __exec-gate -- CMD ...`). The gate
//! stops itself with SIGSTOP; memtrace adds the gate's pid to the traced set and continues it;
//! the gate then drops to the invoking user (under sudo, like `strace -u`) and execs CMD. The
//! trace therefore starts at CMD's own execve, with the same pid throughout.

use std::{
    ffi::{CString, OsStr, OsString},
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command},
};

use nix::{
    sys::{
        signal::{kill, raise, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{access, initgroups, setgid, setuid, AccessFlags, Gid, Pid, Uid},
};

/// The hidden first argument that turns memtrace into the gate.
pub const GATE_ARGUMENT: &str = "__exec-gate";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("starting {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("waiting for the command to be ready: {0}")]
    Wait(nix::Error),
    #[error("the command exited before it could be traced ({0:?})")]
    EarlyExit(WaitStatus),
    #[error("resuming the command: {0}")]
    Resume(nix::Error),
}

/// A command stopped at the gate, ready to be traced.
pub struct GatedCommand {
    pub child: Child,
    pub pid: u32,
}

impl GatedCommand {
    /// Starts the gate for `command` and waits until it has stopped itself.
    pub fn spawn(command: &[OsString]) -> Result<Self, LaunchError> {
        let me =
            std::env::current_exe().map_err(|e| LaunchError::Spawn("memtrace itself".into(), e))?;
        let child = Command::new(me)
            .arg(GATE_ARGUMENT)
            .arg("--")
            .args(command)
            .spawn()
            .map_err(|e| LaunchError::Spawn(describe(command), e))?;
        let pid = child.id();
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(_, _)) => Ok(Self { child, pid }),
            Ok(other) => Err(LaunchError::EarlyExit(other)),
            Err(error) => Err(LaunchError::Wait(error)),
        }
    }

    /// Lets the gate exec the command. Call once the pid is traced.
    pub fn release(&self) -> Result<(), LaunchError> {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGCONT).map_err(LaunchError::Resume)
    }
}

fn describe(command: &[OsString]) -> String {
    command
        .first()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The gate's whole life: stop, drop privileges, become the command. Returns only on failure,
/// with the exit code to use (127, like a shell that cannot run a command).
pub fn run_gate(command: &[OsString]) -> i32 {
    let Some((program, arguments)) = command.split_first() else {
        eprintln!("memtrace: no command to run");
        return 127;
    };
    if let Err(error) = raise(Signal::SIGSTOP) {
        eprintln!("memtrace: gate could not stop itself: {error}");
        return 127;
    }
    if let Err(error) = drop_to_invoking_user() {
        eprintln!("memtrace: cannot switch to the invoking user: {error}");
        return 127;
    }
    // One execve, of the file a PATH search finds: a search by execvp would try every PATH
    // directory with an execve of its own, and the report would count those failures as the
    // command's (`memtrace -- true` showed 9 execve calls, 8 failed; strace shows 1).
    let error = Command::new(resolve_in_path(program))
        .arg0(program)
        .args(arguments)
        .exec();
    eprintln!(
        "memtrace: cannot run {}: {error}",
        program.to_string_lossy()
    );
    127
}

/// Where execvp would find `program`: itself when it names a path, else the first executable
/// regular file called that in a PATH directory. Hand-written because it must match execvp's
/// rules (an empty PATH entry is the current directory; without PATH, glibc's default) and
/// use only calls the trace does not count (access, not execve). When nothing executable is
/// found, the name is returned as given, and exec fails as a shell would.
fn resolve_in_path(program: &OsStr) -> PathBuf {
    if program.as_bytes().contains(&b'/') || program.is_empty() {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&path)
        .map(|directory| {
            if directory.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                directory.join(program)
            }
        })
        .find(|candidate| {
            candidate.metadata().is_ok_and(|meta| meta.is_file())
                && access(candidate.as_path(), AccessFlags::X_OK).is_ok()
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Under sudo, run the command as the user who ran sudo, with that user's groups.
fn drop_to_invoking_user() -> nix::Result<()> {
    let id = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) else {
        return Ok(());
    };
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let gid = Gid::from_raw(gid);
    if let Some(user) = std::env::var("SUDO_USER")
        .ok()
        .and_then(|u| CString::new(u).ok())
    {
        initgroups(&user, gid)?;
    }
    setgid(gid)?;
    setuid(Uid::from_raw(uid))
}
