//! Turning the kernel side's outstanding table into a [`KernelSnapshotRecord`]: allocations
//! grouped by allocator, call site, cache and stack, with every address named here and now
//! (kallsyms and KASLR are this machine's), and the kernel's own totals.

use std::collections::{BTreeMap, HashMap};

use memtrace_common::kmem::{KmemAlloc, KmemSource};

use super::{
    kallsyms::KernelSymbols,
    procfs,
    record::{KernelCounters, KernelGroup, KernelSnapshotRecord},
};
use crate::probes::{kmem::KmemProbes, ProbeError};

/// The slab cache a kmalloc of `bytes` (the allocator's `bytes_alloc`) was served from.
/// kmalloc's caches are named by object size; beyond two pages kmalloc goes to the page
/// allocator. memcg-accounted (`__GFP_ACCOUNT`) allocations come from the `kmalloc-cg-*`
/// twins of these caches, which the tracepoint does not tell apart.
pub fn kmalloc_cache_name(bytes: u64, page_size: u64) -> String {
    if bytes > 2 * page_size {
        return "kmalloc-large".to_owned();
    }
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("kmalloc-{}k", bytes / 1024)
    } else {
        format!("kmalloc-{bytes}")
    }
}

/// Groups outstanding allocations by what the report tells apart. `cache_name` names a
/// `struct kmem_cache *`; `stack_of` gives a stack id's named frames.
pub fn group(
    allocations: &[KmemAlloc],
    symbols: &KernelSymbols,
    page_size: u64,
    cache_name: impl Fn(u64) -> String,
    mut stack_of: impl FnMut(i32) -> Vec<String>,
) -> Vec<KernelGroup> {
    // (source, call site, cache, stack id) → (count, bytes).
    let mut groups: BTreeMap<(u32, u64, String, i32), (u64, u64)> = BTreeMap::new();
    for alloc in allocations {
        let Some(source) = KmemSource::from_u32(alloc.source) else {
            continue;
        };
        let cache = match source {
            KmemSource::Kmalloc => kmalloc_cache_name(alloc.bytes, page_size),
            KmemSource::Cache if alloc.cache != 0 => cache_name(alloc.cache),
            // Before Linux 6.1 the tracepoint named no cache: its object size tells most.
            KmemSource::Cache => format!("kmem_cache ({} B objects)", alloc.bytes),
            KmemSource::Pages => "pages".to_owned(),
            KmemSource::Percpu => "percpu".to_owned(),
        };
        let entry = groups
            .entry((alloc.source, alloc.call_site, cache, alloc.stack_id.max(-1)))
            .or_default();
        entry.0 += 1;
        entry.1 += alloc.bytes;
    }
    groups
        .into_iter()
        .map(|((source, call_site, cache, stack_id), (count, bytes))| {
            let name = (call_site != 0).then(|| symbols.name(call_site)).flatten();
            KernelGroup {
                source: KmemSource::from_u32(source).unwrap_or(KmemSource::Kmalloc),
                call_site,
                function: name
                    .as_ref()
                    .map(|n| n.function.clone())
                    .unwrap_or_default(),
                module: name.map(|n| n.module).unwrap_or_default(),
                cache,
                count,
                bytes,
                stack: if stack_id >= 0 {
                    stack_of(stack_id)
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
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

    pub fn take(&mut self, probes: &KmemProbes) -> Result<KernelSnapshotRecord, ProbeError> {
        let allocations = probes.outstanding()?;
        if allocations
            .iter()
            .any(|a| a.cache != 0 && !self.cache_names.contains_key(&a.cache))
        {
            self.cache_names.extend(probes.cache_names()?);
        }
        let mut stacks: HashMap<i32, Vec<String>> = HashMap::new();
        let symbols = &self.symbols;
        let cache_names = &self.cache_names;
        let groups = group(
            &allocations,
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
                        probes
                            .stack(id)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|address| match symbols.name(address) {
                                Some(name) if name.module.is_empty() => name.function,
                                Some(name) => format!("{} [{}]", name.function, name.module),
                                None => format!("{address:#x}"),
                            })
                            .collect()
                    })
                    .clone()
            },
        );
        let counters = probes.counters()?;
        let (meminfo, slabs) = procfs::read_totals();
        Ok(KernelSnapshotRecord {
            groups,
            counters: KernelCounters {
                allocs: counters.allocs,
                frees: counters.frees,
                table_full: counters.table_full,
                stack_lost: counters.stack_lost,
            },
            meminfo,
            slabs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(source: KmemSource, call_site: u64, bytes: u64) -> KmemAlloc {
        KmemAlloc {
            call_site,
            bytes,
            source: source as u32,
            stack_id: -1,
            ..Default::default()
        }
    }

    #[test]
    fn kmalloc_caches_are_named_by_size_class() {
        assert_eq!(kmalloc_cache_name(1024, 4096), "kmalloc-1k");
        assert_eq!(kmalloc_cache_name(192, 4096), "kmalloc-192");
        assert_eq!(kmalloc_cache_name(8192, 4096), "kmalloc-8k");
        assert_eq!(kmalloc_cache_name(16384, 4096), "kmalloc-large");
    }

    #[test]
    fn allocations_group_by_call_site_and_cache() {
        let symbols = KernelSymbols::parse(
            "ffffffff81234500 t alloc_pipe_info\nffffffffc0000000 t loop_add [loop]\n",
        );
        let mut filp = alloc(KmemSource::Cache, 0xffff_ffff_8123_4510, 256);
        filp.cache = 0xdead_0000;
        let allocations = [
            alloc(KmemSource::Kmalloc, 0xffff_ffff_8123_454d, 1024),
            alloc(KmemSource::Kmalloc, 0xffff_ffff_8123_454d, 1024),
            alloc(KmemSource::Kmalloc, 0xffff_ffff_8123_4560, 192),
            alloc(KmemSource::Kmalloc, 0xffff_ffff_c000_0020, 64),
            filp,
            alloc(KmemSource::Pages, 0, 8192),
        ];
        let groups = group(&allocations, &symbols, 4096, |_| "filp".into(), |_| vec![]);
        let find = |function: &str, cache: &str| {
            groups
                .iter()
                .find(|g| g.function == function && g.cache == cache)
                .unwrap_or_else(|| panic!("no {function} {cache} in {groups:?}"))
        };
        let pipes = find("alloc_pipe_info+0x4d", "kmalloc-1k");
        assert_eq!((pipes.count, pipes.bytes), (2, 2048));
        assert_eq!(find("alloc_pipe_info+0x60", "kmalloc-192").count, 1);
        assert_eq!(find("loop_add+0x20", "kmalloc-64").module, "loop");
        assert_eq!(find("alloc_pipe_info+0x10", "filp").bytes, 256);
        assert_eq!(find("", "pages").bytes, 8192);
        assert_eq!(groups.len(), 5);
    }
}
