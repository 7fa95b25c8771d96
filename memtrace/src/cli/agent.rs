//! `memtrace agent`: the always-on watcher, until SIGTERM.

use std::{collections::BTreeSet, process::ExitCode};

use anyhow::Context as _;

use super::args::{positive_seconds, seconds_option, AgentArgs};
use crate::{
    agent::{self, mode::TriggerOptions, triggers::TriggerKind, AgentOptions, AgentTarget},
    cgroup::Cgroup,
};
use memtrace_common::MAX_CGROUPS;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let mut cgroups: Vec<Cgroup> = Vec::new();
    for cgroup in args
        .cgroup
        .iter()
        .map(|path| Cgroup::resolve(path))
        .chain(args.unit.iter().map(|unit| Cgroup::of_unit(unit)))
    {
        let cgroup = cgroup?;
        if !cgroups.iter().any(|known| known.id == cgroup.id) {
            cgroups.push(cgroup);
        }
    }
    if cgroups.len() > MAX_CGROUPS {
        anyhow::bail!(
            "{} cgroups given (--cgroup, --unit): at most {MAX_CGROUPS} are watched at once",
            cgroups.len()
        );
    }
    let target = if cgroups.is_empty() {
        AgentTarget::System
    } else {
        AgentTarget::Cgroups(cgroups)
    };
    let seconds = |option: &str, value: f64| -> anyhow::Result<std::time::Duration> {
        positive_seconds(option, Some(value))?.context("a positive number of seconds")
    };
    let mut enabled: BTreeSet<TriggerKind> = TriggerKind::ALL.into_iter().collect();
    for kind in &args.no_trigger {
        enabled.remove(kind);
    }
    if args.trigger_size.is_none() {
        enabled.remove(&TriggerKind::Size);
    }
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(65_530);
    let options = AgentOptions {
        target,
        probes: crate::probes::ProbeOptions {
            // The OOM killer's choice is the oom trigger's; the program loads only for it.
            oom_victims: enabled.contains(&TriggerKind::Oom),
            ..args.probes.options(true, Vec::new())
        },
        capture_dir: args.capture_dir.clone(),
        history: seconds("--history", args.history)?,
        history_bytes: args.history_bytes,
        keyframe_interval: seconds("--keyframe-interval", args.keyframe_interval)?,
        capture_window: seconds("--capture-window", args.capture_window)?,
        triggers: TriggerOptions {
            enabled,
            growing_for_ns: seconds("--growing-for", args.growing_for)?.as_nanos() as u64,
            size_bytes: args.trigger_size,
            max_map_count,
        },
        cooldown: seconds_option("--trigger-cooldown", args.trigger_cooldown)?,
        max_captures: args.max_captures.max(1),
        max_capture_bytes: args.max_capture_bytes,
        kernel_window: seconds("--kernel-window", args.kernel_window)?,
        kernel_growth_bytes: args.kernel_growth,
        duration: positive_seconds("--duration", args.duration)?,
        keep_exited: args.keep_exited,
        command_line: std::env::args().collect(),
        listen: args.listen,
        metrics_top: args.metrics_top,
        max_map_count: Some(max_map_count),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Losses were told as they happened; a stop asked for is a clean exit either way, so that
    // a service manager does not take it for a failure.
    runtime.block_on(agent::run(options))?;
    Ok(ExitCode::SUCCESS)
}
