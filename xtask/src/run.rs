//! `cargo xtask run [-- ARGS...]`: build, then become memtrace (as root), so its exit status and
//! signals (Ctrl-C) are memtrace's own.

use std::{ffi::OsString, os::unix::process::CommandExt as _};

use anyhow::{Context as _, Result};

use crate::{
    build, cmd, demo, privilege,
    setup::{self, Purpose},
    workspace::Workspace,
};

pub fn run(workspace: &Workspace, memtrace_args: Vec<OsString>) -> Result<()> {
    // The demo's C compiler too, when ARGS are given: what `cargo xtask run` needs stays one
    // list, whatever it is asked to trace.
    setup::setup(workspace, Purpose::Run)?;
    let binary = build::build(workspace)?;
    let memtrace_args = if memtrace_args.is_empty() {
        demo::prepare(workspace)?
    } else {
        memtrace_args
    };
    let mut command = privilege::root_command(&binary)?;
    command.args(&memtrace_args);
    let line = cmd::describe(&command);
    cmd::step("running memtrace");
    println!("  + {line}");
    // exec only returns on failure.
    let error = command.exec();
    Err(error).with_context(|| format!("could not start `{line}`"))
}
