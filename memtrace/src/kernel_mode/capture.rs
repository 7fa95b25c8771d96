//! Turning the kernel side's outstanding table into a [`KernelSnapshot`]: allocations
//! grouped by allocator, call site, cache and stack, with every address named here and now
//! (kallsyms and KASLR are this machine's), and the kernel's own totals.

use std::collections::HashMap;

use memtrace_common::kernel_mode::{KernelModeSiteKey, KernelModeSiteStats, KernelModeSource};

use super::{kallsyms::KernelSymbols, procfs};
use crate::event::kernel_snapshot::{KernelCounters, KernelGroup, KernelSnapshot};
use crate::probes::{kernel_mode::KernelModeProbes, ProbeError};

/// The slab cache a kmalloc of `bytes` (the allocator's `bytes_alloc`) was served from.
/// kmalloc's caches are named by object size; beyond two pages kmalloc goes to the page
/// allocator (the kernel side sums those under size class 0). memcg-accounted (`__GFP_ACCOUNT`) allocations come from the `kmalloc-cg-*`
/// twins of these caches, which the tracepoint does not tell apart.
pub fn kmalloc_cache_name(bytes: u64, page_size: u64) -> String {
    if bytes == 0 || bytes > 2 * page_size {
        return "kmalloc-large".to_owned();
    }
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("kmalloc-{}k", bytes / 1024)
    } else {
        format!("kmalloc-{bytes}")
    }
}

