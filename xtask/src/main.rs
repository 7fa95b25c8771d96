//! memtrace's project automation, run as `cargo xtask <command>` (an alias in .cargo/config.toml).
//! Every command sets up what it needs first, so a fresh machine needs nothing done by hand.

mod bench;
mod build;
mod cmd;
mod demo;
mod dist;
mod fuzz;
mod privilege;
mod run;
mod setup;
mod test;
mod vm;
mod vm_fetch;
mod vm_initramfs;
mod vm_matrix;
mod workspace;

use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Set up, build, run, test and benchmark memtrace"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a command needs (nightly rust-src, bpf-linker, Debian packages), skipping
    /// what is present. Every command below does this for itself first.
    Setup {
        /// The command to set up for; the test suite's needs include every other's.
        #[arg(
            long = "for",
            value_enum,
            default_value = "test",
            value_name = "COMMAND"
        )]
        purpose: setup::Purpose,
        /// Only say what is needed and what is missing; install nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Set up, then build target/release/memtrace with its eBPF programs.
    Build,
    /// Build, then run memtrace as root with ARGS (default: the built-in demo workload).
    Run {
        /// Arguments for memtrace, after `--`.
        #[arg(last = true, value_name = "ARGS")]
        memtrace_args: Vec<OsString>,
    },
    /// Build, then check formatting, lint, and run the tests against the release binary.
    Test {
        /// The kernels whose guests run the smoke tests (comma-separated labels, as `cargo xtask
        /// vm --list` shows; "all" for the whole matrix, "none" skips it). Default: the kernels
        /// the current programs pass on (see vm_matrix.rs).
        #[arg(long, value_delimiter = ',', value_name = "LABELS")]
        kernels: Vec<String>,
        /// Extra arguments for `cargo test`, after `--` (e.g. a test name filter).
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        cargo_test_args: Vec<OsString>,
    },
    /// Build, then measure memtrace's overhead, recording size and replay speed.
    Bench(bench::BenchOptions),
    /// Build the static, stripped memtrace to copy to servers: target/dist/memtrace, with its
    /// debug info (memtrace.debug) and checksum (memtrace.sha256) beside it.
    Dist,
    /// Boot a Debian kernel under qemu with this machine's root and run CMD there as root.
    Vm(vm::VmOptions),
    /// Fuzz the recording decoder and replay (cargo-fuzz, nightly) for a bounded time.
    Fuzz(fuzz::FuzzOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_task(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_task(task: Task) -> anyhow::Result<()> {
    let workspace = Workspace::locate()?;
    match task {
        Task::Setup {
            purpose,
            dry_run: true,
        } => setup::explain(&workspace, purpose),
        Task::Setup { purpose, .. } => setup::setup(&workspace, purpose),
        Task::Build => {
            setup::setup(&workspace, setup::Purpose::Build)?;
            build::build(&workspace).map(|_| ())
        }
        Task::Run { memtrace_args } => run::run(&workspace, memtrace_args),
        Task::Test {
            kernels,
            cargo_test_args,
        } => test::test(&workspace, &kernels, cargo_test_args),
        Task::Bench(options) => bench::bench(&workspace, &options),
        Task::Dist => {
            setup::setup(&workspace, setup::Purpose::Dist)?;
            dist::dist(&workspace).map(|_| ())
        }
        Task::Vm(options) => vm::vm(&workspace, &options),
        Task::Fuzz(options) => fuzz::fuzz(&workspace, &options),
    }
}
