//! Kernel mode's report, as data (the JSON output field for field) and as text: outstanding
//! allocations by call site and by cache, their change over the session, the kernel's own
//! totals at start and end, and the call sites that keep growing.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{is_growing, KernelModel, Point};
use crate::event::kernel_snapshot::source_name;
use crate::report::{format, Source, REPORT_VERSION};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelReportFile {
    pub version: u32,
    pub source: Source,
    pub kernel: KernelReport,
    pub findings: Vec<KernelFinding>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelReport {
    /// From the first snapshot (taken as the programs attached) to the last.
    pub duration_ns: u64,
    pub snapshots: usize,
    /// Allocations the kernel side saw, and frees of allocations it was keeping.
    pub allocations: u64,
    pub frees: u64,
    /// Allocations the outstanding table had no room for, missing from this report.
    pub table_full: u64,
    /// Allocations the call-site table had no room for, missing from this report.
    pub sites_full: u64,
    pub stacks_lost: u64,
    pub outstanding: u64,
    pub outstanding_bytes: u64,
    pub call_sites: Vec<CallSiteReport>,
    pub caches: Vec<CacheReport>,
    pub totals: Vec<TotalReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallSiteReport {
    /// `alloc_pipe_info+0x4d`, or the address when it has no symbol.
    pub call_site: String,
    pub address: u64,
    /// The module the call site is in; `null` for the kernel image.
    pub module: Option<String>,
    pub cache: String,
    /// `kmalloc`, `kmem_cache`, `pages` or `percpu`.
    pub allocator: &'static str,
    pub outstanding: u64,
    pub bytes: u64,
    /// Outstanding at the first snapshot, and the change since.
    pub first_outstanding: u64,
    pub change: i64,
    pub change_bytes: i64,
    pub growing: bool,
    pub stacks: Vec<StackReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackReport {
    pub outstanding: u64,
    pub frames: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheReport {
    pub cache: String,
    pub outstanding: u64,
    pub bytes: u64,
    /// The cache's active objects system-wide (`/proc/slabinfo`) at start and end, when the
    /// kernel has a cache of that name.
    pub slab_active_start: Option<u64>,
    pub slab_active_end: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TotalReport {
    /// A `/proc/meminfo` field.
    pub name: String,
    pub start: u64,
    pub end: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelFinding {
    pub kind: &'static str,
    pub message: String,
    pub call_site: String,
    pub cache: String,
    pub first_outstanding: u64,
    pub outstanding: u64,
    pub bytes: u64,
}

pub fn build(model: &KernelModel, source: Source) -> KernelReportFile {
    let times = model.snapshot_times();
    let duration_ns = match (times.first(), times.last()) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    };
    let mut call_sites = Vec::new();
    let mut caches: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (key, points) in model.series() {
        let first = points.first().copied().unwrap_or_default();
        let last = points.last().copied().unwrap_or_default();
        if last.count == 0 && !is_growing(points) {
            continue;
        }
        let cache = caches.entry(key.cache.clone()).or_default();
        cache.0 += last.count;
        cache.1 += last.bytes;
        call_sites.push(CallSiteReport {
            call_site: if key.function.is_empty() {
                named_address(key.call_site)
            } else {
                key.function.clone()
            },
            address: key.call_site,
            module: (!key.module.is_empty()).then(|| key.module.clone()),
            cache: key.cache.clone(),
            allocator: source_name(key.source),
            outstanding: last.count,
            bytes: last.bytes,
            first_outstanding: first.count,
            change: change(first, last, |p| p.count),
            change_bytes: change(first, last, |p| p.bytes),
            growing: is_growing(points),
            stacks: model
                .stacks_of(key)
                .into_iter()
                .map(|(outstanding, frames)| StackReport {
                    outstanding,
                    frames,
                })
                .collect(),
        });
    }
    call_sites.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| b.outstanding.cmp(&a.outstanding))
            .then_with(|| a.call_site.cmp(&b.call_site))
    });
    let (first_slabs, last_slabs) = model.slabs();
    let active = |slabs: &[crate::event::kernel_snapshot::SlabCache], name: &str| {
        slabs
            .iter()
            .find(|slab| slab.name == name)
            .map(|slab| slab.active_objects)
    };
    let mut caches: Vec<CacheReport> = caches
        .into_iter()
        .map(|(cache, (outstanding, bytes))| CacheReport {
            slab_active_start: active(first_slabs, &cache),
            slab_active_end: active(last_slabs, &cache),
            cache,
            outstanding,
            bytes,
        })
        .collect();
    caches.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.cache.cmp(&b.cache)));
    let (first_meminfo, last_meminfo) = model.meminfo();
    let totals = last_meminfo
        .iter()
        .map(|end| TotalReport {
            name: end.name.clone(),
            start: first_meminfo
                .iter()
                .find(|start| start.name == end.name)
                .map_or(end.bytes, |start| start.bytes),
            end: end.bytes,
        })
        .collect();
    let findings = call_sites
        .iter()
        .filter(|site| site.growing)
        .map(|site| KernelFinding {
            kind: "kernel-growing",
            message: format!(
                "{}{} ({}): outstanding {} grew from {} to {} over {:.1} s (+{}), rising in most intervals",
                site.call_site,
                site.module.as_ref().map(|m| format!(" [{m}]")).unwrap_or_default(),
                site.cache,
                site.allocator,
                site.first_outstanding,
                site.outstanding,
                duration_ns as f64 / 1e9,
                format::bytes(site.change_bytes.max(0) as u64),
            ),
            call_site: site.call_site.clone(),
            cache: site.cache.clone(),
            first_outstanding: site.first_outstanding,
            outstanding: site.outstanding,
            bytes: site.bytes,
        })
        .collect();
    let counters = model.counters();
    KernelReportFile {
        version: REPORT_VERSION,
        source,
        kernel: KernelReport {
            duration_ns,
            snapshots: times.len(),
            allocations: counters.allocs,
            frees: counters.frees,
            table_full: counters.table_full,
            sites_full: counters.sites_full,
            stacks_lost: counters.stack_lost,
            outstanding: call_sites.iter().map(|site| site.outstanding).sum(),
            outstanding_bytes: call_sites.iter().map(|site| site.bytes).sum(),
            call_sites,
            caches,
            totals,
        },
        findings,
    }
}

