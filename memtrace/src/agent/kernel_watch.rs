//! Seed 001's case: kernel memory that keeps growing with no process to blame. The agent
//! watches the kernel's own totals in `/proc/meminfo` (unreclaimable slab, vmalloc, per-CPU)
//! beside what the traced processes hold; when the kernel's rise steadily while the processes'
//! do not explain it, it runs kernel mode (`memtrace kernel`) for a window and captures its
//! report: the call sites and caches that hold the memory, the `!poolused` of Linux.

use std::{collections::VecDeque, time::Duration};

use super::triggers::{Fired, TriggerKind};
use crate::{
    clock::monotonic_ns,
    event::{Event, EventBody},
    kernel_mode::{
        self, capture::SnapshotTaker, kallsyms::KernelSymbols, model::KernelModel,
        procfs::parse_meminfo,
    },
    probes::kernel_mode::{KernelModeOptions, KernelModeProbes},
    recording::{Mode, RecordingHeader, RecordingWriter, WriterOptions},
    report::{format::bytes, growth::rise_of, Source},
    stream::Stream,
};

/// The `/proc/meminfo` totals of memory only the kernel holds.
const KERNEL_FIELDS: [&str; 3] = ["SUnreclaim", "VmallocUsed", "Percpu"];
/// Samples kept: the window is this many periods long.
const WINDOW_SAMPLES: usize = 48;

/// One look at the system: the kernel's totals and what the traced processes hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub time_ns: u64,
    pub kernel_bytes: u64,
    pub user_bytes: u64,
}

#[derive(Debug)]
pub struct KernelWatch {
    growing_for_ns: u64,
    min_growth_bytes: u64,
    period_ns: u64,
    samples: VecDeque<Sample>,
    /// Once fired, the watch waits for a window of new samples before it may fire again.
    quiet_until_ns: u64,
}

impl KernelWatch {
    /// Fires when the kernel's totals rose steadily by at least `min_growth_bytes` over at
    /// least `growing_for_ns`.
    pub fn new(growing_for_ns: u64, min_growth_bytes: u64) -> Self {
        Self {
            growing_for_ns,
            min_growth_bytes,
            period_ns: (growing_for_ns / 16).clamp(1_000_000_000, 60_000_000_000),
            samples: VecDeque::new(),
            quiet_until_ns: 0,
        }
    }

