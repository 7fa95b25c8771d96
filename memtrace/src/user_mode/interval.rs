//! `--interval SECONDS`: one compact block per interval, like bcc memleak's interval output
//! or `top`: per traced process its live totals and the groups that grew most, with deltas
//! and rates over the interval.
//!
//! Driven by time, not by a timer of its own: user mode ticks it with each event's time
//! before applying the event (so a replay prints the state at each boundary exactly), and a
//! live session also ticks it with the clock, so a quiet process still gets its blocks.

use std::collections::HashMap;
use std::io::Write;

use crate::escape::terminal;
use crate::model::timeline::{GroupKey, Totals};
use crate::model::Model;
use crate::report::format::bytes;

/// Groups listed per process and block.
const LISTED_GROUPS: usize = 3;

pub struct IntervalPrinter {
    interval_ns: u64,
    /// The first boundary is one interval after the first tick.
    next_ns: Option<u64>,
    origin_ns: u64,
    /// Each process's totals at the last block.
    previous: HashMap<u32, Totals>,
    out: Option<Box<dyn Write + Send>>,
}

/// The `--interval` blocks on stderr, like `--events`.
pub fn stderr_printer(period: std::time::Duration) -> IntervalPrinter {
    IntervalPrinter::new(
        period.as_nanos().min(u64::MAX.into()) as u64,
        Box::new(std::io::LineWriter::new(std::io::stderr())),
    )
}

impl IntervalPrinter {
    pub fn new(interval_ns: u64, out: Box<dyn Write + Send>) -> Self {
        Self {
            interval_ns: interval_ns.max(1),
            next_ns: None,
            origin_ns: 0,
            previous: HashMap::new(),
            out: Some(out),
        }
    }

    /// Prints a block for every boundary up to `now_ns`, with the model as it is now.
    pub fn tick(&mut self, now_ns: u64, model: &Model) {
        let Some(mut next) = self.next_ns else {
            self.origin_ns = now_ns;
            self.next_ns = Some(now_ns.saturating_add(self.interval_ns));
            self.previous = current_totals(model);
            return;
        };
        if now_ns < next {
            return;
        }
        let current = current_totals(model);
        while next <= now_ns {
            let block = self.block(next, model, &current);
            if let Some(out) = &mut self.out {
                // A closed stderr only stops the blocks, never the session.
                if out.write_all(block.as_bytes()).is_err() {
                    self.out = None;
                }
            }
            self.previous = current.clone();
            next = next.saturating_add(self.interval_ns);
        }
        self.next_ns = Some(next);
    }

    fn block(&self, at_ns: u64, model: &Model, current: &HashMap<u32, Totals>) -> String {
        let seconds = self.interval_ns as f64 / 1e9;
        let mut block = format!(
            "--- +{:.3}s ---\n",
            at_ns.saturating_sub(self.origin_ns) as f64 / 1e9
        );
        let mut pids: Vec<&u32> = current.keys().collect();
        pids.sort_unstable();
        for &pid in pids {
            let now = &current[&pid];
            // The comm and group names are the program's choice: escaped.
            let comm = model
                .process(pid)
                .map(|view| terminal(&view.process().comm()).into_owned())
                .unwrap_or_default();
            let Some(before) = self.previous.get(&pid) else {
                // Met during this interval (attached, forked): what it holds, no delta.
                block.push_str(&format!(
                    "pid {pid} ({comm})  {} regions {}  (new)\n",
                    now.regions,
                    bytes(now.bytes),
                ));
                continue;
            };
            let delta = now.bytes as i64 - before.bytes as i64;
            block.push_str(&format!(
                "pid {pid} ({comm})  {} regions {}  {} ({}/s)\n",
                now.regions,
                bytes(now.bytes),
                signed(delta),
                signed((delta as f64 / seconds) as i64),
            ));
            for (label, regions, delta_regions, group_bytes, delta) in top_groups(before, now) {
                block.push_str(&format!(
                    "    {label:<32} {:>+6} regions {:>10} ({}/s)  now {regions} regions {}\n",
                    delta_regions,
                    signed(delta),
                    signed((delta as f64 / seconds) as i64),
                    bytes(group_bytes),
                ));
            }
        }
        // In pid order: a hash map's order would differ from run to run, and a replay must
        // print what the live session printed.
        let mut gone: Vec<u32> = self
            .previous
            .keys()
            .copied()
            .filter(|pid| !current.contains_key(pid))
            .collect();
        gone.sort_unstable();
        for pid in gone {
            block.push_str(&format!("pid {pid} gone\n"));
        }
        block
    }
}

/// The totals of every live traced process.
fn current_totals(model: &Model) -> HashMap<u32, Totals> {
    model
        .live_processes()
        .filter(|view| view.process().traced())
        .map(|view| (view.process().pid(), Totals::of(view.layout())))
        .collect()
}

/// The named groups whose bytes changed most (up or down), largest change first.
fn top_groups(before: &Totals, now: &Totals) -> Vec<(String, u32, i64, u64, i64)> {
    let mut keys: Vec<&GroupKey> = now
        .groups
        .keys()
        .chain(before.groups.keys())
        .filter(|key| matches!(key, GroupKey::Named(..)))
        .collect();
    keys.sort_by_key(|key| key.label());
    keys.dedup();
    let mut changes: Vec<(String, u32, i64, u64, i64)> = keys
        .into_iter()
        .filter_map(|key| {
            let (regions, group_bytes) = now.groups.get(key).copied().unwrap_or_default();
            let (old_regions, old_bytes) = before.groups.get(key).copied().unwrap_or_default();
            let delta = group_bytes as i64 - old_bytes as i64;
            (delta != 0 || regions != old_regions).then(|| {
                (
                    terminal(&key.label().unwrap_or_default()).into_owned(),
                    regions,
                    regions as i64 - old_regions as i64,
                    group_bytes,
                    delta,
                )
            })
        })
        .collect();
    changes.sort_by(|a, b| b.4.abs().cmp(&a.4.abs()).then_with(|| a.0.cmp(&b.0)));
    changes.truncate(LISTED_GROUPS);
    changes
}

fn signed(value: i64) -> String {
    if value < 0 {
        format!("-{}", bytes(value.unsigned_abs()))
    } else {
        format!("+{}", bytes(value as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::model::testing::Feed;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Processes gone in one interval are listed in pid order, whatever order a hash map
    /// keeps them in: a replay prints the blocks the live session printed.
    #[test]
    fn processes_gone_are_listed_in_pid_order() {
        let out = Shared::default();
        let mut printer = IntervalPrinter::new(1_000_000_000, Box::new(out.clone()));
        let mut feed = Feed::new();
        let pids: Vec<u32> = (0..40).map(|i| 1000 + (i * 7919) % 4001).collect();
        for &pid in &pids {
            feed.mmap_anon(pid, 0x7f00_0000_0000, 4096, 3);
        }
        printer.tick(feed.time_ns, &feed.model);
        for &pid in &pids {
            feed.exit(pid, 0);
        }
        printer.tick(feed.time_ns + 2_000_000_000, &feed.model);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let gone: Vec<u32> = text
            .lines()
            .filter_map(|line| {
                line.strip_prefix("pid ")?
                    .strip_suffix(" gone")?
                    .parse()
                    .ok()
            })
            .collect();
        let mut sorted = pids.clone();
        sorted.sort_unstable();
        assert_eq!(gone, sorted, "{text}");
    }
}