fn change(first: Point, last: Point, value: impl Fn(Point) -> u64) -> i64 {
    value(last) as i64 - value(first) as i64
}

fn named_address(address: u64) -> String {
    if address == 0 {
        "(no call site)".to_owned()
    } else {
        format::hex(address)
    }
}

pub fn render_json(report: &KernelReportFile) -> String {
    // Only strings, integers, options and vectors: serde_json cannot fail on these.
    serde_json::to_string_pretty(report).unwrap_or_else(|error| {
        serde_json::json!({ "error": format!("report serialization failed: {error}") }).to_string()
    })
}

/// Rows shown per table in the text report; JSON has them all.
const TEXT_ROWS: usize = 25;

fn signed_count(value: i64) -> String {
    if value > 0 {
        format!("+{value}")
    } else {
        value.to_string()
    }
}

fn signed_bytes(value: i64) -> String {
    let magnitude = format::bytes(value.unsigned_abs());
    match value {
        v if v > 0 => format!("+{magnitude}"),
        v if v < 0 => format!("-{magnitude}"),
        _ => magnitude,
    }
}

pub fn render_text(report: &KernelReportFile) -> String {
    let k = &report.kernel;
    let mut lines = vec![format!(
        "Kernel allocations  {:.1} s, {} snapshots ({})",
        k.duration_ns as f64 / 1e9,
        k.snapshots,
        report.source.as_str()
    )];
    lines.push(format!(
        "  outstanding: {} allocations, {}   (seen: {} allocations, {} of them freed)",
        k.outstanding,
        format::bytes(k.outstanding_bytes),
        k.allocations,
        k.frees
    ));
    if k.table_full > 0 {
        lines.push(format!(
            "  WARNING: {} allocations not tracked: the outstanding table was full (raise --max-outstanding)",
            k.table_full
        ));
    }
    if k.sites_full > 0 {
        lines.push(format!(
            "  WARNING: {} allocations not counted: the call-site table was full",
            k.sites_full
        ));
    }
    if k.stacks_lost > 0 {
        lines.push(format!("  {} stacks could not be taken", k.stacks_lost));
    }
    lines.push("  by call site:".to_owned());
    let mut rows = vec![[
        "call site",
        "module",
        "cache",
        "count",
        "bytes",
        "change",
        "change bytes",
    ]
    .map(String::from)
    .to_vec()];
    for site in k.call_sites.iter().take(TEXT_ROWS) {
        rows.push(vec![
            site.call_site.clone(),
            site.module.clone().unwrap_or_else(|| "-".to_owned()),
            site.cache.clone(),
            site.outstanding.to_string(),
            format::bytes(site.bytes),
            signed_count(site.change),
            signed_bytes(site.change_bytes),
        ]);
    }
    let mut stack_lines = Vec::new();
    for site in k.call_sites.iter().take(TEXT_ROWS) {
        for stack in site.stacks.iter().take(2) {
            stack_lines.push(format!(
                "    {} × {}: {}",
                stack.outstanding,
                site.call_site,
                stack.frames.join(" ← ")
            ));
        }
    }
    lines.extend(format::table(&rows, "    ", &[0, 1, 2]));
    if k.call_sites.len() > TEXT_ROWS {
        lines.push(format!(
            "    ... {} more call sites (--format json lists them all)",
            k.call_sites.len() - TEXT_ROWS
        ));
    }
    if !stack_lines.is_empty() {
        lines.push("  stacks:".to_owned());
        lines.extend(stack_lines);
    }
    lines.push("  by cache:".to_owned());
    let mut rows = vec![["cache", "count", "bytes", "slabinfo active start", "end"]
        .map(String::from)
        .to_vec()];
    let optional = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    for cache in k.caches.iter().take(TEXT_ROWS) {
        rows.push(vec![
            cache.cache.clone(),
            cache.outstanding.to_string(),
            format::bytes(cache.bytes),
            optional(cache.slab_active_start),
            optional(cache.slab_active_end),
        ]);
    }
    lines.extend(format::table(&rows, "    ", &[0]));
    lines.push("  kernel totals (/proc/meminfo):".to_owned());
    let mut rows = vec![["", "start", "end", "change"].map(String::from).to_vec()];
    for total in &k.totals {
        rows.push(vec![
            total.name.clone(),
            format::bytes(total.start),
            format::bytes(total.end),
            signed_bytes(total.end as i64 - total.start as i64),
        ]);
    }
    lines.extend(format::table(&rows, "    ", &[0]));
    if !report.findings.is_empty() {
        lines.push(String::new());
        lines.push("Findings".to_owned());
        for finding in &report.findings {
            lines.push(format!("  [{}] {}", finding.kind, finding.message));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::kernel_snapshot::{
        KernelGroup, KernelModeSource, KernelSnapshot, MeminfoValue,
    };

    fn snapshot(count: u64) -> KernelSnapshot {
        KernelSnapshot {
            groups: vec![KernelGroup {
                source: KernelModeSource::Kmalloc,
                call_site: 0xffff_ffff_8123_454d,
                function: "alloc_pipe_info+0x4d".into(),
                module: String::new(),
                cache: "kmalloc-1k".into(),
                count,
                bytes: count * 1024,
                stack: Vec::new(),
            }],
            meminfo: vec![MeminfoValue {
                name: "Slab".into(),
                bytes: (100 + count) << 10,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_steady_leak_is_reported_as_growing_with_its_totals() {
        let mut model = KernelModel::default();
        for (i, count) in [0, 10, 20, 30, 40].into_iter().enumerate() {
            model.apply(i as u64 * 1_000_000_000, &snapshot(count));
        }
        let report = build(&model, Source::Live);
        let site = &report.kernel.call_sites[0];
        assert_eq!(site.call_site, "alloc_pipe_info+0x4d");
        assert_eq!(
            (site.outstanding, site.bytes, site.change),
            (40, 40 << 10, 40)
        );
        assert!(site.growing);
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.kernel.caches[0].cache, "kmalloc-1k");
        assert_eq!(report.kernel.totals[0].start, 100 << 10);
        assert_eq!(report.kernel.totals[0].end, 140 << 10);
        let text = render_text(&report);
        assert!(text.contains("alloc_pipe_info+0x4d"), "{text}");
        assert!(text.contains("[kernel-growing]"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(json["kernel"]["call_sites"][0]["outstanding"], 40);
        assert_eq!(
            json["kernel"]["call_sites"][0]["module"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn freed_call_sites_leave_the_report() {
        let mut model = KernelModel::default();
        model.apply(0, &snapshot(5));
        model.apply(1, &KernelSnapshot::default());
        assert!(build(&model, Source::Live).kernel.call_sites.is_empty());
    }
}
