//! The findings: evidence of a problem in a process's report. Each kind is a function of one
//! [`ProcessReport`], so that whatever else watches processes (the agent's triggers, its
//! metrics) fires on the same conditions as the report.
//!
//! A finding needs evidence of a problem, not state: growth ([`growing`]); a known leak
//! pattern (a memfd mapped both writable and executable whose fds were closed, .NET's W^X
//! double mapping: [`unreleased_memfds`]); exhaustion or failure (a refused brk, an mmap or
//! mremap refused with ENOMEM, a map count near `vm.max_map_count`, an address space near
//! `RLIMIT_AS`); or, for a process that has exited, large allocations it never released
//! ([`unreleased_anon`]). Memory a live process still has mapped at the end of the trace is
//! state: a browser's shared memory between its processes, a JIT's reserved heap, a database's
//! buffers. Each finding says what was seen and what to do.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::call_sites;
use crate::report::format::{bytes, hex};
use crate::report::schema::{
    Evidence, Finding, FindingKind, ProcessReport, SizeGroup, UnreleasedRegion,
};
use crate::report::ReportOptions;

pub use crate::report::growth::growing;

/// memfd names with a known owner: (name, what it is, the known remedy).
const KNOWN_MEMFDS: &[(&str, &str, &str)] = &[(
    "doublemapper",
    ".NET's W^X double mapping: JIT code mapped twice from a memfd, rw and r-x",
    "DOTNET_EnableWriteXorExecute=0",
)];

/// Exhaustion is flagged from this share of a limit on.
pub const NEAR_LIMIT: f64 = 0.9;

/// Every finding of one process, in the order [`FindingKind::ALL`] lists the kinds.
pub fn for_process(process: &ProcessReport, options: &ReportOptions) -> Vec<Finding> {
    let mut findings = unreleased_memfds(process);
    findings.extend(unreleased_anon(process, options.large_anon_bytes));
    findings.extend(brk_exhausted(process));
    findings.extend(map_failed(process));
    findings.extend(map_count_near_limit(process));
    findings.extend(address_space_near_limit(process));
    findings.extend(abi_exec_layouts(process, options.near_brk_bytes));
    findings.extend(growing(process));
    findings
}

/// Whether the findings read this unreleased region (its group's totals aside): the regions
/// [`unreleased_memfds`] and [`unreleased_anon`] look at. The streamed JSON's reports keep
/// only these ([`crate::report::stream`]); a test holds its findings to the whole report's.
pub(crate) fn reads(region: &UnreleasedRegion, options: &ReportOptions) -> bool {
    region.memfd_fd_closed == Some(true) || large_anon(region, options.large_anon_bytes)
}

/// A private anonymous block at least `threshold` large, not a thread stack nor an
/// inaccessible reservation: what [`unreleased_anon`] counts, of its group's regions.
fn large_anon(region: &UnreleasedRegion, threshold: u64) -> bool {
    region.kind == "anon"
        && region.len >= threshold
        && !region.thread_stack
        && !region.perms.starts_with("---")
}

/// A finding of `kind` about `process`: what was seen, then what to do.
pub(crate) fn finding(
    kind: FindingKind,
    process: &ProcessReport,
    seen: String,
    what_to_do: String,
    evidence: Evidence,
) -> Finding {
    Finding {
        kind,
        pid: process.pid,
        message: format!("{seen}. What to do: {what_to_do}"),
        what_to_do,
        also_in_folded: None,
        evidence,
    }
}

/// The bytes a process had mapped at its exit (before its layout was compacted) or now.
pub fn mapped_bytes(process: &ProcessReport) -> u64 {
    process
        .timeline
        .bytes
        .last()
        .copied()
        .unwrap_or_else(|| process.summary.iter().map(|kind| kind.bytes).sum())
}

fn percent(part: u64, whole: u64) -> f64 {
    (part as f64 * 10_000.0 / whole.max(1) as f64).round() / 100.0
}

fn who(process: &ProcessReport) -> String {
    format!("pid {} ({})", process.pid, process.comm)
}

fn still_mapped(process: &ProcessReport) -> &'static str {
    if process.alive {
        "still mapped at the end of the trace"
    } else {
        "still mapped at exit"
    }
}

#[derive(Default)]
struct MemfdLeak {
    regions: u64,
    bytes: u64,
    perms: Vec<String>,
    memfds: BTreeSet<(u64, u64)>,
    first_created_ns: u64,
    last_created_ns: u64,
    /// Of `regions`: found mapped at attach, and created during the trace.
    at_attach: u64,
    during_trace: u64,
}

