//! Kernel mode: the slab, page and per-CPU allocators' tracepoints.
//!
//! These fire for every allocation in the system, so each program does the least it can: an
//! allocation becomes one hash insert into [`KMEM_OUTSTANDING`], a free one hash delete, and
//! userspace reads the table at its own pace. Attached only by `memtrace kernel`; the
//! user-mode programs and these never run together.

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{tracing::StackIdContext, RawTracePointContext},
};
use memtrace_common::kernel_mode::{
    counter, KernelModeAlloc, KernelModeConfig, KernelModeSiteKey, KernelModeSiteStats,
    KernelModeSource, ARG_ABSENT, CACHE_NAME_LEN,
};

use crate::{
    emit::{current_ids, is_traced},
    kernel_structs::{read, KernelPtr},
};

/// Argument positions and options, written by userspace from the kernel's BTF before load.
#[unsafe(no_mangle)]
static KMEM_CONFIG: KernelModeConfig = KernelModeConfig::UNSET;

/// Allocations made during the trace and not yet freed, by pointer (`struct page *` for
/// pages). Userspace sizes it; an insert into a full table is counted, not silently lost.
#[map]
static KMEM_OUTSTANDING: HashMap<u64, KernelModeAlloc> = HashMap::with_max_entries(1 << 18, 0);

/// Outstanding allocations summed by call site, cache, size class and stack: what userspace
/// reads at each interval. Per CPU, so that the sums need no atomics (a CPU's share goes
/// negative when it frees what another allocated; userspace adds the CPUs up).
#[map]
static KMEM_SITES: PerCpuHashMap<KernelModeSiteKey, KernelModeSiteStats> =
    PerCpuHashMap::with_max_entries(1 << 14, 0);

/// Slab cache names by `struct kmem_cache *`, read once per cache.
#[map]
static KMEM_CACHE_NAMES: HashMap<u64, [u8; CACHE_NAME_LEN]> = HashMap::with_max_entries(4096, 0);

/// Kernel stacks of allocations (`--stacks`), shared by identical stacks.
#[map]
static KMEM_STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Per-CPU counters ([`counter`]).
#[map]
static KMEM_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn config(field: *const u32) -> u32 {
    // SAFETY: `field` points into the immutable `KMEM_CONFIG`; read_volatile keeps the
    // compiler from folding the placeholder values in.
    unsafe { core::ptr::read_volatile(field) }
}

fn count(slot: u32) {
    if let Some(value) = KMEM_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot: no other program runs on this CPU while we hold it.
        unsafe { *value += 1 };
    }
}

/// Argument `n` of the tracepoint. The context may only be read at constant offsets, so the
/// position from the configuration selects among constant reads.
#[inline(always)]
fn arg(ctx: &RawTracePointContext, n: u32) -> u64 {
    match n {
        0 => ctx.arg(0),
        1 => ctx.arg(1),
        2 => ctx.arg(2),
        3 => ctx.arg(3),
        4 => ctx.arg(4),
        5 => ctx.arg(5),
        6 => ctx.arg(6),
        7 => ctx.arg(7),
        8 => ctx.arg(8),
        9 => ctx.arg(9),
        _ => 0,
    }
}

/// Whether the current context is one `memtrace kernel --pid` asked for; system-wide otherwise.
#[inline(always)]
fn wanted() -> Option<u32> {
    let (tgid, _) = current_ids();
    if tgid == config(&raw const KMEM_CONFIG.ignore_tgid) {
        return None;
    }
    if config(&raw const KMEM_CONFIG.filter_pids) != 0 && !is_traced(tgid) {
        return None;
    }
    Some(tgid)
}

