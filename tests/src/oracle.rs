//! Oracles for fidelity tests: the kernel's own /proc/PID/maps against the rebuilt layout,
//! and strace's per-pid syscall counts against the report's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// (perms, backing) of a byte, as both sides name it.
type Attributes = (String, String);

struct Interval {
    start: u64,
    end: u64,
    attributes: Attributes,
}

/// The same backing named the same way on both sides: /proc shows memfds as
/// `/memfd:NAME (deleted)`, anonymous memory with no name, shared anonymous memory as
/// `/dev/zero (deleted)` (the report: unnamed, of kind shared-anon).
fn normalized_backing(name: &str) -> String {
    let name = name.trim_end_matches(" (deleted)");
    let name = name
        .strip_prefix('/')
        .filter(|n| n.starts_with("memfd:"))
        .unwrap_or(name);
    match name {
        "" | "[anon]" | "/dev/zero" => String::new(),
        other => other.to_string(),
    }
}

fn kernel_layout(maps: &str) -> Vec<Interval> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.to_string();
            let name = fields.skip(3).collect::<Vec<_>>().join(" ");
            // The vsyscall page is not a VMA of the process; no syscall ever makes it.
            (name != "[vsyscall]").then(|| Interval {
                start: u64::from_str_radix(start, 16).unwrap(),
                end: u64::from_str_radix(end, 16).unwrap(),
                attributes: (perms, normalized_backing(&name)),
            })
        })
        .collect()
}

fn rebuilt_layout(process: &Value) -> Vec<Interval> {
    process["layout"]
        .as_array()
        .expect("layout")
        .iter()
        // As on the kernel's side: a process attached to has it from its /proc/PID/maps.
        .filter(|region| region["name"] != "[vsyscall]")
        .map(|region| Interval {
            start: region["start"].as_u64().unwrap(),
            end: region["end"].as_u64().unwrap(),
            attributes: (
                region["perms"].as_str().unwrap().to_string(),
                normalized_backing(region["name"].as_str().unwrap()),
            ),
        })
        .collect()
}

/// How far a rebuilt layout agrees with the kernel's.
pub struct Agreement {
    /// Bytes mapped alike (same perms, same backing) on both sides.
    pub agreeing: u64,
    /// Bytes mapped on either side.
    pub mapped: u64,
    /// The ranges that differ, one per line.
    pub differences: String,
}

impl Agreement {
    pub fn ratio(&self) -> f64 {
        self.agreeing as f64 / self.mapped.max(1) as f64
    }
}

/// Compares a process entry of the JSON report with the text of its /proc/PID/maps.
pub fn agreement(process: &Value, maps: &str) -> Agreement {
    let kernel = kernel_layout(maps);
    let rebuilt = rebuilt_layout(process);
    let mut cuts = BTreeSet::new();
    for interval in kernel.iter().chain(&rebuilt) {
        cuts.insert(interval.start);
        cuts.insert(interval.end);
    }
    let cuts: Vec<u64> = cuts.into_iter().collect();
    let at = |layout: &[Interval], address: u64| {
        // Sorted by start on both sides: the last interval starting at or below.
        let index = layout.partition_point(|i| i.start <= address);
        index
            .checked_sub(1)
            .map(|i| &layout[i])
            .filter(|i| address < i.end)
            .map(|i| i.attributes.clone())
    };
    let mut result = Agreement {
        agreeing: 0,
        mapped: 0,
        differences: String::new(),
    };
    for window in cuts.windows(2) {
        let (start, end) = (window[0], window[1]);
        let ours = at(&rebuilt, start);
        let theirs = at(&kernel, start);
        if ours.is_none() && theirs.is_none() {
            continue;
        }
        result.mapped += end - start;
        if ours == theirs {
            result.agreeing += end - start;
        } else if result.differences.len() < 4000 {
            result.differences.push_str(&format!(
                "  {start:#x}-{end:#x}: kernel {theirs:?}, memtrace {ours:?}\n"
            ));
        }
    }
    result
}

/// Per pid, (calls, failed) of each reported syscall.
pub type StraceCounts = BTreeMap<u64, BTreeMap<&'static str, (u64, u64)>>;

/// Per pid, (calls, failed) of each reported syscall in `strace -f -o` output. strace names
/// a thread by its tid: traced with `clone,clone3` too, a `CLONE_THREAD` clone's result tells
/// which process a tid belongs to, and its calls are counted there. A call split by another
/// thread's line (`<unfinished ...>` / `<... resumed>`) counts once, at its start; its result
/// is on the resumed line.
pub fn strace_counts(log: &str) -> StraceCounts {
    let lines: Vec<(u64, &str)> = log
        .lines()
        .filter_map(|line| {
            let (tid, rest) = line.split_once(' ')?;
            Some((tid.trim().parse().ok()?, rest.trim_start()))
        })
        .collect();
    // A first pass, because a new thread often makes its first calls before strace prints
    // the result of the clone that made it: its lines come before the line that names it.
    let creator = thread_creators(&lines);
    let process_of = |mut tid: u64| {
        while let Some(&parent) = creator.get(&tid) {
            tid = parent;
        }
        tid
    };
    let mut counts = StraceCounts::new();
    for &(tid, rest) in &lines {
        let (name, starts_call) = call_name(rest);
        let Some(reported) = reported_name(name) else {
            continue;
        };
        let entry = counts
            .entry(process_of(tid))
            .or_default()
            .entry(reported)
            .or_default();
        if starts_call {
            entry.0 += 1;
        }
        if failed(rest) {
            entry.1 += 1;
        }
    }
    counts
}

