//! The patterns from the field reports, recognised in a process's report: memfd mappings that
//! outlive their fd, large anonymous blocks never freed, a starved brk, and a 64-bit image laid
//! out like a 32-bit one.

use std::collections::{BTreeMap, BTreeSet};

use crate::report::call_sites;
use crate::report::format::{bytes, hex};
use crate::report::growth;
use crate::report::schema::{Evidence, Finding, FindingKind, ProcessReport, SizeGroup};
use crate::report::ReportOptions;

/// memfd names with a known owner: (name, what it is, the known remedy).
const KNOWN_MEMFDS: &[(&str, &str, &str)] = &[(
    "doublemapper",
    ".NET's W^X double mapping: JIT code mapped twice from a memfd, rw and r-x",
    "DOTNET_EnableWriteXorExecute=0",
)];

pub(crate) fn for_process(process: &ProcessReport, options: &ReportOptions) -> Vec<Finding> {
    let mut findings = unreleased_memfds(process);
    findings.extend(unreleased_anon(process, options.large_anon_bytes));
    findings.extend(brk_exhausted(process));
    findings.extend(abi_exec_layouts(process, options.near_brk_bytes));
    findings.extend(growth::growing(process));
    findings
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

fn unreleased_memfds(process: &ProcessReport) -> Vec<Finding> {
    let mut leaks: BTreeMap<&str, MemfdLeak> = BTreeMap::new();
    // Mappings made during the trace, and the ones found at attach (a service attached to
    // after it grew holds most of its leak from before).
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
    // Oldest first, so that permissions read in the order the views were made.
    regions.sort_by_key(|region| (region.created_ns, region.start));
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
        if let Some(memfd) = &region.memfd {
            leak.memfds.insert((memfd.inode, memfd.created_ns));
        }
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
    let mut message = format!(
        "{}: {} mappings of {name} ({}, {}) from {} memfd{} outlive their closed fd, {}",
        who(process),
        leak.regions,
        bytes(leak.bytes),
        leak.perms.join(" + "),
        leak.memfds.len(),
        if leak.memfds.len() == 1 { "" } else { "s" },
        still_mapped(process),
    );
    match known {
        Some((_, pattern, remedy)) => message.push_str(&format!(
            ": {pattern}; the fd was closed but the views never unmapped. Known remedy: {remedy}"
        )),
        None => message.push_str(": close() does not free a mapped memfd, munmap does"),
    }
    if leak.at_attach > 0 {
        message.push_str(&format!(
            " ({} already mapped at attach, {} created during the trace)",
            leak.at_attach, leak.during_trace
        ));
    }
    Finding {
        kind: FindingKind::UnreleasedMemfd,
        pid: process.pid,
        message,
        also_in_folded: None,
        evidence: Evidence::UnreleasedMemfd {
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
    }
}

/// Large private anonymous blocks a syscall of this process created and nobody unmapped;
/// thread stacks and inaccessible reservations are not memory anyone leaked.
fn unreleased_anon(process: &ProcessReport, threshold: u64) -> Option<Finding> {
    let mut by_size: BTreeMap<u64, u64> = BTreeMap::new();
    let regions = process
        .unreleased
        .groups
        .iter()
        .filter(|group| group.kind == "anon")
        .flat_map(|group| &group.regions)
        .filter(|region| {
            region.len >= threshold && !region.thread_stack && !region.perms.starts_with("---")
        });
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
    let mut message = format!(
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
        message.push_str(&format!(
            "; most from {} ({})",
            top.call_site,
            call_sites::amount(top)
        ));
    }
    Some(Finding {
        kind: FindingKind::UnreleasedAnon,
        pid: process.pid,
        message,
        also_in_folded: None,
        evidence: Evidence::UnreleasedAnon {
            regions,
            bytes: total,
            threshold,
            sizes,
            top_call_site: top_call_site.map(|top| top.call_site.clone()),
        },
    })
}

fn brk_exhausted(process: &ProcessReport) -> Option<Finding> {
    let brk = &process.brk;
    let largest_ask = brk.failed.iter().map(|failure| failure.asked_bytes).max()?;
    let failed_calls = brk.failed.len() as u64;
    let mut message = format!(
        "{}: {failed_calls} brk call{} failed (asked for up to {})",
        who(process),
        if failed_calls == 1 { "" } else { "s" },
        bytes(largest_ask),
    );
    match (&brk.bounded_by, brk.start) {
        (Some(bound), Some(start)) => message.push_str(&format!(
            "; the heap from {} has {} of room ({} left), bounded by {} {} at {}",
            hex(start),
            bytes(brk.room_total.unwrap_or(0)),
            bytes(brk.room_left.unwrap_or(0)),
            display_name(&bound.name),
            bound.perms,
            hex(bound.start),
        )),
        (Some(bound), None) => message.push_str(&format!(
            "; {} left below {} {} at {}",
            bytes(brk.room_left.unwrap_or(0)),
            display_name(&bound.name),
            bound.perms,
            hex(bound.start),
        )),
        (None, _) => message
            .push_str("; nothing is mapped above the heap, so a limit (RLIMIT_DATA?) refused it"),
    }
    Some(Finding {
        kind: FindingKind::BrkExhausted,
        pid: process.pid,
        message,
        also_in_folded: None,
        evidence: Evidence::BrkExhausted {
            failed_calls,
            largest_ask,
            brk_start: brk.start,
            brk_end: brk.end,
            room_total: brk.room_total,
            room_left: brk.room_left,
            bounded_by: brk.bounded_by.clone(),
        },
    })
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
fn abi_exec_layouts(process: &ProcessReport, near_brk: u64) -> Vec<Finding> {
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
        let message = format!(
            "{}: exec of {} crossed i386 → x86_64 (personality {:#x}) but got a 32-bit style layout: {}",
            who(process),
            exec.filename,
            exec.personality,
            reasons.join("; "),
        );
        findings.push(Finding {
            kind: FindingKind::AbiExecLayout,
            pid: process.pid,
            message,
            also_in_folded: None,
            evidence: Evidence::AbiExecLayout {
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
        });
    }
    findings
}
