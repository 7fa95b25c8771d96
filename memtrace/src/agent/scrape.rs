//! What a scrape is answered with, read from the agent's model between two batches of events:
//! the figures of `/metrics` and the reports the pprof endpoints encode. The same model and
//! the same report code as every report memtrace writes; nothing is computed a second way.

use std::collections::BTreeMap;

use super::{
    http::Unavailable,
    http_handoff::{Answer, Query},
    metrics::{FailureCount, GroupGrowth, KindFigures, MetricsInput, ProcessFigures, SyscallCount},
    mode::{AgentMode, ALLOCATED_KINDS},
    triggers::TriggerKind,
};
use crate::{
    event::Losses,
    kernel_mode::procfs::parse_meminfo,
    model::{ProcessView, RegionKind, SyscallName},
    report::{
        self,
        export::pprof::{self, DefaultSample},
        Detail, ReportOptions, SessionInfo, Source,
    },
};

/// What the agent counts beside its model.
#[derive(Clone, Debug, Default)]
pub struct AgentCounters {
    pub events: u64,
    pub lost: Losses,
    /// Captures written, by trigger.
    pub captures: BTreeMap<TriggerKind, u64>,
    pub max_map_count: Option<u64>,
    pub backend: Option<report::BackendInfo>,
}

/// The answer to one query.
pub fn answer(query: Query, agent: &mut AgentMode, counters: &AgentCounters) -> Answer {
    match query {
        Query::Metrics => Answer::Metrics(metrics_input(agent, counters)),
        Query::HeapProfile | Query::AllocsProfile => {
            let default = if query == Query::HeapProfile {
                DefaultSample::InuseSpace
            } else {
                DefaultSample::AllocSpace
            };
            let info = SessionInfo {
                source: Source::Live,
                events: counters.events,
                lost: counters.lost,
                backend: counters.backend.clone(),
            };
            // Built (and its frames named) here, where the model is; encoded and compressed on
            // the server's thread.
            let report = agent.user_mode.report(&info, Detail::Whole);
            Answer::Profile(Box::new(move || {
                pprof::render_as(&report, default)
                    .map_err(|error| Unavailable(format!("encoding the profile: {error}")))
            }))
        }
    }
}

/// The figures of `/metrics`: every process the model holds (live ones, and exited ones not
/// folded yet), from the model and the report's own findings.
pub fn metrics_input(agent: &AgentMode, counters: &AgentCounters) -> MetricsInput {
    let model = &agent.user_mode.model;
    let growth = agent.growth_rates();
    let options = ReportOptions::default();
    let processes = model
        .processes()
        .filter(|view| view.process().traced())
        .map(|view| {
            let process = view.process();
            let pid = process.pid();
            let mut findings: BTreeMap<&'static str, u64> = BTreeMap::new();
            for finding in report::findings_of(model, &view, &options) {
                *findings.entry(finding.kind.as_str()).or_default() += 1;
            }
            let stats = process.stats();
            ProcessFigures {
                pid,
                first_seen_ns: process.first_seen_ns(),
                alive: process.alive(),
                comm: process.comm(),
                cgroup: process
                    .container()
                    .map(|container| container.cgroup.clone())
                    .unwrap_or_default(),
                mapped: by_kind(&view, |_| true),
                allocated: by_kind(&view, |region| {
                    ALLOCATED_KINDS.contains(&region.kind) && !region.thread_stack
                }),
                growth: growth
                    .get(&pid)
                    .into_iter()
                    .flatten()
                    .map(|(group, rate)| GroupGrowth {
                        group: group.clone(),
                        bytes_per_s: *rate as f64,
                    })
                    .collect(),
                brk_room: process
                    .brk()
                    .headroom(view.layout())
                    .and_then(|headroom| headroom.room_left),
                map_count: view.layout().iter().count() as u64,
                findings: findings.into_iter().collect(),
                // `close` is counted only for memfds: not a memory syscall of its own.
                syscalls: SyscallName::ALL
                    .into_iter()
                    .filter(|&name| name != SyscallName::Close)
                    .map(|name| {
                        let counts = stats.counts(name);
                        SyscallCount {
                            syscall: name.as_str(),
                            calls: counts.calls,
                            failed: counts.failed,
                        }
                    })
                    .filter(|count| count.calls > 0)
                    .collect(),
                failures: stats
                    .failures()
                    .iter()
                    .map(|&(name, errno, count)| FailureCount {
                        syscall: name.as_str(),
                        errno: crate::event_line::errno_label(errno),
                        count,
                    })
                    .collect(),
            }
        })
        .collect();
    let kernel = std::fs::read_to_string("/proc/meminfo")
        .map(|text| {
            parse_meminfo(&text)
                .into_iter()
                .map(|value| (value.name, value.bytes))
                .collect()
        })
        .unwrap_or_default();
    MetricsInput {
        processes,
        max_map_count: counters.max_map_count,
        kernel,
        events: counters.events,
        lost: vec![
            ("ring_full", counters.lost.ring_full),
            ("pending_full", counters.lost.pending_full),
        ],
        captures: TriggerKind::ALL
            .into_iter()
            .map(|kind| {
                (
                    kind.as_str(),
                    counters.captures.get(&kind).copied().unwrap_or(0),
                )
            })
            .collect(),
    }
}

/// Regions and bytes by kind of the regions `keep` keeps, in the order kinds are listed.
fn by_kind(
    view: &ProcessView<'_>,
    keep: impl Fn(&crate::model::Region) -> bool,
) -> Vec<KindFigures> {
    let mut figures: Vec<KindFigures> = Vec::new();
    for region in view.layout().iter().filter(|region| keep(region)) {
        let kind = region.kind.as_str();
        match figures.iter_mut().find(|figure| figure.kind == kind) {
            Some(figure) => {
                figure.regions += 1;
                figure.bytes += region.len();
            }
            None => figures.push(KindFigures {
                kind,
                regions: 1,
                bytes: region.len(),
            }),
        }
    }
    figures.sort_by_key(|figure| {
        RegionKind::ALL
            .iter()
            .position(|kind| kind.as_str() == figure.kind)
    });
    figures
}
