//! `memtrace kernel`: a live kernel-mode session and its report.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{
    args::{positive_seconds, seconds_option, Format, KernelArgs, OutputArgs},
    exit_code_of,
    report_output::{write_rendered, Outputs},
};
use crate::{
    kernel_mode::{
        self,
        live::{KernelOptions, KernelTarget},
    },
    report::Source,
};

pub fn run(args: KernelArgs) -> anyhow::Result<ExitCode> {
    let mut outputs = Outputs::check(args.record.as_deref(), &args.output)?;
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), _) => KernelTarget::Pid(pid),
        (None, false) => KernelTarget::Command(args.command.clone()),
        (None, true) => KernelTarget::System,
    };
    anyhow::ensure!(
        !args.follow || !matches!(target, KernelTarget::System),
        "--follow needs --pid or a command"
    );
    anyhow::ensure!(
        args.snapshot_interval >= 0.01,
        "--snapshot-interval must be at least 0.01 seconds"
    );
    let options = KernelOptions {
        target,
        follow: args.follow,
        stacks: args.stacks,
        snapshot_period: seconds_option("--snapshot-interval", args.snapshot_interval)?,
        duration: positive_seconds("--duration", args.duration)?,
        record: outputs.record.take(),
        max_outstanding: args.max_outstanding,
        pages: args.pages,
        command_line: std::env::args().collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(kernel_mode::live::run(options))?;
    let report = kernel_mode::report::build(&outcome.model, Source::Live);
    let written = write_kernel_report(&report, &args.output, &outputs);
    let recording_failed = outcome.stream.recording_failure();
    if let Some(failure) = &recording_failed {
        eprintln!("memtrace: {}", crate::escape::terminal(failure));
    }
    if report.kernel.table_full > 0 {
        eprintln!(
            "memtrace: {} kernel allocations not tracked (outstanding table full); try a larger --max-outstanding",
            report.kernel.table_full
        );
    }
    written?;
    Ok(match outcome.command_status {
        _ if recording_failed.is_some() => ExitCode::FAILURE,
        Some(status) => exit_code_of(status),
        None => ExitCode::SUCCESS,
    })
}

pub fn write_kernel_report(
    report: &kernel_mode::report::KernelReportFile,
    output: &OutputArgs,
    outputs: &Outputs,
) -> anyhow::Result<()> {
    let rendered = match output.format {
        Format::Json => kernel_mode::report::render_json(report),
        Format::Text => kernel_mode::report::render_text(report),
    };
    write_rendered(&rendered, outputs)
}
