//! The agent's metrics for Prometheus (`/metrics`), through the Prometheus project's Rust
//! client (prometheus-client).
//!
//! The agent fills a [`MetricsInput`] from its model and reports at each scrape: plain data, no
//! model types, so that what is exposed is what the reports say (no second computation) and
//! this module can be tested alone. [`Metrics`] turns it into the exposition.
//!
//! Cardinality is bounded: a live process has series of its own (a `pid` label) when it is
//! among the `--metrics-top` processes by allocated bytes or has a finding; the others of one
//! comm and cgroup are summed into one series without `pid`. An exited process's series go
//! with it, and so does a sum whose processes are all gone: 5000 short-lived processes leave
//! nothing behind.
//!
//! Counters must never go down, yet their series are sums over processes that come and go.
//! [`Metrics`] therefore remembers each process's counts at the previous scrape and adds what
//! it gained since to the series it belongs to now: a process that exits leaves its calls in
//! its comm's `memtrace_syscalls_total`, one that moves out of the top N adds only its later
//! failures to its comm's sum. A sum whose processes are all gone disappears, and restarts
//! from zero if its comm returns: Prometheus reads that as a counter reset.
//!
//! Names are issue #27's, but for the map count and its limit: `memtrace_map_count` and
//! `memtrace_max_map_count` fail `promtool check metrics` (a `_count` suffix is for
//! histograms and summaries), so they are `memtrace_map_areas` and `memtrace_max_map_areas`,
//! after the kernel's "memory map areas a process may have" (vm.max_map_count).
//!
//! Registry rebuilt per scrape, or a kept registry with series removed? Neither: a collector
//! ([`Exposition`]) encodes the scrape's figures straight from the input, with borrowed
//! labels. Measured (release build, median of 40 scrapes of 300 synthetic processes, 2,155
//! series): 0.56 ms of CPU for the whole exposition this way, against 1.36 ms for a registry
//! of `Family` gauges rebuilt per scrape and 1.37 ms for a kept one updated and swept, both
//! with only four of the families: `Family` hashes and allocates every label set, every
//! scrape, only for the encoder to walk it once.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

/// `--metrics-top`'s default: processes with series of their own, by allocated bytes.
pub const DEFAULT_TOP: usize = 50;