/// A view's memfd: its inode and creation when the model knows it, else the view itself.
type MemfdKey = (u64, u64);

/// The W^X leak pattern: memfds whose views, outliving every fd, are writable in one place and
/// executable in another (or both in one), named as the process maps them. JIT code written
/// through one view and run through the other; a JIT that frees the code but not the views
/// leaks both. Shared memory mapped read and write (a browser's between its processes) is
/// not this pattern. Found in the views made during the trace and those found at attach: a
/// service attached to after it grew holds most of its leak from before, and is flagged
/// without growing.
pub fn unreleased_memfds(process: &ProcessReport) -> Vec<Finding> {
    let during: BTreeSet<(u64, u64)> = process
        .unreleased
        .groups
        .iter()
        .flat_map(|group| &group.regions)
        .map(|region| (region.start, region.created_ns))
        .collect();
    let mut regions: Vec<_> = process
        .unreleased
        .groups
        .iter()
        .chain(&process.held_since_attach)
        .flat_map(|group| &group.regions)
        .filter(|region| region.memfd_fd_closed == Some(true))
        .collect();
    let key = |region: &crate::report::schema::UnreleasedRegion| -> MemfdKey {
        region
            .memfd
            .as_ref()
            .map_or((0, region.start), |memfd| (memfd.inode, memfd.created_ns))
    };
    // Which memfds have a writable view and an executable one.
    let mut views: BTreeMap<MemfdKey, (bool, bool)> = BTreeMap::new();
    for region in &regions {
        let perms = region.perms.as_bytes();
        let view = views.entry(key(region)).or_default();
        view.0 |= perms.get(1) == Some(&b'w');
        view.1 |= perms.get(2) == Some(&b'x');
    }
    regions.retain(|region| views.get(&key(region)) == Some(&(true, true)));
    // Oldest first, so that permissions read in the order the views were made.
    regions.sort_by_key(|region| (region.created_ns, region.start));
    let mut leaks: BTreeMap<&str, MemfdLeak> = BTreeMap::new();
    for region in regions {
        let leak = leaks
            .entry(region.name.as_str())
            .or_insert_with(|| MemfdLeak {
                first_created_ns: region.created_ns,
                ..MemfdLeak::default()
            });
        leak.regions += 1;
        leak.bytes += region.len;
        if during.contains(&(region.start, region.created_ns)) {
            leak.during_trace += 1;
        } else {
            leak.at_attach += 1;
        }
        if !leak.perms.contains(&region.perms) {
            leak.perms.push(region.perms.clone());
        }
        leak.memfds.insert(key(region));
        leak.first_created_ns = leak.first_created_ns.min(region.created_ns);
        leak.last_created_ns = leak.last_created_ns.max(region.created_ns);
    }
    let mut leaks: Vec<(&str, MemfdLeak)> = leaks.into_iter().collect();
    leaks.sort_by_key(|(_, leak)| std::cmp::Reverse(leak.bytes));
    leaks
        .into_iter()
        .map(|(name, leak)| memfd_finding(process, name, leak))
        .collect()
}

fn memfd_finding(process: &ProcessReport, name: &str, leak: MemfdLeak) -> Finding {
    let bare_name = name.strip_prefix("memfd:").unwrap_or(name);
    let known = KNOWN_MEMFDS
        .iter()
        .find(|(known_name, _, _)| *known_name == bare_name);
    let mut seen = format!(
        "{}: {} mappings of {name} ({}, {}) from {} memfd{} mapped writable and executable outlive their closed fd, {}",
        who(process),
        leak.regions,
        bytes(leak.bytes),
        leak.perms.join(" + "),
        leak.memfds.len(),
        if leak.memfds.len() == 1 { "" } else { "s" },
        still_mapped(process),
    );
    match known {
        Some((_, pattern, _)) => seen.push_str(&format!(
            ": {pattern}; the fd was closed but the views never unmapped"
        )),
        None => seen.push_str(
            ": a W^X double mapping (code written through one view, run through the other) whose views are never unmapped",
        ),
    }
    if leak.at_attach > 0 {
        seen.push_str(&format!(
            " ({} already mapped at attach, {} created during the trace)",
            leak.at_attach, leak.during_trace
        ));
    }
    let what_to_do = match known {
        Some((_, _, remedy)) => format!(
            "Known remedy: {remedy} (no double mapping); or free the code's views with munmap, as close() does not"
        ),
        None => "munmap both views when the code they hold is freed: close() does not free a mapped memfd, munmap does".to_owned(),
    };
    finding(
        FindingKind::UnreleasedMemfd,
        process,
        seen,
        what_to_do,
        Evidence::UnreleasedMemfd {
            name: name.to_owned(),
            regions: leak.regions,
            bytes: leak.bytes,
            memfds: leak.memfds.len() as u64,
            perms: leak.perms,
            first_created_ns: leak.first_created_ns,
            last_created_ns: leak.last_created_ns,
            at_attach: leak.at_attach,
            during_trace: leak.during_trace,
            pattern: known.map(|(_, pattern, _)| (*pattern).to_owned()),
            remedy: known.map(|(_, _, remedy)| (*remedy).to_owned()),
        },
    )
}

