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
    #[error(
        "sudo's environment is inconsistent ({0}): refusing to guess which user runs the command"
    )]
    SudoEnvironment(String),
    #[error("cannot switch to the invoking user: {0}")]
    SwitchUser(nix::Error),
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
        eprintln!("memtrace: {error}");
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

/// The user who ran `sudo memtrace`, whom the command runs as.
pub struct InvokingUser {
    pub uid: Uid,
    pub gid: Gid,
    /// For the supplementary groups (`initgroups`).
    pub name: CString,
}

/// Who the traced command runs as: under sudo, the user who ran sudo, told by `SUDO_UID`,
/// `SUDO_GID` and `SUDO_USER`; without any of them (or when memtrace is not root and cannot
/// switch anyway), memtrace's own user. Only some of them, or a malformed one, is refused:
/// guessing would run the command as root, or with root's groups.
pub fn invoking_user() -> Result<Option<InvokingUser>, LaunchError> {
    let variables = ["SUDO_UID", "SUDO_GID", "SUDO_USER"].map(std::env::var_os);
    if !Uid::effective().is_root() || variables.iter().all(Option::is_none) {
        return Ok(None);
    }
    let refuse = |reason: String| Err(LaunchError::SudoEnvironment(reason));
    let [Some(uid), Some(gid), Some(name)] = variables else {
        let missing: Vec<&str> = ["SUDO_UID", "SUDO_GID", "SUDO_USER"]
            .into_iter()
            .zip(&variables)
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name)
            .collect();
        return refuse(format!("{} not set", missing.join(" and ")));
    };
    let number = |name: &str, value: &std::ffi::OsStr| {
        value
            .to_str()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("{name}={} is not a number", value.to_string_lossy()))
    };
    let (uid, gid) = match (number("SUDO_UID", &uid), number("SUDO_GID", &gid)) {
        (Ok(uid), Ok(gid)) => (uid, gid),
        (Err(reason), _) | (_, Err(reason)) => return refuse(reason),
    };
    let name = match CString::new(name.into_encoded_bytes()) {
        Ok(name) if !name.is_empty() => name,
        _ => return refuse("SUDO_USER is not a user name".into()),
    };
    Ok(Some(InvokingUser {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        name,
    }))
}

/// Under sudo, run the command as the user who ran sudo, with that user's groups.
fn drop_to_invoking_user() -> Result<(), LaunchError> {
    let Some(user) = invoking_user()? else {
        return Ok(());
    };
    let switch = || -> nix::Result<()> {
        initgroups(&user.name, user.gid)?;
        setgid(user.gid)?;
        setuid(user.uid)
    };
    switch().map_err(LaunchError::SwitchUser)
}
