//! Running external commands: every command is echoed before it runs, and a failure names the
//! command and its exit status, so a log shows exactly what to re-run by hand.

use std::{
    ffi::OsStr,
    fmt::Display,
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// Announces a step, one short line.
pub fn step(message: impl Display) {
    println!("xtask: {message}");
}

/// The command as a shell line, with the environment it sets in front (`LLVM_PREFIX=... cargo`).
pub fn describe(command: &Command) -> String {
    let environment = command.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.display(), quote(value)))
    });
    let words = std::iter::once(quote(command.get_program())).chain(command.get_args().map(quote));
    environment.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@^%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Echoes and runs a command with inherited stdio, failing unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    println!("  + {line}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout, failing (with its stderr) unless it succeeds.
/// For queries whose answer the caller needs, like `rustc --print sysroot`.
pub fn read_stdout(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let output = capture(command).with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Runs a command quietly as a probe: its stdout if it started and succeeded, `None` otherwise.
/// For "is this already installed?" checks, where failing to run is an answer, not an error.
pub fn probe(command: &mut Command) -> Option<String> {
    let output = capture(command).ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

/// Runs a command with stdin closed and both outputs captured.
pub fn capture(command: &mut Command) -> std::io::Result<Output> {
    command.stdin(Stdio::null()).output()
}