/// Large private anonymous blocks a syscall of an exited process created and nobody unmapped
/// before its exit; thread stacks and inaccessible reservations are not memory anyone leaked.
/// A live process's blocks are its state (a database's buffers, a JIT's heap): they are a
/// finding only when they grow ([`growing`]).
pub fn unreleased_anon(process: &ProcessReport, threshold: u64) -> Option<Finding> {
    if process.alive {
        return None;
    }
    let mut by_size: BTreeMap<u64, u64> = BTreeMap::new();
    let regions = process
        .unreleased
        .groups
        .iter()
        .filter(|group| group.kind == "anon")
        .flat_map(|group| &group.regions)
        .filter(|region| large_anon(region, threshold));
    for region in regions {
        *by_size.entry(region.len).or_default() += 1;
    }
    if by_size.is_empty() {
        return None;
    }
    let sizes = SizeGroup::from_counts(by_size);
    let regions: u64 = sizes.iter().map(|group| group.count).sum();
    let total: u64 = sizes.iter().map(|group| group.bytes).sum();
    const LISTED: usize = 4;
    let mut terms: Vec<String> = sizes
        .iter()
        .take(LISTED)
        .map(|group| format!("{} × {}", group.count, bytes(group.size)))
        .collect();
    if sizes.len() > LISTED {
        terms.push(format!("{} more sizes", sizes.len() - LISTED));
    }
    let mut seen = format!(
        "{}: {} = {} of anonymous mappings (≥ {} each) created by its own mmap and {}",
        who(process),
        terms.join(" + "),
        bytes(total),
        bytes(threshold),
        still_mapped(process),
    );
    // The call site that owns most unreleased anonymous bytes, when stacks were sampled (not
    // the loader's, whose mappings are files).
    let top_call_site = process
        .unreleased
        .by_stack
        .iter()
        .find(|site| site.kinds.contains(&"anon"));
    if let Some(top) = top_call_site {
        seen.push_str(&format!(
            "; most from {} ({})",
            top.call_site,
            call_sites::amount(top)
        ));
    }
    let what_to_do = match top_call_site {
        Some(_) => "free these blocks where that call site's caller is done with them; in a long-running process of the same program they accumulate",
        None => "trace it with call stacks (the default; --stack-min-size) to name the call site that never frees these blocks",
    };
    Some(finding(
        FindingKind::UnreleasedAnon,
        process,
        seen,
        what_to_do.to_owned(),
        Evidence::UnreleasedAnon {
            regions,
            bytes: total,
            threshold,
            sizes,
            top_call_site: top_call_site.map(|top| top.call_site.clone()),
        },
    ))
}