/// Remembers an allocation until it is freed.
fn remember(ctx: &RawTracePointContext, pointer: u64, mut alloc: KernelModeAlloc) {
    // NULL and ZERO_SIZE_PTR (16) are failures and empty allocations, never freed.
    if pointer <= 16 {
        return;
    }
    count(counter::ALLOCS);
    if config(&raw const KMEM_CONFIG.stacks) != 0 {
        // Flags 0: the kernel stack, from the tracepoint's caller up.
        match ctx.get_stackid(&KMEM_STACKS, 0) {
            Ok(id) => alloc.stack_id = id as i32,
            Err(_) => count(counter::STACK_LOST),
        }
    }
    // A pointer still in the table was freed without a tracepoint we saw (bulk frees have
    // none): its record is stale, and the newer allocation at the same address is the live one.
    if let Some(stale) = KMEM_OUTSTANDING.get_ptr(pointer) {
        // SAFETY: a value of this map, copied out at once.
        let stale = unsafe { *stale };
        account(&stale, -1);
    }
    if KMEM_OUTSTANDING.insert(pointer, alloc, 0).is_err() {
        count(counter::TABLE_FULL);
        return;
    }
    account(&alloc, 1);
}

fn forget(pointer: u64) {
    let Some(alloc) = KMEM_OUTSTANDING.get_ptr(pointer) else {
        return;
    };
    // SAFETY: a value of this map, copied out before the entry goes.
    let alloc = unsafe { *alloc };
    // Only the CPU whose delete succeeds takes the allocation off its call site.
    if KMEM_OUTSTANDING.remove(pointer).is_ok() {
        count(counter::FREES);
        account(&alloc, -1);
    }
}

/// The call-site sum an allocation belongs to.
fn site_key(alloc: &KernelModeAlloc) -> KernelModeSiteKey {
    let page_size = u64::from(config(&raw const KMEM_CONFIG.page_size));
    let size_class = match alloc.source {
        s if s == KernelModeSource::Kmalloc as u32 && alloc.bytes <= 2 * page_size => alloc.bytes,
        s if s == KernelModeSource::Cache as u32 && alloc.cache == 0 => alloc.bytes,
        s if s == KernelModeSource::Pages as u32 => u64::from(alloc.order),
        _ => 0,
    };
    KernelModeSiteKey {
        call_site: alloc.call_site,
        cache: alloc.cache,
        size_class,
        source: alloc.source,
        stack_id: alloc.stack_id,
    }
}

/// Adds (`sign` 1) or takes away (-1) an allocation from its call site's sum.
fn account(alloc: &KernelModeAlloc, sign: i64) {
    let key = site_key(alloc);
    let stats = match KMEM_SITES.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            // Another CPU may add the same key first: NOEXIST then fails, and the lookup
            // finds its entry (with this CPU's share zeroed).
            let _ = KMEM_SITES.insert(key, KernelModeSiteStats::default(), BPF_NOEXIST as u64);
            match KMEM_SITES.get_ptr_mut(key) {
                Some(stats) => stats,
                None => {
                    if sign > 0 {
                        count(counter::SITES_FULL);
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's own value; the same program cannot run nested on this CPU.
    unsafe {
        (*stats).count += sign;
        (*stats).bytes += sign * alloc.bytes as i64;
    }
}

fn new_alloc(tgid: u32, source: KernelModeSource, call_site: u64, bytes: u64) -> KernelModeAlloc {
    KernelModeAlloc {
        call_site,
        cache: 0,
        bytes,
        // SAFETY: no arguments; CLOCK_MONOTONIC.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        stack_id: -1,
        source: source as u32,
        order: 0,
    }
}

/// `kmalloc(call_site, ptr, bytes_req, bytes_alloc, gfp_flags[, node])`.
#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn kmem_kmalloc(ctx: RawTracePointContext) -> i32 {
    if let Some(tgid) = wanted() {
        let bytes = arg(&ctx, config(&raw const KMEM_CONFIG.kmalloc_bytes_arg));
        let alloc = new_alloc(tgid, KernelModeSource::Kmalloc, ctx.arg(0), bytes);
        remember(&ctx, ctx.arg(1), alloc);
    }
    0
}

/// `kmem_cache_alloc(call_site, ptr, bytes_req, bytes_alloc, gfp_flags)` before Linux 6.1,
/// `kmem_cache_alloc(call_site, ptr, struct kmem_cache *s, gfp_flags, node)` since (commit
/// 2c1d697fb8ba, "mm/slab_common: drop kmem_alloc & avoid dereferencing fields when not
/// using"): the size is then the cache's.
#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn kmem_cache_alloc(ctx: RawTracePointContext) -> i32 {
    if let Some(tgid) = wanted() {
        let mut alloc = new_alloc(tgid, KernelModeSource::Cache, ctx.arg(0), 0);
        let cache_arg = config(&raw const KMEM_CONFIG.cache_alloc_cache_arg);
        if cache_arg != ARG_ABSENT {
            let cache = arg(&ctx, cache_arg);
            alloc.cache = cache;
            let size_offset = config(&raw const KMEM_CONFIG.kmem_cache_size_offset) as usize;
            alloc.bytes = u64::from(read::<u32>(cache as KernelPtr, size_offset).unwrap_or(0));
            name_cache(cache);
        } else {
            alloc.bytes = arg(&ctx, config(&raw const KMEM_CONFIG.cache_alloc_bytes_arg));
        }
        remember(&ctx, ctx.arg(1), alloc);
    }
    0
}

/// Reads a cache's name the first time one of its allocations is seen.
fn name_cache(cache: u64) {
    if cache == 0 || KMEM_CACHE_NAMES.get_ptr(cache).is_some() {
        return;
    }
    let name_offset = config(&raw const KMEM_CONFIG.kmem_cache_name_offset) as usize;
    let Ok(name) = read::<KernelPtr>(cache as KernelPtr, name_offset) else {
        return;
    };
    let mut buffer = [0u8; CACHE_NAME_LEN];
    // SAFETY: the helper bounds the copy by the buffer and checks the source address.
    if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buffer) }.is_ok() {
        let _ = KMEM_CACHE_NAMES.insert(cache, buffer, 0);
    }
}