/// Names the kernel side's call-site sums: the call site from kallsyms, the cache from
/// `cache_name` (a `struct kmem_cache *`) or kmalloc's size class, the stack from `stack_of`.
/// Sums that fell back to zero (everything from there was freed) are left out.
pub fn group(
    sites: &[(KernelModeSiteKey, KernelModeSiteStats)],
    symbols: &KernelSymbols,
    page_size: u64,
    cache_name: impl Fn(u64) -> String,
    mut stack_of: impl FnMut(i32) -> Vec<String>,
) -> Vec<KernelGroup> {
    let mut sites: Vec<_> = sites.iter().filter(|(_, stats)| stats.count > 0).collect();
    sites.sort_by_key(|(key, _)| *key);
    sites
        .into_iter()
        .filter_map(|(key, stats)| {
            let source = KernelModeSource::from_u32(key.source)?;
            let cache = match source {
                KernelModeSource::Kmalloc => kmalloc_cache_name(key.size_class, page_size),
                KernelModeSource::Cache if key.cache != 0 => cache_name(key.cache),
                // Before Linux 6.1 the tracepoint named no cache: its object size tells most.
                KernelModeSource::Cache => format!("kmem_cache ({} B objects)", key.size_class),
                KernelModeSource::Pages => "pages".to_owned(),
                KernelModeSource::Percpu => "percpu".to_owned(),
            };
            let name = (key.call_site != 0)
                .then(|| symbols.name(key.call_site))
                .flatten();
            Some(KernelGroup {
                source,
                call_site: key.call_site,
                function: name
                    .as_ref()
                    .map(|n| n.function.clone())
                    .unwrap_or_default(),
                module: name.map(|n| n.module).unwrap_or_default(),
                cache,
                count: stats.count as u64,
                bytes: stats.bytes.max(0) as u64,
                stack: if key.stack_id >= 0 {
                    stack_of(key.stack_id)
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// A kernel stack as the report shows it: from the allocator up, without the
/// frames of the tracing itself (the BPF program, which kallsyms cannot name, and the
/// `bpf_trace_run*` that called it from the tracepoint).
pub fn without_tracing_frames(frames: Vec<String>) -> Vec<String> {
    match frames
        .iter()
        .rposition(|frame| frame.starts_with("bpf_trace_run"))
    {
        Some(last) => frames.into_iter().skip(last + 1).collect(),
        None => frames,
    }
}

/// Takes snapshots of a live session, remembering what it already looked up.
pub struct SnapshotTaker {
    symbols: KernelSymbols,
    cache_names: HashMap<u64, String>,
    page_size: u64,
}

impl SnapshotTaker {
    pub fn new(symbols: KernelSymbols, page_size: u64) -> Self {
        Self {
            symbols,
            cache_names: HashMap::new(),
            page_size,
        }
    }

    pub fn take(&mut self, probes: &KernelModeProbes) -> Result<KernelSnapshot, ProbeError> {
        let sites = probes.sites()?;
        if sites
            .iter()
            .any(|(key, _)| key.cache != 0 && !self.cache_names.contains_key(&key.cache))
        {
            self.cache_names.extend(probes.cache_names()?);
        }
        let mut stacks: HashMap<i32, Vec<String>> = HashMap::new();
        let symbols = &self.symbols;
        let cache_names = &self.cache_names;
        let groups = group(
            &sites,
            symbols,
            self.page_size,
            |cache| {
                cache_names
                    .get(&cache)
                    .cloned()
                    .unwrap_or_else(|| format!("kmem_cache@{cache:#x}"))
            },
            |id| {
                stacks
                    .entry(id)
                    .or_insert_with(|| {
                        without_tracing_frames(
                            probes
                                .stack(id)
                                .unwrap_or_default()
                                .into_iter()
                                .map(|address| match symbols.name(address) {
                                    Some(name) if name.module.is_empty() => name.function,
                                    Some(name) => format!("{} [{}]", name.function, name.module),
                                    None => format!("{address:#x}"),
                                })
                                .collect(),
                        )
                    })
                    .clone()
            },
        );
        let counters = probes.counters()?;
        let (meminfo, slabs) = procfs::read_totals();
        Ok(KernelSnapshot {
            groups,
            counters: KernelCounters {
                allocs: counters.allocs,
                frees: counters.frees,
                table_full: counters.table_full,
                stack_lost: counters.stack_lost,
                sites_full: counters.sites_full,
            },
            meminfo,
            slabs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(
        source: KernelModeSource,
        call_site: u64,
        size_class: u64,
        count: i64,
        bytes: i64,
    ) -> (KernelModeSiteKey, KernelModeSiteStats) {
        (
            KernelModeSiteKey {
                call_site,
                size_class,
                source: source as u32,
                stack_id: -1,
                ..Default::default()
            },
            KernelModeSiteStats { count, bytes },
        )
    }

    #[test]
    fn stacks_start_below_the_tracing() {
        let frames = [
            "_einittext+0x3c80aef4",
            "bpf_trace_run5+0x112",
            "kmem_cache_alloc_noprof+0x230",
            "alloc_buffer_head+0x1d",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            without_tracing_frames(frames),
            ["kmem_cache_alloc_noprof+0x230", "alloc_buffer_head+0x1d"]
        );
        let plain = vec!["a+0x1".to_owned()];
        assert_eq!(without_tracing_frames(plain.clone()), plain);
    }

    #[test]
    fn kmalloc_caches_are_named_by_size_class() {
        assert_eq!(kmalloc_cache_name(1024, 4096), "kmalloc-1k");
        assert_eq!(kmalloc_cache_name(192, 4096), "kmalloc-192");
        assert_eq!(kmalloc_cache_name(8192, 4096), "kmalloc-8k");
        assert_eq!(kmalloc_cache_name(0, 4096), "kmalloc-large");
        assert_eq!(kmalloc_cache_name(16384, 4096), "kmalloc-large");
    }

    #[test]
    fn call_site_sums_are_named_and_freed_ones_left_out() {
        let symbols = KernelSymbols::parse(
            "ffffffff81234500 t alloc_pipe_info\nffffffffc0000000 t loop_add [loop]\n",
        );
        let mut filp = site(KernelModeSource::Cache, 0xffff_ffff_8123_4510, 0, 1, 256);
        filp.0.cache = 0xdead_0000;
        let mut stacked = site(KernelModeSource::Kmalloc, 0xffff_ffff_c000_0020, 64, 1, 64);
        stacked.0.stack_id = 7;
        let sites = [
            site(
                KernelModeSource::Kmalloc,
                0xffff_ffff_8123_454d,
                1024,
                2,
                2048,
            ),
            site(
                KernelModeSource::Kmalloc,
                0xffff_ffff_8123_4560,
                192,
                1,
                192,
            ),
            site(KernelModeSource::Kmalloc, 0xffff_ffff_8123_4570, 512, 0, 0),
            stacked,
            filp,
            site(KernelModeSource::Pages, 0, 1, 1, 8192),
        ];
        let groups = group(
            &sites,
            &symbols,
            4096,
            |_| "filp".into(),
            |id| vec![format!("stack {id}")],
        );
        let find = |function: &str, cache: &str| {
            groups
                .iter()
                .find(|g| g.function == function && g.cache == cache)
                .unwrap_or_else(|| panic!("no {function} {cache} in {groups:?}"))
        };
        let pipes = find("alloc_pipe_info+0x4d", "kmalloc-1k");
        assert_eq!((pipes.count, pipes.bytes), (2, 2048));
        assert_eq!(find("alloc_pipe_info+0x60", "kmalloc-192").count, 1);
        let module = find("loop_add+0x20", "kmalloc-64");
        assert_eq!(module.module, "loop");
        assert_eq!(module.stack, ["stack 7"]);
        assert_eq!(find("alloc_pipe_info+0x10", "filp").bytes, 256);
        assert_eq!(find("", "pages").bytes, 8192);
        assert_eq!(groups.len(), 5, "the freed kmalloc-512 sum is left out");
    }
}
