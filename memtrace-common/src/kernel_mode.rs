//! Kernel mode (`memtrace kernel`): the records shared by the kernel-mode programs and userspace.
//!
//! Allocation tracepoints fire up to millions of times a second system-wide, so nothing is
//! streamed per event: the programs keep every allocation made during the trace that is still
//! outstanding in a hash map ([`names::OUTSTANDING_MAP`], pointer → [`KernelModeAlloc`]), as bcc's
//! memleak does, and userspace reads that map at each interval.

/// Which allocator an outstanding allocation came from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelModeSource {
    /// `kmalloc` and friends (the `kmalloc` tracepoint).
    Kmalloc = 0,
    /// `kmem_cache_alloc` from a named slab cache.
    Cache = 1,
    /// Whole pages from the page allocator (`mm_page_alloc`).
    Pages = 2,
    /// Per-CPU memory (`percpu_alloc_percpu`).
    Percpu = 3,
}

impl KernelModeSource {
    pub const ALL: [KernelModeSource; 4] = [Self::Kmalloc, Self::Cache, Self::Pages, Self::Percpu];

    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|source| *source as u32 == value)
    }
}

/// One outstanding allocation, the value of [`names::OUTSTANDING_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelModeAlloc {
    /// The return address into the allocating function (`_RET_IP_`); 0 when the tracepoint
    /// does not say (pages, per-CPU memory on old kernels).
    pub call_site: u64,
    /// The `struct kmem_cache *` of a cache allocation (0 otherwise); userspace names it
    /// through [`names::CACHE_NAMES_MAP`].
    pub cache: u64,
    /// Bytes the allocator handed out (`bytes_alloc`, the cache's object size, the pages).
    pub bytes: u64,
    pub timestamp_ns: u64,
    /// The process in whose context the allocation was made (0: none, e.g. an idle CPU).
    pub tgid: u32,
    /// The kernel stack in [`names::KMEM_STACKS_MAP`], or negative when none was taken.
    pub stack_id: i32,
    /// A [`KernelModeSource`].
    pub source: u32,
    /// Page allocations: the order (pages = 1 << order); 0 otherwise.
    pub order: u32,
}

/// What outstanding allocations are summed by in the kernel ([`names::SITES_MAP`]), so that
/// userspace reads a few thousand sums per interval instead of every allocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelModeSiteKey {
    pub call_site: u64,
    /// The `struct kmem_cache *` of cache allocations.
    pub cache: u64,
    /// kmalloc's object size (0 for kmalloc-large), a cache's object size when the tracepoint
    /// names no cache, the order of page allocations; 0 otherwise.
    pub size_class: u64,
    /// A [`KernelModeSource`].
    pub source: u32,
    pub stack_id: i32,
}

/// The outstanding allocations of one [`KernelModeSiteKey`], updated atomically by every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelModeSiteStats {
    pub count: i64,
    pub bytes: i64,
}

/// Raw tracepoint argument positions that differ between kernels (after the hidden `__data`
/// argument, as `RawTracePointContext::arg` counts). Userspace reads them from the running
/// kernel's BTF (`btf_trace_<name>` prototypes); [`ARG_ABSENT`] marks an argument this kernel's
/// tracepoint does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelModeConfig {
    /// Non-zero: count only allocations made in the context of a tgid in the `TRACED` map.
    pub filter_pids: u32,
    /// Non-zero: take the kernel stack of every allocation (`--stacks`).
    pub stacks: u32,
    /// `kmalloc`: `bytes_alloc`.
    pub kmalloc_bytes_arg: u32,
    /// `kmem_cache_alloc` before Linux 6.1: `bytes_alloc`.
    pub cache_alloc_bytes_arg: u32,
    /// `kmem_cache_alloc` since Linux 6.1: the `struct kmem_cache *`.
    pub cache_alloc_cache_arg: u32,
    /// `kmem_cache.size` (the object size with metadata), read when the cache is known.
    pub kmem_cache_size_offset: u32,
    /// `kmem_cache.name` (a `const char *`).
    pub kmem_cache_name_offset: u32,
    /// `percpu_alloc_percpu`: `call_site` (since Linux 6.2), `ptr`, and the size.
    pub percpu_call_site_arg: u32,
    pub percpu_ptr_arg: u32,
    pub percpu_bytes_arg: u32,
    /// `percpu_free_percpu`: `ptr`.
    pub percpu_free_ptr_arg: u32,
    /// The page size, for `mm_page_alloc`'s order.
    pub page_size: u32,
    /// memtrace's own tgid: loading programs and reading tables allocate kernel memory that
    /// is not the system's to answer for.
    pub ignore_tgid: u32,
}

/// A [`KernelModeConfig`] argument the running kernel's tracepoint does not have.
pub const ARG_ABSENT: u32 = u32::MAX;

impl KernelModeConfig {
    /// Nothing known yet: every argument absent, no filter. The eBPF object's initial value,
    /// and where userspace starts before it fills in what the running kernel's BTF says.
    pub const UNSET: Self = Self {
        filter_pids: 0,
        stacks: 0,
        kmalloc_bytes_arg: ARG_ABSENT,
        cache_alloc_bytes_arg: ARG_ABSENT,
        cache_alloc_cache_arg: ARG_ABSENT,
        kmem_cache_size_offset: 0,
        kmem_cache_name_offset: 0,
        percpu_call_site_arg: ARG_ABSENT,
        percpu_ptr_arg: ARG_ABSENT,
        percpu_bytes_arg: ARG_ABSENT,
        percpu_free_ptr_arg: ARG_ABSENT,
        page_size: 4096,
        ignore_tgid: 0,
    };
}

/// Longest cache name kept (the kernel's are short: `kmalloc-cg-1k`, `ext4_inode_cache`).
pub const CACHE_NAME_LEN: usize = 32;

/// Map and global names of kernel mode.
pub mod names {
    pub const OUTSTANDING_MAP: &str = "KMEM_OUTSTANDING";
    pub const SITES_MAP: &str = "KMEM_SITES";
    pub const CACHE_NAMES_MAP: &str = "KMEM_CACHE_NAMES";
    pub const KMEM_STACKS_MAP: &str = "KMEM_STACKS";
    pub const KMEM_COUNTERS_MAP: &str = "KMEM_COUNTERS";
    pub const KMEM_CONFIG_GLOBAL: &str = "KMEM_CONFIG";
}

/// Slots of the per-CPU [`names::KMEM_COUNTERS_MAP`].
pub mod counter {
    /// Allocations that passed the filter.
    pub const ALLOCS: u32 = 0;
    /// Frees of an allocation in the outstanding table.
    pub const FREES: u32 = 1;
    /// Allocations not kept because the outstanding table was full: they are missing from the
    /// report, which says how many.
    pub const TABLE_FULL: u32 = 2;
    /// Stacks that could not be taken or stored (`--stacks`).
    pub const STACK_LOST: u32 = 3;
    /// Allocations not summed because the call-site table was full.
    pub const SITES_FULL: u32 = 4;
    pub const COUNT: u32 = 5;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]` integers only, no implicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for KernelModeAlloc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelModeConfig {}
    // SAFETY: as above (two u64 pairs, then two 32-bit fields: no padding).
    unsafe impl aya::Pod for KernelModeSiteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelModeSiteStats {}
}