/// Everything the agent knows at one scrape.
#[derive(Clone, Debug, Default)]
pub struct MetricsInput {
    /// Live processes, and exited ones the model still lists (their counts since the previous
    /// scrape are kept; their gauges are not exposed).
    pub processes: Vec<ProcessFigures>,
    /// `/proc/sys/vm/max_map_count`, when it could be read.
    pub max_map_count: Option<u64>,
    /// `/proc/meminfo`'s kernel totals (`Slab`, `SUnreclaim`, `KernelStack`, `PageTables`…),
    /// in bytes.
    pub kernel: Vec<(String, u64)>,
    /// Events applied since the agent started.
    pub events: u64,
    /// Events lost since the agent started, by reason (`ring_full`, `pending_full`).
    pub lost: Vec<(&'static str, u64)>,
    /// Captures written since the agent started, by trigger.
    pub captures: Vec<(&'static str, u64)>,
}

/// One process, as the model and the reports see it at this scrape.
#[derive(Clone, Debug, Default)]
pub struct ProcessFigures {
    pub pid: u32,
    /// When memtrace first saw it (CLOCK_MONOTONIC ns): with `pid`, tells it from a later
    /// process that reuses the pid.
    pub first_seen_ns: u64,
    pub alive: bool,
    pub comm: String,
    /// Its cgroup v2 path; "" when unknown.
    pub cgroup: String,
    /// Mapped regions and bytes by kind (`anon`, `heap`, `memfd`, `file`…): the layout.
    pub mapped: Vec<KindFigures>,
    /// What it allocated and still has mapped (created during the trace, and held since
    /// attach), by kind; what it loaded (files, thread stacks) excluded.
    pub allocated: Vec<KindFigures>,
    /// The growth model's rate for each group it follows (`memfd:doublemapper`, `anon`).
    pub growth: Vec<GroupGrowth>,
    /// Room left for the heap to grow by brk before the next mapping, when known.
    pub brk_room: Option<u64>,
    /// Mapped regions, as counted against `vm.max_map_count`.
    pub map_count: u64,
    /// Its findings, per kind (`growing`, `unreleased-memfd`, `brk-exhausted`…).
    pub findings: Vec<(&'static str, u64)>,
    /// Its calls since memtrace first saw it.
    pub syscalls: Vec<SyscallCount>,
    /// Its failed calls since memtrace first saw it, by errno.
    pub failures: Vec<FailureCount>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindFigures {
    pub kind: &'static str,
    pub regions: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupGrowth {
    pub group: String,
    pub bytes_per_s: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCount {
    pub syscall: &'static str,
    /// Failed calls included, as the model counts them.
    pub calls: u64,
    pub failed: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCount {
    pub syscall: &'static str,
    /// `ENOMEM`, `EINVAL`… (a refused brk is `ENOMEM`).
    pub errno: &'static str,
    pub count: u64,
}

impl ProcessFigures {
    fn allocated_bytes(&self) -> u64 {
        self.allocated.iter().map(|kind| kind.bytes).sum()
    }

    fn has_findings(&self) -> bool {
        self.findings.iter().any(|&(_, count)| count > 0)
    }
}

/// The exposition formats /metrics serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's text format 0.0.4: the default.
    Text,
    /// OpenMetrics 1.0.0, for `Accept: application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => Self::OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics when it ranks
    /// `application/openmetrics-text` above `text/plain` (as Prometheus does), else text.
    ///
    /// Written here because the HTTP crates memtrace uses leave `Accept` unparsed, and the
    /// rule needed (media ranges with q-values, two candidates) is a dozen lines.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Text;
        };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|param| {
                    let (key, value) = param.split_once('=')?;
                    (key.trim().eq_ignore_ascii_case("q")).then(|| value.trim().parse().ok())?
                })
                .next()
                .unwrap_or(1.0f32);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }
}

/// What the agent's own process uses (the `process_*` families every Prometheus client
/// exposes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentFigures {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
}

impl AgentFigures {
    /// This process's resident set (`/proc/self/statm`) and CPU time (getrusage).
    pub fn of_self() -> Option<Self> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()?;
        let usage =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
        let seconds = |time: nix::sys::time::TimeVal| {
            time.tv_sec() as f64 + time.tv_usec() as f64 / 1_000_000.0
        };
        Some(Self {
            resident_bytes: resident_pages * u64::try_from(page_size).ok()?,
            cpu_seconds: seconds(usage.user_time()) + seconds(usage.system_time()),
        })
    }
}

/// Every family /metrics exposes, as it appears in the exposition (counters with `_total`):
/// what dashboards and alerting rules may query.
pub const FAMILIES: &[&str] = &[
    "memtrace_mapped_bytes",
    "memtrace_allocated_bytes",
    "memtrace_regions",
    "memtrace_growth_bytes_per_second",
    "memtrace_brk_room_bytes",
    "memtrace_map_areas",
    "memtrace_max_map_areas",
    "memtrace_syscalls_total",
    "memtrace_failures_total",
    "memtrace_findings",
    "memtrace_cgroup_allocated_bytes",
    "memtrace_kernel_bytes",
    "memtrace_events_total",
    "memtrace_lost_events_total",
    "memtrace_captures_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

/// The metrics of one agent: its options and what its counters must remember between
/// scrapes. Every scraper shares it (two Prometheus servers see the same counters).
#[derive(Debug)]
pub struct Metrics {
    top: usize,
    /// Incremented at each scrape; what a scrape did not touch is gone.
    generation: u64,
    /// Each process's counts at the previous scrape, by (pid, first seen).
    last: HashMap<(u32, u64), LastCounts>,
    /// Per comm: the calls of all its processes, and the failures of those without series
    /// of their own.
    comms: HashMap<String, CommCounters>,
}

#[derive(Debug)]
struct LastCounts {
    generation: u64,
    syscalls: Vec<SyscallCount>,
    failures: Vec<FailureCount>,
}

#[derive(Debug, Default)]
struct CommCounters {
    generation: u64,
    /// The last scrape at which one of its processes had no series of its own.
    summed_generation: u64,
    /// (syscall, succeeded, failed)
    syscalls: Vec<(&'static str, u64, u64)>,
    /// (syscall, errno, count), of its processes without series of their own.
    summed_failures: Vec<(&'static str, &'static str, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(DEFAULT_TOP)
    }
}

impl Metrics {
    /// `top`: processes with series of their own by allocated bytes (`--metrics-top`), besides
    /// every process with a finding.
    pub fn new(top: usize) -> Self {
        Self {
            top,
            generation: 0,
            last: HashMap::new(),
            comms: HashMap::new(),
        }
    }

    /// The exposition of one scrape, with the agent's own figures read now.
    pub fn render(&mut self, input: MetricsInput, format: Format) -> String {
        self.render_with(input, AgentFigures::of_self(), format)
    }

    /// [`Self::render`] with the agent's figures given (tests, the bench).
    pub fn render_with(
        &mut self,
        input: MetricsInput,
        agent: Option<AgentFigures>,
        format: Format,
    ) -> String {
        let exposition = self.exposition(input, agent);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(exposition));
        let mut out = String::with_capacity(64 * 1024);
        // Writing into a String cannot fail, and the collector returns only the writer's
        // errors.
        let written = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        };
        debug_assert!(written.is_ok());
        out
    }

    fn exposition(&mut self, input: MetricsInput, agent: Option<AgentFigures>) -> Exposition {
        self.generation += 1;
        let generation = self.generation;
        let own = select(&input.processes, self.top);

        let mut failures = Vec::new();
        for (index, process) in input.processes.iter().enumerate() {
            let key = (process.pid, process.first_seen_ns);
            let previous = self.last.get(&key);
            let comm = match self.comms.get_mut(process.comm.as_str()) {
                Some(comm) => comm,
                None => self.comms.entry(process.comm.clone()).or_default(),
            };
            comm.generation = generation;
            for count in &process.syscalls {
                let before = previous
                    .and_then(|last| last.syscalls.iter().find(|c| c.syscall == count.syscall))
                    .copied()
                    .unwrap_or_default();
                let succeeded = gained(succeeded(count), succeeded(&before));
                let failed = gained(count.failed, before.failed);
                match comm.syscalls.iter_mut().find(|c| c.0 == count.syscall) {
                    Some(total) => {
                        total.1 += succeeded;
                        total.2 += failed;
                    }
                    None => comm.syscalls.push((count.syscall, succeeded, failed)),
                }
            }
            if own[index] {
                // Its own series: its own count, exact.
                failures.extend(process.failures.iter().map(|failure| FailureSeries {
                    pid: Some(process.pid),
                    comm: process.comm.clone(),
                    syscall: failure.syscall,
                    errno: failure.errno,
                    count: failure.count,
                }));
            } else {
                comm.summed_generation = generation;
                for failure in &process.failures {
                    let before = previous
                        .and_then(|last| {
                            last.failures
                                .iter()
                                .find(|f| f.syscall == failure.syscall && f.errno == failure.errno)
                        })
                        .map_or(0, |f| f.count);
                    let count = gained(failure.count, before);
                    let summed = comm
                        .summed_failures
                        .iter_mut()
                        .find(|f| f.0 == failure.syscall && f.1 == failure.errno);
                    match summed {
                        Some(total) => total.2 += count,
                        None => comm
                            .summed_failures
                            .push((failure.syscall, failure.errno, count)),
                    }
                }
            }
            self.last.insert(
                key,
                LastCounts {
                    generation,
                    syscalls: process.syscalls.clone(),
                    failures: process.failures.clone(),
                },
            );
        }
        self.last.retain(|_, last| last.generation == generation);
        self.comms.retain(|_, comm| comm.generation == generation);

        let mut syscalls = Vec::new();
        let mut comms: Vec<(&String, &mut CommCounters)> = self.comms.iter_mut().collect();
        comms.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, comm) in comms {
            for &(syscall, succeeded, failed) in &comm.syscalls {
                syscalls.push((name.clone(), syscall, "ok", succeeded));
                syscalls.push((name.clone(), syscall, "failed", failed));
            }
            if comm.summed_generation != generation {
                comm.summed_failures.clear();
            }
            failures.extend(comm.summed_failures.iter().map(|&(syscall, errno, count)| {
                FailureSeries {
                    pid: None,
                    comm: name.clone(),
                    syscall,
                    errno,
                    count,
                }
            }));
        }
        Exposition::new(input, own, syscalls, failures, agent)
    }
}

