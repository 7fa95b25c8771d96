//! What a scrape of /metrics costs the agent: synthetic processes (as many as a busy host
//! traces), scraped again and again. The goal is under 5 ms of the agent's CPU per scrape
//! with 300 traced processes. [`bench_render`] measures the exposition alone (on the
//! rendering thread's clock); [`bench_scrape`] the whole of a scrape over loopback HTTP: the
//! figures handed over, the exposition, the server, the connection. `cargo xtask bench`
//! calls [`bench_scrape`]; the unit tests use [`synthetic_input`] too.

use std::{fmt, io, io::Read as _, io::Write as _, net::TcpStream, sync::Arc, time::Duration};

use crate::agent::{
    http::{Scrape, Server, ServerOptions, Unavailable},
    metrics::{
        AgentFigures, FailureCount, Format, GroupGrowth, KindFigures, Metrics, MetricsInput,
        ProcessFigures, SyscallCount, DEFAULT_TOP,
    },
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

/// One run of [`bench_scrape`].
#[derive(Clone, Debug)]
pub struct ScrapeFigures {
    pub render: RenderFigures,
    /// Median CPU time the process spent per scrape, the client's own excluded.
    pub scrape_cpu: Duration,
    pub scrape_bytes: usize,
}

impl fmt::Display for ScrapeFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "/metrics of {} processes ({} series, {} KiB): {:.2} ms of CPU per scrape over \
             HTTP (goal: under 5), of which the exposition {:.2} ms (OpenMetrics {:.2} ms); \
             medians of {} scrapes",
            self.render.processes,
            self.render.series,
            self.scrape_bytes / 1024,
            ms(self.scrape_cpu),
            ms(self.render.text_cpu),
            ms(self.render.openmetrics_cpu),
            self.render.scrapes,
        )
    }
}

/// An agent whose model is `processes` synthetic ones: the scrape copies them out, as the
/// agent copies its figures out of its model.
struct SyntheticAgent {
    processes: usize,
    scrape: std::sync::atomic::AtomicU64,
}

impl Scrape for SyntheticAgent {
    fn metrics(&self) -> Result<MetricsInput, Unavailable> {
        let scrape = self
            .scrape
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(synthetic_input(self.processes, scrape))
    }

    fn heap_profile(&self) -> Result<Vec<u8>, Unavailable> {
        Err(Unavailable("no profiles in the bench".into()))
    }

    fn allocs_profile(&self) -> Result<Vec<u8>, Unavailable> {
        self.heap_profile()
    }
}

/// [`bench_render`], then `scrapes` scrapes of a server on loopback by a client on this
/// thread, one connection each (as a scraper that does not keep connections alive): the
/// process's CPU time (getrusage) per scrape, less this thread's.
pub fn bench_scrape(processes: usize, scrapes: usize) -> io::Result<ScrapeFigures> {
    let render = bench_render(processes, scrapes);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = runtime.block_on(Server::bind(
        "127.0.0.1:0".parse().expect("an address"),
        ServerOptions::default(),
    ))?;
    let address = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = Arc::new(SyntheticAgent {
        processes,
        scrape: 0.into(),
    });
    let serving = runtime.spawn(server.run(agent, async {
        let _ = stopped.await;
    }));
    let mut times = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let (process, client) = (process_cpu(), thread_cpu());
        let mut stream = TcpStream::connect(address)?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::with_capacity(256 * 1024);
        stream.read_to_end(&mut answer)?;
        let spent = process_cpu().saturating_sub(process);
        times.push(spent.saturating_sub(thread_cpu().saturating_sub(client)));
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(io::Error::other("the bench's scrape failed"));
        }
        bytes = answer.len();
    }
    let _ = stop.send(());
    runtime.block_on(serving).map_err(io::Error::other)?;
    times.sort_unstable();
    Ok(ScrapeFigures {
        render,
        scrape_cpu: times[times.len() / 2],
        scrape_bytes: bytes,
    })
}

fn process_cpu() -> Duration {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|usage| {
            let time = |t: nix::sys::time::TimeVal| {
                Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
            };
            time(usage.user_time()) + time(usage.system_time())
        })
        .unwrap_or_default()
}

fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench runs and measures something; its figures are for `cargo xtask bench`.
    #[test]
    fn the_scrape_bench_measures_a_scrape() {
        let figures = bench_scrape(30, 5).unwrap();
        assert!(figures.render.series > 30 * 10, "{figures:?}");
        assert!(
            figures.scrape_bytes > figures.render.text_bytes,
            "{figures:?}"
        );
        assert!(figures.scrape_cpu > Duration::ZERO, "{figures:?}");
        assert!(figures.to_string().contains("of 30 processes"), "{figures}");
    }
}