    /// Reads `/proc/meminfo` when a period has passed; `user_bytes`: what the traced
    /// processes hold now.
    pub fn sample(&mut self, now_ns: u64, user_bytes: u64) -> Option<Fired> {
        if self
            .samples
            .back()
            .is_some_and(|last| now_ns < last.time_ns.saturating_add(self.period_ns))
        {
            return None;
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kernel_bytes = parse_meminfo(&meminfo)
            .iter()
            .filter(|value| KERNEL_FIELDS.contains(&value.name.as_str()))
            .map(|value| value.bytes)
            .sum();
        self.push(Sample {
            time_ns: now_ns,
            kernel_bytes,
            user_bytes,
        })
    }

    /// Adds a sample and judges the window.
    pub fn push(&mut self, sample: Sample) -> Option<Fired> {
        if self.samples.len() == WINDOW_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        if sample.time_ns < self.quiet_until_ns {
            return None;
        }
        let points: Vec<(u64, u64)> = self
            .samples
            .iter()
            .map(|sample| (sample.time_ns, sample.kernel_bytes))
            .collect();
        let rise = rise_of(&points)?;
        if rise.grown < self.min_growth_bytes
            || sample.time_ns.saturating_sub(rise.since_ns) < self.growing_for_ns
        {
            return None;
        }
        // What the processes gained over the same span: a process behind the rise (page
        // tables and slab of a process that maps ever more) is the user-mode triggers' case.
        let user_then = self
            .samples
            .iter()
            .find(|earlier| earlier.time_ns >= rise.since_ns)
            .map_or(sample.user_bytes, |earlier| earlier.user_bytes);
        let user_grown = sample.user_bytes.saturating_sub(user_then);
        if user_grown >= rise.grown / 2 {
            return None;
        }
        self.quiet_until_ns = sample
            .time_ns
            .saturating_add(self.period_ns * WINDOW_SAMPLES as u64);
        Some(Fired {
            kind: TriggerKind::Kernel,
            pid: 0,
            comm: String::new(),
            time_ns: sample.time_ns,
            detail: format!(
                "kernel memory ({}) grows steadily at {}/s (+{} in {:.0} s) while the traced processes gained {}",
                KERNEL_FIELDS.join(" + "),
                bytes(rise.rate),
                bytes(rise.grown),
                sample.time_ns.saturating_sub(rise.since_ns) as f64 / 1e9,
                bytes(user_grown)
            ),
            figures: serde_json::json!({
                "bytes_per_s": rise.rate,
                "grown_bytes": rise.grown,
                "since_ns": rise.since_ns,
                "kernel_bytes": sample.kernel_bytes,
                "user_grown_bytes": user_grown,
            }),
        })
    }
}

/// What kernel mode saw in its window: its recording and its reports.
#[derive(Debug)]
pub struct KernelWindow {
    pub recording: Vec<u8>,
    pub text: String,
    pub json: String,
}

/// Runs kernel mode system-wide for `duration`, a kernel snapshot every `period`, and returns
/// its recording and reports. Blocking: the agent runs it on a thread of its own.
pub fn run_kernel_window(
    duration: Duration,
    period: Duration,
    command_line: &[String],
) -> anyhow::Result<KernelWindow> {
    let symbols = KernelSymbols::load().unwrap_or_default();
    let probes = KernelModeProbes::load(&KernelModeOptions {
        filter_pids: false,
        follow_children: false,
        stacks: false,
        max_outstanding: 1 << 18,
        pages: false,
    })?;
    let header = RecordingHeader::now(Mode::Kernel, command_line, None);
    let recorder = RecordingWriter::new(Vec::new(), &header, WriterOptions::default())?;
    let mut stream = Stream::new(None, Some(recorder));
    let mut model = KernelModel::default();
    let mut taker = SnapshotTaker::new(symbols, u64::from(probes.layout.config.page_size));
    let end = std::time::Instant::now() + duration;
    loop {
        let snapshot = taker.take(&probes)?;
        stream.feed(
            &Event::of_session(
                monotonic_ns(),
                EventBody::KernelSnapshot(Box::new(snapshot)),
            ),
            &mut model,
        );
        let now = std::time::Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep(period.min(end - now));
    }
    let recording = stream.finish_into_sink().unwrap_or_default();
    let report = kernel_mode::report::build(&model, Source::Live);
    Ok(KernelWindow {
        recording,
        text: kernel_mode::report::render_text(&report),
        json: kernel_mode::report::render_json(&report),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const MIB: u64 = 1 << 20;

    fn watch_of(samples: impl Iterator<Item = (u64, u64, u64)>) -> Vec<Option<Fired>> {
        let mut watch = KernelWatch::new(20 * SECOND, 16 * MIB);
        samples
            .map(|(time, kernel, user)| {
                watch.push(Sample {
                    time_ns: time * SECOND,
                    kernel_bytes: kernel,
                    user_bytes: user,
                })
            })
            .collect()
    }

    #[test]
    fn kernel_growth_no_process_explains_fires_once() {
        let fired = watch_of((0..40).map(|s| (s, 500 * MIB + s * MIB, 100 * MIB)));
        let first = fired.iter().position(Option::is_some).expect("fires");
        assert!((20..=24).contains(&first), "fired at {first} s");
        assert_eq!(
            fired.iter().filter(|f| f.is_some()).count(),
            1,
            "then stays quiet"
        );
        let fired = fired[first].as_ref().unwrap();
        assert_eq!(fired.kind, TriggerKind::Kernel);
        assert_eq!(fired.figures["bytes_per_s"], MIB);
    }

    #[test]
    fn kernel_growth_a_process_explains_does_not_fire() {
        let fired = watch_of((0..40).map(|s| (s, 500 * MIB + s * MIB, 100 * MIB + 4 * s * MIB)));
        assert!(fired.iter().all(Option::is_none));
    }

    #[test]
    fn a_small_or_short_rise_does_not_fire() {
        let fired = watch_of((0..40).map(|s| (s, 500 * MIB + s * 100_000, 0)));
        assert!(fired.iter().all(Option::is_none), "4 MB is under the bound");
        let fired = watch_of((0..15).map(|s| (s, 500 * MIB + s * 4 * MIB, 0)));
        assert!(
            fired.iter().all(Option::is_none),
            "15 s is under --growing-for"
        );
    }
}