fn succeeded(count: &SyscallCount) -> u64 {
    count.calls.saturating_sub(count.failed)
}

/// What a count gained since the previous scrape; all of it when it went down (a process the
/// model started counting anew).
fn gained(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Which processes have series of their own: the live ones among the `top` by allocated
/// bytes (ties to the lower pid), and every live one with a finding.
fn select(processes: &[ProcessFigures], top: usize) -> Vec<bool> {
    let mut live: Vec<(u64, u32, usize)> = processes
        .iter()
        .enumerate()
        .filter(|(_, process)| process.alive)
        .map(|(index, process)| (process.allocated_bytes(), process.pid, index))
        .collect();
    live.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut own = vec![false; processes.len()];
    for (rank, &(_, _, index)) in live.iter().enumerate() {
        own[index] = rank < top || processes[index].has_findings();
    }
    own
}

#[derive(Debug)]
struct FailureSeries {
    /// None: the sum of the comm's processes without series of their own.
    pid: Option<u32>,
    comm: String,
    syscall: &'static str,
    errno: &'static str,
    count: u64,
}

/// The live processes of one comm and cgroup without series of their own, summed.
#[derive(Debug, Default)]
struct SummedGroup {
    /// One of them, for the comm and cgroup.
    member: usize,
    mapped: Vec<KindFigures>,
    allocated: Vec<KindFigures>,
    growth: Vec<(String, f64)>,
}

/// The live processes of one comm without series of their own, for the families without a
/// cgroup label, where a sum would mean nothing: the least brk room and the largest map count
/// (what an alert on either looks for).
#[derive(Debug, Default)]
struct SummedComm {
    member: usize,
    brk_room: Option<u64>,
    map_count: u64,
}

/// One scrape's figures, encoded straight into the exposition by prometheus-client (a
/// [`Collector`]): see the module's comment for why not `Family` metrics.
#[derive(Debug)]
struct Exposition {
    input: MetricsInput,
    /// Live processes with series of their own, by pid.
    own: Vec<usize>,
    summed: Vec<SummedGroup>,
    summed_comms: Vec<SummedComm>,
    /// Allocated bytes by cgroup (one member for its name) and kind, every live process in.
    cgroups: Vec<(usize, Vec<KindFigures>)>,
    /// (comm, syscall, result, count)
    syscalls: Vec<(String, &'static str, &'static str, u64)>,
    failures: Vec<FailureSeries>,
    agent: Option<AgentFigures>,
}

fn add_kinds(sums: &mut Vec<KindFigures>, kinds: &[KindFigures]) {
    for kind in kinds {
        match sums.iter_mut().find(|sum| sum.kind == kind.kind) {
            Some(sum) => {
                sum.regions += kind.regions;
                sum.bytes += kind.bytes;
            }
            None => sums.push(*kind),
        }
    }
}

impl Exposition {
    fn new(
        input: MetricsInput,
        own_series: Vec<bool>,
        syscalls: Vec<(String, &'static str, &'static str, u64)>,
        failures: Vec<FailureSeries>,
        agent: Option<AgentFigures>,
    ) -> Self {
        let processes = &input.processes;
        let mut own: Vec<usize> = (0..processes.len()).filter(|&i| own_series[i]).collect();
        own.sort_unstable_by_key(|&i| processes[i].pid);

        let mut summed: BTreeMap<(&str, &str), SummedGroup> = BTreeMap::new();
        let mut summed_comms: BTreeMap<&str, SummedComm> = BTreeMap::new();
        let mut cgroups: BTreeMap<&str, (usize, Vec<KindFigures>)> = BTreeMap::new();
        for (index, process) in processes.iter().enumerate() {
            if !process.alive {
                continue;
            }
            let cgroup = cgroups
                .entry(process.cgroup.as_str())
                .or_insert_with(|| (index, Vec::new()));
            add_kinds(&mut cgroup.1, &process.allocated);
            if own_series[index] {
                continue;
            }
            let group = summed
                .entry((process.comm.as_str(), process.cgroup.as_str()))
                .or_insert_with(|| SummedGroup {
                    member: index,
                    ..SummedGroup::default()
                });
            add_kinds(&mut group.mapped, &process.mapped);
            add_kinds(&mut group.allocated, &process.allocated);
            for growth in &process.growth {
                match group.growth.iter_mut().find(|g| g.0 == growth.group) {
                    Some(sum) => sum.1 += growth.bytes_per_s,
                    None => group
                        .growth
                        .push((growth.group.clone(), growth.bytes_per_s)),
                }
            }
            let comm = summed_comms
                .entry(process.comm.as_str())
                .or_insert_with(|| SummedComm {
                    member: index,
                    ..SummedComm::default()
                });
            comm.map_count = comm.map_count.max(process.map_count);
            comm.brk_room = match (comm.brk_room, process.brk_room) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let summed = summed.into_values().collect();
        let summed_comms = summed_comms.into_values().collect();
        let cgroups = cgroups.into_values().collect();
        Self {
            input,
            own,
            summed,
            summed_comms,
            cgroups,
            syscalls,
            failures,
            agent,
        }
    }

    fn process(&self, index: usize) -> &ProcessFigures {
        &self.input.processes[index]
    }
}

/// The `pid` label: one, or none for a sum.
type PidLabel<'a> = &'a [(&'static str, u32)];

/// A label set of `pid` followed by others.
type WithPid<'a, const N: usize> = (PidLabel<'a>, [(&'static str, &'a str); N]);

fn with_pid<'a, const N: usize>(
    pid: PidLabel<'a>,
    rest: [(&'static str, &'a str); N],
) -> WithPid<'a, N> {
    (pid, rest)
}

fn pid_label(pid: u32) -> [(&'static str, u32); 1] {
    [("pid", pid)]
}

/// One series of a family.
fn gauge<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue>(
    family: &mut MetricEncoder,
    labels: &L,
    value: V,
) -> fmt::Result {
    family.encode_family(labels)?.encode_gauge(&value)
}

fn counter<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeCounterValue>(
    family: &mut MetricEncoder,
    labels: &L,
    value: V,
) -> fmt::Result {
    family
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A family by kind: name, help, in bytes, the kinds of a process and of a sum, whether it
/// counts regions (else bytes).
type ByKindFamily = (
    &'static str,
    &'static str,
    bool,
    fn(&ProcessFigures) -> &[KindFigures],
    fn(&SummedGroup) -> &[KindFigures],
    bool,
);

const SUMMED: &str = " Series without pid sum the live processes of that comm and cgroup \
                      outside the --metrics-top by allocated bytes and without findings.";

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let bytes = Unit::Bytes;
        let no_pid: &[(&str, u32)] = &[];

        // mapped bytes and regions, allocated bytes: by pid, comm, cgroup and kind.
        let by_kind: [ByKindFamily; 3] = [
            (
                "memtrace_mapped",
                "Bytes mapped, by kind of region (anon, heap, stack, memfd, file...), as the \
                 layout memtrace follows has them.",
                true,
                |p| &p.mapped,
                |s| &s.mapped,
                false,
            ),
            (
                "memtrace_allocated",
                "Bytes allocated and still mapped (created during the trace, or held since \
                 memtrace attached), by kind; loaded files and thread stacks excluded.",
                true,
                |p| &p.allocated,
                |s| &s.allocated,
                false,
            ),
            (
                "memtrace_regions",
                "Mapped regions, by kind of region.",
                false,
                |p| &p.mapped,
                |s| &s.mapped,
                true,
            ),
        ];
        for (name, help, unit, of_process, of_sum, regions) in by_kind {
            let unit = unit.then_some(&bytes);
            let help = format!("{help}{SUMMED}");
            let mut family = encoder.encode_descriptor(name, &help, unit, MetricType::Gauge)?;
            let value = |kind: &KindFigures| if regions { kind.regions } else { kind.bytes };
            for &index in &self.own {
                let process = self.process(index);
                let pid = pid_label(process.pid);
                for kind in of_process(process) {
                    let labels = with_pid(
                        &pid,
                        [
                            ("comm", &process.comm),
                            ("cgroup", &process.cgroup),
                            ("kind", kind.kind),
                        ],
                    );
                    gauge(&mut family, &labels, value(kind))?;
                }
            }
            for group in &self.summed {
                let member = self.process(group.member);
                for kind in of_sum(group) {
                    let labels = with_pid(
                        no_pid,
                        [
                            ("comm", &member.comm),
                            ("cgroup", &member.cgroup),
                            ("kind", kind.kind),
                        ],
                    );
                    gauge(&mut family, &labels, value(kind))?;
                }
            }
        }

        {
            let help = format!(
                "Growth rate the growth model measures over a group's steady rise \
                 (memfd:NAME, anon...), for the groups it follows.{SUMMED}"
            );
            let unit = Unit::Other("bytes_per_second".into());
            let mut family = encoder.encode_descriptor(
                "memtrace_growth",
                &help,
                Some(&unit),
                MetricType::Gauge,
            )?;
            for &index in &self.own {
                let process = self.process(index);
                let pid = pid_label(process.pid);
                for growth in &process.growth {
                    let labels = with_pid(
                        &pid,
                        [
                            ("comm", &process.comm),
                            ("cgroup", &process.cgroup),
                            ("group", &growth.group),
                        ],
                    );
                    gauge(&mut family, &labels, growth.bytes_per_s)?;
                }
            }
            for group in &self.summed {
                let member = self.process(group.member);
                for (name, rate) in &group.growth {
                    let labels = with_pid(
                        no_pid,
                        [
                            ("comm", &member.comm),
                            ("cgroup", &member.cgroup),
                            ("group", name),
                        ],
                    );
                    gauge(&mut family, &labels, *rate)?;
                }
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_brk_room",
                "Room left for the heap to grow by brk before the next mapping. Series \
                 without pid: the least room among the comm's live processes outside the \
                 --metrics-top.",
                Some(&bytes),
                MetricType::Gauge,
            )?;
            for &index in &self.own {
                let process = self.process(index);
                if let Some(room) = process.brk_room {
                    let pid = pid_label(process.pid);
                    let labels = with_pid(&pid, [("comm", &process.comm)]);
                    gauge(&mut family, &labels, room)?;
                }
            }
            for comm in &self.summed_comms {
                if let Some(room) = comm.brk_room {
                    let labels = with_pid(no_pid, [("comm", &self.process(comm.member).comm)]);
                    gauge(&mut family, &labels, room)?;
                }
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_map_areas",
                "Memory map areas (mapped regions), as counted against vm.max_map_count. Series \
                 without pid: \
                 the most among the comm's live processes outside the --metrics-top.",
                None,
                MetricType::Gauge,
            )?;
            for &index in &self.own {
                let process = self.process(index);
                let pid = pid_label(process.pid);
                let labels = with_pid(&pid, [("comm", &process.comm)]);
                gauge(&mut family, &labels, process.map_count)?;
            }
            for comm in &self.summed_comms {
                let labels = with_pid(no_pid, [("comm", &self.process(comm.member).comm)]);
                gauge(&mut family, &labels, comm.map_count)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_max_map_areas",
                "vm.max_map_count: the most memory map areas one process may have.",
                None,
                MetricType::Gauge,
            )?;
            if let Some(limit) = self.input.max_map_count {
                family.encode_gauge(&limit)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_syscalls",
                "Memory-mapping syscalls of the comm's processes since the agent started \
                 (exited processes' included), by result (ok, failed).",
                None,
                MetricType::Counter,
            )?;
            for (comm, syscall, result, count) in &self.syscalls {
                let labels = [
                    ("comm", comm.as_str()),
                    ("syscall", syscall),
                    ("result", result),
                ];
                counter(&mut family, &labels, *count)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_failures",
                "Failed memory-mapping syscalls, by errno (a refused brk is ENOMEM). Series \
                 without pid sum the comm's processes outside the --metrics-top and without \
                 findings while they ran.",
                None,
                MetricType::Counter,
            )?;
            for failure in &self.failures {
                let pid = failure.pid.map(|pid| [("pid", pid)]);
                let labels = with_pid(
                    pid.as_ref().map_or(no_pid, |pid| pid.as_slice()),
                    [
                        ("comm", &failure.comm),
                        ("syscall", failure.syscall),
                        ("errno", failure.errno),
                    ],
                );
                counter(&mut family, &labels, failure.count)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_findings",
                "Findings of the process, by kind (growing, unreleased-memfd, unreleased-anon, \
                 brk-exhausted, abi-exec-layout), as the report lists them.",
                None,
                MetricType::Gauge,
            )?;
            for &index in &self.own {
                let process = self.process(index);
                let pid = pid_label(process.pid);
                for &(kind, count) in &process.findings {
                    let labels = ([("kind", kind)], with_pid(&pid, [("comm", &process.comm)]));
                    gauge(&mut family, &labels, count)?;
                }
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_cgroup_allocated",
                "Bytes allocated and still mapped by the cgroup's live processes (as \
                 memtrace_allocated_bytes), by kind.",
                Some(&bytes),
                MetricType::Gauge,
            )?;
            for (member, kinds) in &self.cgroups {
                let cgroup = &self.process(*member).cgroup;
                for kind in kinds {
                    let labels = [("cgroup", cgroup.as_str()), ("kind", kind.kind)];
                    gauge(&mut family, &labels, kind.bytes)?;
                }
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_kernel",
                "The kernel's own memory, from /proc/meminfo (Slab, SUnreclaim, KernelStack, \
                 PageTables...).",
                Some(&bytes),
                MetricType::Gauge,
            )?;
            for (name, value) in &self.input.kernel {
                gauge(&mut family, &[("name", name.as_str())], *value)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "memtrace_events",
                "Events the agent applied to its model.",
                None,
                MetricType::Counter,
            )?;
            family.encode_counter::<NoLabelSet, _, u64>(&self.input.events, None)?;
        }

        for (name, help, label, counts) in [
            (
                "memtrace_lost_events",
                "Events lost, by reason (ring_full: the ring buffer was full; pending_full: \
                 a syscall's entry could not be remembered).",
                "reason",
                &self.input.lost,
            ),
            (
                "memtrace_captures",
                "Captures of the flight recorder written, by trigger.",
                "trigger",
                &self.input.captures,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for &(value, count) in counts {
                counter(&mut family, &[(label, value)], count)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory of the agent itself.",
                Some(&bytes),
                MetricType::Gauge,
            )?;
            if let Some(agent) = self.agent {
                family.encode_gauge(&agent.resident_bytes)?;
            }
            let mut family = encoder.encode_descriptor(
                "process_cpu",
                "CPU time of the agent itself, user and system.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            if let Some(agent) = self.agent {
                family.encode_counter::<NoLabelSet, _, u64>(&agent.cpu_seconds, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
pub(crate) mod tests;
