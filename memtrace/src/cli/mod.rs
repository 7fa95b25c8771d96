//! The command line: parse, run the mode asked for, write its report, and turn the outcome
//! into an exit code. One file per mode's runner; the argument types in `args.rs`.

mod agent;
mod args;
mod exhaustion;
mod kernel;
mod replay;
mod report_output;
mod trace;
mod warnings;

use std::{ffi::OsString, io, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;

use crate::{
    launch,
    probes::{floor::HookFloor, ProbeError},
    session::SessionError,
};
pub use args::{Cli, Command, Format};

/// memtrace's `main`: returns the traced command's exit code after the report.
pub fn main() -> ExitCode {
    let arguments: Vec<OsString> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|a| a == launch::GATE_ARGUMENT) {
        let command = arguments.get(3..).unwrap_or_default();
        return ExitCode::from(launch::run_gate(command) as u8);
    }
    exhaustion::install_panic_hook();
    let cli = Cli::parse();
    // --ebpf-log asks for the programs' own messages, which they log at debug level.
    let default_filter = if cli.trace.probes.ebpf_log {
        "warn,memtrace=debug"
    } else {
        "warn"
    };
    warnings::init(default_filter);
    let outcome = run(cli);
    warnings::print_suppressed();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("memtrace: {}", one_line(&error));
            // A transparent wrapper hides the probe error from the chain: ask both.
            if let Some(log) = error.chain().find_map(|cause| {
                cause
                    .downcast_ref::<ProbeError>()
                    .and_then(ProbeError::verifier_log)
                    .or_else(|| cause.downcast_ref::<SessionError>()?.verifier_log())
            }) {
                eprintln!("verifier log:\n{log}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Replay(args)) => replay::run(args),
        Some(Command::Kernel(args)) => kernel::run(args),
        Some(Command::Agent(args)) => agent::run(args),
        Some(Command::HookFloor { command }) => run_hook_floor(&command),
        None => trace::run(cli.trace),
    }
}

fn run_hook_floor(command: &[OsString]) -> anyhow::Result<ExitCode> {
    let _floor = HookFloor::attach()?;
    let (program, args) = command
        .split_first()
        .context("hook-floor needs a command")?;
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    Ok(exit_code_of(status))
}

/// The traced command's status as our own: its code, or 128 + the signal that killed it, as
/// a shell reports it.
pub(crate) fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal) as u8),
        _ => ExitCode::FAILURE,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}

/// The error and its causes on one line, as the terminal shows it: escaped whole
/// ([`crate::escape::terminal`]), so a newline in a path is shown as `\n` and the reason after
/// it is kept.
fn one_line(error: &anyhow::Error) -> String {
    crate::escape::terminal(&chain_line(error)).into_owned()
}

/// The error and its causes joined, without repeating a cause a message already quotes; not
/// escaped (for an error that quotes others, escaped once when printed).
fn chain_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
