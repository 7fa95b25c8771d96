//! Call stacks at scale: memtrace's peak RSS tracing a large executable with stacks on, next
//! to --no-stacks (what unwinding and naming cost must not grow with the traced binary), and
//! the stack samples per second memtrace unwinds with none skipped.
//!
//! The large executable is tests/programs/stack_rate.c built with 200 MiB more `.text`
//! (`-DTEXT_PAD`), as large as chromium's; chromium itself is measured too when installed.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::{proc, sustained_rate::observe};
use crate::{cmd, privilege, workspace::Workspace};

/// The executable's extra `.text`.
const TEXT_PAD_BYTES: u64 = 200 << 20;
/// Paced sample rates tried, per second, each for [`RATE_SECONDS`].
const SAMPLE_RATES: [u64; 6] = [2_500, 5_000, 10_000, 20_000, 40_000, 80_000];
const RATE_SECONDS: u64 = 2;

pub fn measure(workspace: &Workspace, memtrace: &Path, scratch: &Path) -> Result<()> {
    let source = workspace.root.join("tests/programs/stack_rate.c");
    let large = scratch.join("stack_rate_large");
    cmd::step(format!(
        "compiling tests/programs/stack_rate.c with {} MiB more .text",
        TEXT_PAD_BYTES >> 20
    ));
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra"])
            .arg(format!("-DTEXT_PAD={TEXT_PAD_BYTES}"))
            .arg("-o")
            .arg(&large)
            .arg(&source),
    )?;
    println!();
    println!(
        "Call stacks at scale: memtrace's peak RSS (VmHWM, from /proc) tracing a large \
         executable at default settings, stacks on and --no-stacks; then the paced stack \
         samples per second it unwinds with none skipped (stacks_not_sampled = 0)."
    );
    println!(
        "{:<44} {:>14} {:>14}",
        "traced", "stacks MiB", "--no-stacks MiB"
    );
    let mut peaks = Vec::new();
    for flags in [&[][..], &["--no-stacks"][..]] {
        let report = scratch.join("stacks-large.json");
        let mut command = privilege::root_command(memtrace)?;
        command
            .args(flags)
            .args(["--format", "json", "-o"])
            .arg(&report)
            .arg("--")
            .arg(&large)
            .args(["2000", "1"])
            .stdout(Stdio::piped());
        let observed = observe(&mut command, memtrace)
            .with_context(|| format!("running {}", cmd::describe(&command)))?;
        peaks.push(observed.peak_rss_bytes);
    }
    println!(
        "{:<44} {:>14.1} {:>14.1}",
        format!("stack_rate + {} MiB .text", TEXT_PAD_BYTES >> 20),
        mib(peaks[0]),
        mib(peaks[1])
    );
    if let Some(peaks) = chromium_peaks(memtrace, scratch)? {
        println!(
            "{:<44} {:>14.1} {:>14.1}",
            "chromium --headless --dump-dom (a page)",
            mib(peaks.0),
            mib(peaks.1)
        );
    }

    println!();
    println!(
        "{:>12} {:>12} {:>16} {:>9}",
        "asked/s", "samples/s", "not sampled", "RSS MiB"
    );
    let mut best = None;
    for rate in SAMPLE_RATES {
        let report = scratch.join(format!("stacks-rate-{rate}.json"));
        let mut command = privilege::root_command(memtrace)?;
        command
            .args(["--format", "json", "-o"])
            .arg(&report)
            .arg("--")
            .arg(&large)
            .arg(rate.to_string())
            .arg(RATE_SECONDS.to_string())
            .stdout(Stdio::piped());
        let observed = observe(&mut command, memtrace)
            .with_context(|| format!("running {}", cmd::describe(&command)))?;
        let not_sampled = stacks_not_sampled(&report)?;
        let achieved = (rate * RATE_SECONDS) as f64 / observed.loop_time.as_secs_f64().max(1e-9);
        println!(
            "{:>12} {:>12.0} {:>16} {:>9.1}",
            rate,
            achieved,
            not_sampled,
            mib(observed.peak_rss_bytes)
        );
        if not_sampled == 0 {
            best = Some(achieved);
        } else {
            break;
        }
    }
    match best {
        Some(rate) => println!("stack samples sustained with none skipped: {rate:.0}/s"),
        None => println!("stack samples sustained with none skipped: none of the rates"),
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn stacks_not_sampled(report: &Path) -> Result<u64> {
    let text = fs::read_to_string(report)
        .with_context(|| format!("reading memtrace's report {}", report.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing memtrace's report {}", report.display()))?;
    json.pointer("/lost/stacks_not_sampled")
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("{} has no lost.stacks_not_sampled", report.display()))
}

/// memtrace's peak RSS tracing headless chromium dumping a page, stacks on and off; `None`
/// when chromium is not installed (`cargo xtask setup` installs it).
fn chromium_peaks(memtrace: &Path, scratch: &Path) -> Result<Option<(u64, u64)>> {
    if Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("chromium is not installed: not measured");
        return Ok(None);
    }
    let page = scratch.join("page.html");
    fs::write(
        &page,
        "<html><body><script>let a=[];for(let i=0;i<1000;i++)a.push(new Array(1000).fill(i));\
         document.body.append(String(a.length));</script></body></html>",
    )?;
    let mut peaks = Vec::new();
    for flags in [&[][..], &["--no-stacks"][..]] {
        let mut command = privilege::root_command(memtrace)?;
        command
            .args(flags)
            .args([
                "-o",
                "/dev/null",
                "--",
                "chromium",
                "--headless",
                "--no-sandbox",
            ])
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        peaks.push(peak_rss(&mut command, memtrace)?);
    }
    Ok(Some((peaks[0], peaks[1])))
}

/// memtrace's VmHWM until it exits, for a command that prints no `loop_ns`.
fn peak_rss(command: &mut Command, memtrace: &Path) -> Result<u64> {
    let mut child = command
        .spawn()
        .with_context(|| format!("running {}", cmd::describe(command)))?;
    let mut peak = 0;
    let mut pid = None;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(
                status.success(),
                "{} failed: {status}",
                cmd::describe(command)
            );
            return Ok(peak);
        }
        pid = pid.or_else(|| proc::process_running(child.id(), memtrace));
        if let Some(pid) = pid {
            peak = peak.max(proc::peak_rss_kib(pid).unwrap_or(0) * 1024);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
