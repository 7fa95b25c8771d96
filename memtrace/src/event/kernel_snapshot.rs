//! What kernel mode puts into the event stream: one [`KernelSnapshot`] per interval.
//!
//! Allocations are far too many to stream one by one, so the stream carries the outstanding
//! set as the kernel side's table held it at each interval, grouped and already named (call
//! sites symbolized from this machine's /proc/kallsyms, caches by their names): a replay on
//! another machine, with another kernel and another KASLR offset, shows the same names.

pub use memtrace_common::kernel_mode::KernelModeSource;

/// The outstanding kernel allocations at one instant, and the kernel's own totals then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelSnapshot {
    pub groups: Vec<KernelGroup>,
    pub counters: KernelCounters,
    /// Selected `/proc/meminfo` values, in bytes.
    pub meminfo: Vec<MeminfoValue>,
    /// `/proc/slabinfo`: every cache's active objects.
    pub slabs: Vec<SlabCache>,
}

/// Outstanding allocations from one call site, of one cache, through one kernel stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGroup {
    pub source: KernelModeSource,
    /// The return address into the allocating function (0: the tracepoint does not say).
    pub call_site: u64,
    /// `alloc_pipe_info+0x4d`; empty when the address has no symbol.
    pub function: String,
    /// The module holding the call site; empty for the kernel image itself.
    pub module: String,
    /// The slab cache (`kmalloc-1k`, `filp`), `pages` or `percpu`.
    pub cache: String,
    pub count: u64,
    pub bytes: u64,
    /// Symbolized kernel stack, innermost first (with `--stacks`; empty otherwise).
    pub stack: Vec<String>,
}

/// The kernel side's counters since the trace started (totals, not increments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub allocs: u64,
    pub frees: u64,
    /// Allocations the outstanding table had no room for: missing from the report.
    pub table_full: u64,
    pub stack_lost: u64,
    /// Allocations the call-site table had no room for: missing from the report.
    pub sites_full: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeminfoValue {
    pub name: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabCache {
    pub name: String,
    pub active_objects: u64,
    pub object_size: u64,
}

/// The allocator's name as reports show it.
pub fn source_name(source: KernelModeSource) -> &'static str {
    match source {
        KernelModeSource::Kmalloc => "kmalloc",
        KernelModeSource::Cache => "kmem_cache",
        KernelModeSource::Pages => "pages",
        KernelModeSource::Percpu => "percpu",
    }
}