/// brk calls the kernel refused: a heap that cannot grow.
pub fn brk_exhausted(process: &ProcessReport) -> Option<Finding> {
    let brk = &process.brk;
    let largest_ask = brk.failed.iter().map(|failure| failure.asked_bytes).max()?;
    let failed_calls = brk.failed.len() as u64;
    let mut seen = format!(
        "{}: {failed_calls} brk call{} failed (asked for up to {})",
        who(process),
        if failed_calls == 1 { "" } else { "s" },
        bytes(largest_ask),
    );
    let bounded = brk.bounded_by.is_some();
    match (&brk.bounded_by, brk.start) {
        (Some(bound), Some(start)) => seen.push_str(&format!(
            "; the heap from {} has {} of room ({} left), bounded by {} {} at {}",
            hex(start),
            bytes(brk.room_total.unwrap_or(0)),
            bytes(brk.room_left.unwrap_or(0)),
            display_name(&bound.name),
            bound.perms,
            hex(bound.start),
        )),
        (Some(bound), None) => seen.push_str(&format!(
            "; {} left below {} {} at {}",
            bytes(brk.room_left.unwrap_or(0)),
            display_name(&bound.name),
            bound.perms,
            hex(bound.start),
        )),
        (None, _) => seen
            .push_str("; nothing is mapped above the heap, so a limit (RLIMIT_DATA?) refused it"),
    }
    let what_to_do = if bounded {
        "malloc falls back to mmap when brk fails, an allocator of its own that uses brk only (bash's) cannot: find why the mapping above is so close (an exec from another ABI? see its exec lines), or link the program with malloc"
    } else {
        "raise RLIMIT_DATA (ulimit -d, LimitDATA= in a systemd unit), or find what fills the heap"
    };
    Some(finding(
        FindingKind::BrkExhausted,
        process,
        seen,
        what_to_do.to_owned(),
        Evidence::BrkExhausted {
            failed_calls,
            largest_ask,
            brk_start: brk.start,
            brk_end: brk.end,
            room_total: brk.room_total,
            room_left: brk.room_left,
            bounded_by: brk.bounded_by.clone(),
        },
    ))
}

/// mmap and mremap calls refused with ENOMEM: the address space, the map count or memory ran
/// out, and the program's next allocation may fail as this one did. The limits, when known,
/// tell which.
pub fn map_failed(process: &ProcessReport) -> Option<Finding> {
    let failures = &process.map_failures;
    let first = failures.examples.first()?;
    let limits = process.limits.unwrap_or_default();
    let max_map_count = (limits.max_map_count > 0).then_some(limits.max_map_count);
    let near_count =
        max_map_count.is_some_and(|max| first.map_count as f64 >= NEAR_LIMIT * max as f64);
    let near_address_space = limits.address_space.is_some_and(|limit| {
        first.mapped_bytes.saturating_add(first.asked_bytes) as f64 >= NEAR_LIMIT * limit as f64
    });
    let exhausted = if near_address_space {
        "address-space"
    } else if near_count {
        "map-count"
    } else {
        "memory"
    };
    let calls: Vec<String> = ["mmap", "mremap"]
        .into_iter()
        .filter_map(|syscall| {
            let count = failures
                .examples
                .iter()
                .filter(|failure| failure.syscall == syscall)
                .count();
            (count > 0).then(|| syscall.to_owned())
        })
        .collect();
    let mut seen = format!(
        "{}: {} {} call{} failed with ENOMEM (asked for up to {}); at the first, {} was mapped in {} mappings",
        who(process),
        failures.count,
        calls.join("/"),
        if failures.count == 1 { "" } else { "s" },
        bytes(failures.largest_ask),
        bytes(first.mapped_bytes),
        first.map_count,
    );
    if let Some(limit) = limits.address_space {
        seen.push_str(&format!(", RLIMIT_AS {}", bytes(limit)));
    }
    if let Some(max) = max_map_count {
        seen.push_str(&format!(", vm.max_map_count {max}"));
    }
    let what_to_do = match exhausted {
        "address-space" => "the address-space limit refused it: raise RLIMIT_AS (ulimit -v, LimitAS= in a systemd unit), or find what fills the address space (the largest groups above; reservations count too)".to_owned(),
        "map-count" => format!(
            "the process ran out of mappings: raise vm.max_map_count (now {}; sysctl -w vm.max_map_count=262144), or find what makes so many small mappings",
            max_map_count.unwrap_or(0)
        ),
        _ => "the kernel had no memory for it: see the cgroup's memory.max, vm.overcommit_memory and what the largest processes hold; a program that does not handle a failed allocation crashes next".to_owned(),
    };
    Some(finding(
        FindingKind::MapFailed,
        process,
        seen,
        what_to_do,
        Evidence::MapFailed {
            failed_calls: failures.count,
            largest_ask: failures.largest_ask,
            first_time_ns: first.time_ns,
            mapped_bytes: first.mapped_bytes,
            map_count: first.map_count,
            max_map_count,
            address_space_limit: limits.address_space,
            exhausted,
        },
    ))
}