/// `kfree(call_site, ptr)`.
#[raw_tracepoint(tracepoint = "kfree")]
pub fn kmem_kfree(ctx: RawTracePointContext) -> i32 {
    forget(ctx.arg(1));
    0
}

/// `kmem_cache_free(call_site, ptr[, name])`.
#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: RawTracePointContext) -> i32 {
    forget(ctx.arg(1));
    0
}

/// `mm_page_alloc(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)`.
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn kmem_page_alloc(ctx: RawTracePointContext) -> i32 {
    if let Some(tgid) = wanted() {
        let order = ctx.arg::<u64>(1) as u32 & 0x1f;
        let page_size = u64::from(config(&raw const KMEM_CONFIG.page_size));
        let mut alloc = new_alloc(tgid, KernelModeSource::Pages, 0, page_size << order);
        alloc.order = order;
        remember(&ctx, ctx.arg(0), alloc);
    }
    0
}

/// `mm_page_free(struct page *page, unsigned int order)`.
#[raw_tracepoint(tracepoint = "mm_page_free")]
pub fn kmem_page_free(ctx: RawTracePointContext) -> i32 {
    forget(ctx.arg(0));
    0
}

/// `percpu_alloc_percpu([call_site,] reserved, is_atomic, size, align, base_addr, off, ptr
/// [, bytes_alloc, gfp_flags])`: `call_site`, `bytes_alloc` and `gfp_flags` came in Linux 6.2.
#[raw_tracepoint(tracepoint = "percpu_alloc_percpu")]
pub fn kmem_percpu_alloc(ctx: RawTracePointContext) -> i32 {
    if let Some(tgid) = wanted() {
        let call_site_arg = config(&raw const KMEM_CONFIG.percpu_call_site_arg);
        let call_site = if call_site_arg == ARG_ABSENT {
            0
        } else {
            arg(&ctx, call_site_arg)
        };
        let bytes = arg(&ctx, config(&raw const KMEM_CONFIG.percpu_bytes_arg));
        let pointer = arg(&ctx, config(&raw const KMEM_CONFIG.percpu_ptr_arg));
        remember(
            &ctx,
            pointer,
            new_alloc(tgid, KernelModeSource::Percpu, call_site, bytes),
        );
    }
    0
}

/// `percpu_free_percpu(base_addr, off, ptr)`.
#[raw_tracepoint(tracepoint = "percpu_free_percpu")]
pub fn kmem_percpu_free(ctx: RawTracePointContext) -> i32 {
    forget(arg(
        &ctx,
        config(&raw const KMEM_CONFIG.percpu_free_ptr_arg),
    ));
    0
}