/// Whether a line of `strace -f` ends a call that failed: its result, after the closing
/// parenthesis and the spaces strace aligns results with, is `-1`.
fn failed(rest: &str) -> bool {
    rest.match_indices("= -1").any(|(at, _)| {
        let before = rest[..at].trim_end_matches(' ');
        let after = &rest[at + "= -1".len()..];
        before.ends_with(')') && (after.is_empty() || after.starts_with(' '))
    })
}

/// The syscall a line of `strace -f` is about, and whether the line starts it (false for
/// `<... NAME resumed>`).
fn call_name(rest: &str) -> (&str, bool) {
    match rest.strip_prefix("<... ") {
        Some(resumed) => (resumed.split_whitespace().next().unwrap_or(""), false),
        None => (rest.split('(').next().unwrap_or(""), true),
    }
}

/// Each thread made by a `CLONE_THREAD` clone, with the tid that made it.
fn thread_creators(lines: &[(u64, &str)]) -> BTreeMap<u64, u64> {
    let mut creator = BTreeMap::new();
    // Threads whose CLONE_THREAD clone was split, by the tid that made it.
    let mut cloning_thread: BTreeSet<u64> = BTreeSet::new();
    for &(tid, rest) in lines {
        let (name, starts_call) = call_name(rest);
        if name != "clone" && name != "clone3" {
            continue;
        }
        let thread = if starts_call {
            rest.contains("CLONE_THREAD")
        } else {
            cloning_thread.remove(&tid)
        };
        if thread && rest.ends_with("<unfinished ...>") {
            cloning_thread.insert(tid);
        } else if let Some(child) = rest
            .rsplit_once(") = ")
            .and_then(|(_, result)| result.split_whitespace().next())
            .and_then(|result| result.parse::<u64>().ok())
            .filter(|_| thread)
        {
            creator.insert(child, tid);
        }
    }
    creator
}

/// The `-e` filter that gives [`strace_counts`] what it needs. mseal is left out: strace 6.1
/// (Debian 12) does not know its name, and shows it as `syscall_0x1ce` when it traces all.
pub const STRACE_FILTER: &str = "trace=%memory,memfd_create,execve,execveat,clone,clone3,\
shmat,shmdt,io_setup,io_destroy,pkey_mprotect,remap_file_pages";

fn reported_name(strace_name: &str) -> Option<&'static str> {
    Some(match strace_name {
        "mmap" | "mmap2" | "old_mmap" => "mmap",
        "munmap" => "munmap",
        "brk" => "brk",
        "mremap" => "mremap",
        "mprotect" => "mprotect",
        "memfd_create" => "memfd_create",
        "execve" | "execveat" => "execve",
        // ia32's ipc(2) subcalls are shown as the calls they make.
        "shmat" => "shmat",
        "shmdt" => "shmdt",
        "io_setup" => "io_setup",
        "io_destroy" => "io_destroy",
        "pkey_mprotect" => "pkey_mprotect",
        // 462 in both ABIs, unnamed before strace 6.10.
        "mseal" | "syscall_0x1ce" => "mseal",
        "remap_file_pages" => "remap_file_pages",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// strace printed the new thread's mmap before the clone3 result that names the thread.
    #[test]
    fn a_thread_seen_before_its_clone_result_counts_for_its_process() {
        let log = "\
100 execve(\"./race\", [\"./race\"], 0x7ffc /* 1 var */) = 0
100 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, stack=0x7f, stack_size=0x7fff00}, 88 <unfinished ...>
101 mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
100 <... clone3 resumed>) = 101
101 <... mmap resumed>) = 0x7f0000000000
101 munmap(0x7f0000000000, 16384) = -1 EINVAL (Invalid argument)
101 munmap(0x7f0000004000, 4096)      = -1 EPERM (Operation not permitted)
101 mprotect(0x7f0000004000, 4096, PROT_READ)      = 0
";
        let counts = strace_counts(log);
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [100]);
        assert_eq!(counts[&100]["mmap"], (1, 0));
        assert_eq!(counts[&100]["munmap"], (2, 2));
        assert_eq!(counts[&100]["mprotect"], (1, 0));
        assert_eq!(counts[&100]["execve"], (1, 0));
    }
}
