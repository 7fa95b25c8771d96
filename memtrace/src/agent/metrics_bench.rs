//! What a scrape of /metrics costs the agent: synthetic processes (as many as a busy host
//! traces), rendered scrape after scrape, CPU time measured on the rendering thread. The goal
//! is under 5 ms of CPU per scrape with 300 traced processes. `cargo xtask bench` calls
//! [`bench_render`]; the unit tests use [`synthetic_input`] too.

use std::time::Duration;

use crate::agent::metrics::{
    AgentFigures, FailureCount, Format, GroupGrowth, KindFigures, Metrics, MetricsInput,
    ProcessFigures, SyscallCount, DEFAULT_TOP,
};

const COMMS: [&str; 12] = [
    "postgres",
    "nginx",
    "java",
    "python3",
    "node",
    "envoy",
    "redis-server",
    "sshd",
    "bash",
    "containerd-shim",
    "chromium",
    "slowleak",
];
const MAPPED_KINDS: [&str; 6] = ["file", "anon", "heap", "stack", "memfd", "vdso"];
const ALLOCATED_KINDS: [&str; 3] = ["anon", "heap", "memfd"];
const SYSCALLS: [&str; 7] = [
    "mmap",
    "munmap",
    "brk",
    "mremap",
    "mprotect",
    "memfd_create",
    "execve",
];

/// `processes` processes of a dozen programs in 16 cgroups, with what a report would say of
/// them: every kind of region, growth for some, failures and findings for a few. `scrape`
/// moves their counts and sizes on, as time would.
pub fn synthetic_input(processes: usize, scrape: u64) -> MetricsInput {
    let processes = (0..processes)
        .map(|i| {
            let i = i as u64;
            // A cheap, fixed spread of sizes: the same input every run.
            let spread = i.wrapping_mul(2_654_435_761) % 1000 + 1;
            let pid = 1000 + i as u32;
            let comm = COMMS[(i % COMMS.len() as u64) as usize];
            ProcessFigures {
                pid,
                first_seen_ns: i,
                alive: true,
                comm: comm.to_string(),
                cgroup: format!("/system.slice/app-{}.service", i % 16),
                mapped: MAPPED_KINDS
                    .iter()
                    .enumerate()
                    .map(|(k, &kind)| KindFigures {
                        kind,
                        regions: spread % 50 + k as u64,
                        bytes: (spread + k as u64) * 4096 * 64 + scrape * 4096,
                    })
                    .collect(),
                allocated: ALLOCATED_KINDS
                    .iter()
                    .enumerate()
                    .map(|(k, &kind)| KindFigures {
                        kind,
                        regions: spread % 20 + k as u64,
                        bytes: (spread * (k as u64 + 1)) * 4096 * 16 + scrape * 4096,
                    })
                    .collect(),
                growth: if i.is_multiple_of(5) {
                    vec![
                        GroupGrowth {
                            group: "anon".into(),
                            bytes_per_s: spread as f64 * 100.0,
                        },
                        GroupGrowth {
                            group: format!("memfd:{comm}"),
                            bytes_per_s: spread as f64 * 10.0,
                        },
                    ]
                } else {
                    Vec::new()
                },
                brk_room: Some(spread << 20),
                map_count: spread + 40,
                findings: if i % 20 == 7 {
                    vec![("growing", 1)]
                } else {
                    Vec::new()
                },
                syscalls: SYSCALLS
                    .iter()
                    .enumerate()
                    .map(|(k, &syscall)| SyscallCount {
                        syscall,
                        calls: (spread + k as u64) * (scrape + 1),
                        failed: if k == 2 { scrape } else { 0 },
                    })
                    .collect(),
                failures: if i % 10 == 3 {
                    vec![FailureCount {
                        syscall: "mmap",
                        errno: "ENOMEM",
                        count: scrape,
                    }]
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    MetricsInput {
        processes,
        max_map_count: Some(65530),
        kernel: [
            "Slab",
            "SReclaimable",
            "SUnreclaim",
            "KernelStack",
            "PageTables",
        ]
        .iter()
        .enumerate()
        .map(|(k, name)| (name.to_string(), (k as u64 + 1) << 24))
        .collect(),
        events: 1000 * (scrape + 1),
        lost: vec![("ring_full", 0), ("pending_full", 0)],
        captures: vec![("growth", scrape / 10)],
    }
}

/// One run of [`bench_render`].
#[derive(Clone, Debug)]
pub struct RenderFigures {
    pub processes: usize,
    pub scrapes: usize,
    /// Series in one exposition (samples, in the text format).
    pub series: usize,
    pub text_bytes: usize,
    /// Median CPU time of one scrape's rendering (the text format, as a default scrape).
    pub text_cpu: Duration,
    /// The same for OpenMetrics (what Prometheus asks for).
    pub openmetrics_cpu: Duration,
}

/// Renders `scrapes` scrapes of `processes` synthetic processes in each format and measures
/// the CPU time of each (the thread's, so other work in the process does not count).
pub fn bench_render(processes: usize, scrapes: usize) -> RenderFigures {
    let agent = AgentFigures::of_self();
    let median = |format: Format| {
        let mut metrics = Metrics::new(DEFAULT_TOP);
        let mut times = Vec::with_capacity(scrapes);
        let mut last = String::new();
        for scrape in 0..scrapes {
            let input = synthetic_input(processes, scrape as u64);
            let start = thread_cpu();
            last = metrics.render_with(input, agent, format);
            times.push(thread_cpu().saturating_sub(start));
        }
        times.sort_unstable();
        (
            times.get(times.len() / 2).copied().unwrap_or_default(),
            last,
        )
    };
    let (text_cpu, text) = median(Format::Text);
    let (openmetrics_cpu, _) = median(Format::OpenMetrics);
    RenderFigures {
        processes,
        scrapes,
        series: text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .count(),
        text_bytes: text.len(),
        text_cpu,
        openmetrics_cpu,
    }
}

fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}