/// A map count above [`NEAR_LIMIT`] of `vm.max_map_count`: past the limit every mmap,
/// mprotect or munmap that splits a mapping fails with ENOMEM, however much memory is free.
/// .NET's W^X double mappings fail so in production ("Failed to create RW mapping for RX
/// memory", dotnet/runtime#97316).
pub fn map_count_near_limit(process: &ProcessReport) -> Option<Finding> {
    let max = process.limits?.max_map_count;
    if max == 0 || (process.map_count as f64) < NEAR_LIMIT * max as f64 {
        return None;
    }
    let share = percent(process.map_count, max);
    let seen = format!(
        "{}: {} mappings, {share:.0}% of vm.max_map_count ({max}), {}: at the limit mmap, mprotect and munmap fail with ENOMEM whatever memory is free (.NET's W^X double mappings fail so: \"Failed to create RW mapping for RX memory\")",
        who(process),
        process.map_count,
        if process.alive { "now" } else { "at exit" },
    );
    let what_to_do = format!(
        "raise vm.max_map_count (sysctl -w vm.max_map_count={}, or in /etc/sysctl.d), or find what makes so many mappings (the groups with the most regions)",
        (max * 4).max(262_144)
    );
    Some(finding(
        FindingKind::MapCountNearLimit,
        process,
        seen,
        what_to_do,
        Evidence::MapCountNearLimit {
            map_count: process.map_count,
            max_map_count: max,
            percent: share,
        },
    ))
}

/// An address space above [`NEAR_LIMIT`] of its `RLIMIT_AS`: the next mapping that does not
/// fit fails with ENOMEM.
pub fn address_space_near_limit(process: &ProcessReport) -> Option<Finding> {
    let limit = process.limits?.address_space?;
    let mapped = mapped_bytes(process);
    if (mapped as f64) < NEAR_LIMIT * limit as f64 {
        return None;
    }
    let share = percent(mapped, limit);
    let seen = format!(
        "{}: {} mapped, {share:.0}% of its RLIMIT_AS ({}), {}",
        who(process),
        bytes(mapped),
        bytes(limit),
        if process.alive { "now" } else { "at exit" },
    );
    Some(finding(
        FindingKind::AddressSpaceNearLimit,
        process,
        seen,
        "raise RLIMIT_AS (ulimit -v, LimitAS= in a systemd unit), or find what fills the address space: reservations (---p) count as much as memory".to_owned(),
        Evidence::AddressSpaceNearLimit {
            mapped_bytes: mapped,
            address_space_limit: limit,
            percent: share,
        },
    ))
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "an anonymous mapping"
    } else {
        name
    }
}

/// After an i386 → x86_64 exec, a 64-bit layout has its libraries and interpreter far above
/// the executable and the heap; the RHEL 6 exec-shield bug placed them like a 32-bit process's.
pub fn abi_exec_layouts(process: &ProcessReport, near_brk: u64) -> Vec<Finding> {
    let mut findings = Vec::new();
    for exec in &process.execs {
        if exec.from_abi != "i386" || exec.to_abi != "x86_64" {
            continue;
        }
        let mut reasons = Vec::new();
        if exec.interp_base != 0 && exec.interp_base < exec.exe_base {
            reasons.push(format!(
                "the interpreter at {} lies below the executable at {}",
                hex(exec.interp_base),
                hex(exec.exe_base)
            ));
        }
        if let Some(lowest) = exec.lowest_library.filter(|&lowest| lowest < exec.exe_base) {
            reasons.push(format!(
                "libraries from {} lie below the executable at {}",
                hex(lowest),
                hex(exec.exe_base)
            ));
        }
        if let Some(above) = &exec.above_brk {
            let gap = above.start.saturating_sub(exec.brk_start);
            if gap <= near_brk {
                reasons.push(format!(
                    "{} is mapped {} above the brk start {}, leaving the heap no room",
                    display_name(&above.name),
                    bytes(gap),
                    hex(exec.brk_start)
                ));
            }
        }
        if reasons.is_empty() {
            continue;
        }
        let seen = format!(
            "{}: exec of {} crossed i386 → x86_64 (personality {:#x}) but got a 32-bit style layout: {}",
            who(process),
            exec.filename,
            exec.personality,
            reasons.join("; "),
        );
        findings.push(finding(
            FindingKind::AbiExecLayout,
            process,
            seen,
            "start the 64-bit program from a 64-bit parent, or run a kernel that places a 64-bit image by its own ABI (the RHEL 6 exec-shield bug)".to_owned(),
            Evidence::AbiExecLayout {
                filename: exec.filename.clone(),
                from_abi: exec.from_abi,
                to_abi: exec.to_abi,
                personality: exec.personality,
                exe_base: exec.exe_base,
                interp_base: exec.interp_base,
                lowest_library: exec.lowest_library,
                brk_start: exec.brk_start,
                above_brk: exec.above_brk.clone(),
                reasons,
            },
        ));
    }
    findings
}
