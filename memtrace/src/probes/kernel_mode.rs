//! Kernel mode's programs (`memtrace kernel`): which allocator tracepoints this kernel has, where
//! their arguments are, loading and attaching them, and reading their tables back.
//!
//! Every difference between kernel versions that kernel mode meets is decided here, from the
//! running kernel's BTF, and handed to the programs as read-only data ([`KernelModeConfig`]).

use std::collections::HashMap as StdHashMap;

use aya::{
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::RawTracePoint,
    Ebpf,
};
use memtrace_common::{
    kernel_mode::{
        counter, names as kernel_mode_names, KernelModeConfig, KernelModeSiteKey,
        KernelModeSiteStats, CACHE_NAME_LEN,
    },
    names, ProbeConfig,
};

use super::{
    btf::{tracepoints::ParamType, Btf},
    kernel_btf,
    kernel_differences::KernelDifferences,
    offsets, preflight, program_of, ProbeError, EBPF_OBJECT, EMPTY_RING_BYTES,
};

/// The programs and the tracepoints each attaches to, when the kernel has them.
const PROGRAMS: [(&str, &[&str]); 8] = [
    // Before Linux 6.1 the NUMA variants were tracepoints of their own, with the same
    // leading arguments.
    ("kmem_kmalloc", &["kmalloc", "kmalloc_node"]),
    (
        "kmem_cache_alloc",
        &["kmem_cache_alloc", "kmem_cache_alloc_node"],
    ),
    ("kmem_kfree", &["kfree"]),
    ("kmem_cache_free", &["kmem_cache_free"]),
    ("kmem_page_alloc", &["mm_page_alloc"]),
    ("kmem_page_free", &["mm_page_free"]),
    ("kmem_percpu_alloc", &["percpu_alloc_percpu"]),
    ("kmem_percpu_free", &["percpu_free_percpu"]),
];

/// Without these there is nothing to report.
const REQUIRED: [&str; 4] = ["kmalloc", "kfree", "kmem_cache_alloc", "kmem_cache_free"];

#[derive(Clone, Debug)]
pub struct KernelModeOptions {
    /// Count only allocations made in the context of traced processes (`--pid`, a command).
    pub filter_pids: bool,
    /// With `filter_pids`: children of traced processes become traced (`--follow`).
    pub follow_children: bool,
    /// Take the kernel stack of every allocation (`--stacks`).
    pub stacks: bool,
    /// The outstanding table's capacity.
    pub max_outstanding: u32,
    /// Also the page allocator (`--pages`): every page-cache page read while tracing is one,
    /// so system-wide it is mostly file I/O and fills the table; off by default.
    pub pages: bool,
}

/// The kernel-mode tracepoints' argument positions on this kernel, and which tracepoints exist.
#[derive(Clone, Debug)]
pub struct KernelModeLayout {
    pub config: KernelModeConfig,
    /// Tracepoints this kernel has (of those kernel mode knows).
    pub available: Vec<&'static str>,
    /// Optional tracepoints this kernel lacks or declares differently, for the report's notes.
    pub unsupported: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelModeError {
    #[error("this kernel has no '{0}' tracepoint, which `memtrace kernel` needs")]
    MissingTracepoint(&'static str),
    #[error(
        "this kernel's '{tracepoint}' tracepoint takes ({found}), which memtrace does not know"
    )]
    UnknownPrototype {
        tracepoint: &'static str,
        found: String,
    },
}

fn describe(params: &[ParamType]) -> String {
    params
        .iter()
        .map(|param| match param {
            ParamType::Integer(size) => format!("int{}", size * 8),
            ParamType::StructPointer(name) => format!("struct {name} *"),
            ParamType::Pointer => "pointer".to_owned(),
            ParamType::Other => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the tracepoints' prototypes and places their arguments.
pub fn kernel_mode_layout(btf: &Btf) -> Result<KernelModeLayout, ProbeError> {
    let mut config = KernelModeConfig {
        page_size: page_size(),
        ignore_tgid: std::process::id(),
        ..KernelModeConfig::UNSET
    };
    let mut available = Vec::new();
    let mut unsupported = Vec::new();
    let unknown =
        |tracepoint: &'static str, params: &[ParamType]| KernelModeError::UnknownPrototype {
            tracepoint,
            found: describe(params),
        };
    let word = ParamType::Integer(8);
    for (_, tracepoints) in PROGRAMS {
        for &tracepoint in tracepoints {
            let Some(params) = btf.raw_tracepoint_params(tracepoint)? else {
                if REQUIRED.contains(&tracepoint) {
                    return Err(KernelModeError::MissingTracepoint(tracepoint).into());
                }
                continue;
            };
            // Every slab tracepoint starts (call_site, ptr) in every kernel with BTF.
            let slab = params.first() == Some(&word) && params.get(1) == Some(&ParamType::Pointer);
            let recognised = match tracepoint {
                // (call_site, ptr, bytes_req, bytes_alloc, gfp_flags[, node])
                "kmalloc" | "kmalloc_node" => {
                    let ok = slab && params.get(3) == Some(&word);
                    if ok {
                        config.kmalloc_bytes_arg = 3;
                    }
                    ok
                }
                "kmem_cache_alloc" | "kmem_cache_alloc_node" => {
                    if !slab {
                        false
                    } else if params.get(2)
                        == Some(&ParamType::StructPointer("kmem_cache".to_owned()))
                    {
                        // Since Linux 6.1: (call_site, ptr, struct kmem_cache *s, gfp, node).
                        config.cache_alloc_cache_arg = 2;
                        config.kmem_cache_size_offset = btf.member("kmem_cache.size")?.offset;
                        config.kmem_cache_name_offset = btf.member("kmem_cache.name")?.offset;
                        true
                    } else if params.get(3) == Some(&word) {
                        // Before: (call_site, ptr, bytes_req, bytes_alloc, gfp[, node]).
                        config.cache_alloc_bytes_arg = 3;
                        true
                    } else {
                        false
                    }
                }
                "kfree" | "kmem_cache_free" => slab,
                "mm_page_alloc" | "mm_page_free" => {
                    params.first() == Some(&ParamType::StructPointer("page".to_owned()))
                        && (tracepoint == "mm_page_free"
                            || matches!(params.get(1), Some(ParamType::Integer(4))))
                }
                "percpu_alloc_percpu" => match params.len() {
                    // Since Linux 6.2: (call_site, reserved, is_atomic, size, align,
                    // base_addr, off, ptr, bytes_alloc, gfp_flags).
                    10 if params[0] == word => {
                        config.percpu_call_site_arg = 0;
                        config.percpu_ptr_arg = 7;
                        config.percpu_bytes_arg = 8;
                        true
                    }
                    // Before: (reserved, is_atomic, size, align, base_addr, off, ptr).
                    7 => {
                        config.percpu_ptr_arg = 6;
                        config.percpu_bytes_arg = 2;
                        true
                    }
                    _ => false,
                },
                // (base_addr, off, ptr)
                "percpu_free_percpu" => {
                    let ok = params.len() == 3;
                    if ok {
                        config.percpu_free_ptr_arg = 2;
                    }
                    ok
                }
                _ => false,
            };
            if recognised {
                available.push(tracepoint);
            } else if REQUIRED.contains(&tracepoint) {
                return Err(unknown(tracepoint, &params).into());
            } else {
                unsupported.push(tracepoint);
            }
        }
    }
    Ok(KernelModeLayout {
        config,
        available,
        unsupported,
    })
}

fn page_size() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u32::try_from(size).ok())
        .unwrap_or(4096)
}

/// Kernel mode's loaded and attached programs. Dropping it detaches everything.
pub struct KernelModeProbes {
    ebpf: Ebpf,
    pub layout: KernelModeLayout,
}

/// The kernel side's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelModeCounters {
    pub allocs: u64,
    pub frees: u64,
    pub table_full: u64,
    pub stack_lost: u64,
    pub sites_full: u64,
}

impl KernelModeProbes {
    pub fn load(options: &KernelModeOptions) -> Result<Self, ProbeError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        preflight::check()?;
        preflight::raise_memlock_limit();
        let (offsets, mut layout, differences) = kernel_btf::answers(|btf| {
            Ok((
                offsets::kernel_offsets(btf)?,
                kernel_mode_layout(btf)?,
                KernelDifferences::of(btf),
            ))
        })?;
        layout.config.filter_pids = u32::from(options.filter_pids);
        layout.config.stacks = u32::from(options.stacks);
        let config = ProbeConfig {
            follow_children: u32::from(options.follow_children),
            wakeup_bytes: u64::MAX,
            ..ProbeConfig::UNSET
        };
        let aya_btf = kernel_btf::aya_form()?;
        let mut loader = kernel_btf::loader();
        let mut ebpf = loader
            .btf(Some(&aya_btf))
            .override_global(names::OFFSETS_GLOBAL, &offsets, true)
            .override_global(names::CONFIG_GLOBAL, &config, true)
            .override_global(kernel_mode_names::KMEM_CONFIG_GLOBAL, &layout.config, true)
            // Kernel mode streams nothing: the fork and exit programs it may use write into
            // the event ring, which nobody reads here, so it is as small as it can be, and so
            // is the user-stack ring, which no program of kernel mode writes.
            .map_max_entries(names::EVENTS_MAP, EMPTY_RING_BYTES)
            .map_max_entries(names::STACKS_MAP, EMPTY_RING_BYTES)
            .map_max_entries(
                kernel_mode_names::OUTSTANDING_MAP,
                options.max_outstanding.max(1),
            )
            .map_max_entries(
                kernel_mode_names::KMEM_STACKS_MAP,
                if options.stacks { 16384 } else { 1 },
            )
            .load(EBPF_OBJECT)?;

        let mut attach = |program: &'static str, tracepoint: &str| -> Result<(), ProbeError> {
            let raw: &mut RawTracePoint = program_of(&mut ebpf, program)?;
            if raw.fd().is_err() {
                raw.load()
                    .map_err(|source| ProbeError::Program { program, source })?;
            }
            raw.attach(tracepoint)
                .map_err(|source| ProbeError::Program { program, source })?;
            Ok(())
        };
        if options.filter_pids {
            // The traced set is kept by the process programs: children join it at fork
            // (with --follow), and each process leaves it at exit.
            if options.follow_children {
                attach("sched_process_fork", "sched_process_fork")?;
            }
            // The exit program that fits this kernel's tracepoint (no `group_dead` before
            // 6.13): the other one fails to attach with EINVAL.
            attach(differences.exit_program, "sched_process_exit")?;
        }
        for (program, tracepoints) in PROGRAMS {
            let is_pages = program.starts_with("kmem_page_");
            for tracepoint in tracepoints {
                if layout.available.contains(tracepoint) && (options.pages || !is_pages) {
                    attach(program, tracepoint)?;
                }
            }
        }
        Ok(Self { ebpf, layout })
    }

    /// Counts allocations made in this process's context (all its threads).
    pub fn trace(&mut self, pid: u32) -> Result<(), ProbeError> {
        super::trace_process(&mut self.ebpf, pid)
    }

    /// How many processes are still traced (the exit program removes each one).
    pub fn traced_count(&self) -> Result<usize, ProbeError> {
        super::count_traced(&self.ebpf)
    }

    /// The outstanding allocations made since attaching, summed by call site, cache, size
    /// class and stack (sums that fell back to zero included), over all CPUs.
    pub fn sites(&self) -> Result<Vec<(KernelModeSiteKey, KernelModeSiteStats)>, ProbeError> {
        let name = kernel_mode_names::SITES_MAP;
        let map = self.ebpf.map(name).ok_or(ProbeError::Missing(name))?;
        let table: PerCpuHashMap<_, KernelModeSiteKey, KernelModeSiteStats> =
            PerCpuHashMap::try_from(map).map_err(|e| ProbeError::Map(name, e))?;
        Ok(table
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let sum = per_cpu
                    .iter()
                    .fold(KernelModeSiteStats::default(), |sum, cpu| {
                        KernelModeSiteStats {
                            count: sum.count + cpu.count,
                            bytes: sum.bytes + cpu.bytes,
                        }
                    });
                (key, sum)
            })
            .collect())
    }

    /// The names of the slab caches seen so far, by `struct kmem_cache *`.
    pub fn cache_names(&self) -> Result<StdHashMap<u64, String>, ProbeError> {
        let name = kernel_mode_names::CACHE_NAMES_MAP;
        let map = self.ebpf.map(name).ok_or(ProbeError::Missing(name))?;
        let table: HashMap<_, u64, [u8; CACHE_NAME_LEN]> =
            HashMap::try_from(map).map_err(|e| ProbeError::Map(name, e))?;
        Ok(table
            .iter()
            .filter_map(Result::ok)
            .map(|(cache, bytes)| {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                (cache, String::from_utf8_lossy(&bytes[..end]).into_owned())
            })
            .collect())
    }

    /// The return addresses of a stack the programs stored, innermost first.
    pub fn stack(&self, stack_id: i32) -> Result<Vec<u64>, ProbeError> {
        let name = kernel_mode_names::KMEM_STACKS_MAP;
        let map = self.ebpf.map(name).ok_or(ProbeError::Missing(name))?;
        let stacks = StackTraceMap::try_from(map).map_err(|e| ProbeError::Map(name, e))?;
        let Ok(id) = u32::try_from(stack_id) else {
            return Ok(Vec::new());
        };
        Ok(stacks
            .get(&id, 0)
            .map(|trace| trace.frames().iter().map(|frame| frame.ip).collect())
            .unwrap_or_default())
    }

    pub fn counters(&self) -> Result<KernelModeCounters, ProbeError> {
        let name = kernel_mode_names::KMEM_COUNTERS_MAP;
        let map = self.ebpf.map(name).ok_or(ProbeError::Missing(name))?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| ProbeError::Map(name, e))?;
        let total = |slot: u32| -> Result<u64, ProbeError> {
            let values = counters
                .get(&slot, 0)
                .map_err(|e| ProbeError::Map(name, e))?;
            Ok(values.iter().sum())
        };
        Ok(KernelModeCounters {
            allocs: total(counter::ALLOCS)?,
            frees: total(counter::FREES)?,
            table_full: total(counter::TABLE_FULL)?,
            stack_lost: total(counter::STACK_LOST)?,
            sites_full: total(counter::SITES_FULL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::kernel_mode::ARG_ABSENT;

    use super::super::btf::test_support::{kernel_btf, BtfBuilder};
    use super::*;

    /// The slab tracepoints of a kernel before 6.1 (no cache pointer, separate _node ones)
    /// or since (`kmem_cache_alloc` takes the cache).
    fn slab_kernel(since_6_1: bool, with_kmalloc: bool) -> Btf {
        let mut b = BtfBuilder::new();
        let long = b.int("long unsigned int", 8);
        let int = b.int("int", 4);
        let void_pointer = b.pointer(0);
        let s32 = b.int("unsigned int", 4);
        let cache = b.structure(
            "kmem_cache",
            64,
            &[("size", s32, 24 * 8), ("name", void_pointer, 40 * 8)],
        );
        let cache_pointer = b.pointer(cache);
        if with_kmalloc {
            b.tracepoint("kmalloc", &[long, void_pointer, long, long, s32]);
        }
        b.tracepoint("kfree", &[long, void_pointer]);
        if since_6_1 {
            b.tracepoint(
                "kmem_cache_alloc",
                &[long, void_pointer, cache_pointer, s32, int],
            );
        } else {
            b.tracepoint("kmem_cache_alloc", &[long, void_pointer, long, long, s32]);
            b.tracepoint("kmalloc_node", &[long, void_pointer, long, long, s32, int]);
        }
        b.tracepoint("kmem_cache_free", &[long, void_pointer]);
        // An old percpu_alloc_percpu with a prototype memtrace does not know.
        b.tracepoint("percpu_alloc_percpu", &[s32, s32]);
        Btf::parse(&b.build()).unwrap()
    }

    #[test]
    fn before_6_1_the_cache_size_is_an_argument() {
        let layout = kernel_mode_layout(&slab_kernel(false, true)).unwrap();
        assert_eq!(layout.config.kmalloc_bytes_arg, 3);
        assert_eq!(layout.config.cache_alloc_bytes_arg, 3);
        assert_eq!(layout.config.cache_alloc_cache_arg, ARG_ABSENT);
        assert!(layout.available.contains(&"kmalloc_node"));
        assert!(!layout.available.contains(&"mm_page_alloc"));
        assert_eq!(layout.unsupported, ["percpu_alloc_percpu"]);
    }

    #[test]
    fn since_6_1_the_cache_is_an_argument_and_its_size_a_field() {
        let layout = kernel_mode_layout(&slab_kernel(true, true)).unwrap();
        assert_eq!(layout.config.cache_alloc_cache_arg, 2);
        assert_eq!(layout.config.cache_alloc_bytes_arg, ARG_ABSENT);
        assert_eq!(layout.config.kmem_cache_size_offset, 24);
        assert_eq!(layout.config.kmem_cache_name_offset, 40);
    }

    #[test]
    fn a_kernel_without_kmalloc_is_refused_in_one_line() {
        let error = kernel_mode_layout(&slab_kernel(true, false))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "this kernel has no 'kmalloc' tracepoint, which `memtrace kernel` needs"
        );
    }

    #[test]
    fn the_running_kernel_has_every_tracepoint_kernel_mode_knows() {
        let Some(btf) = kernel_btf() else { return };
        let layout = kernel_mode_layout(btf).unwrap();
        for tracepoint in REQUIRED.iter().chain(&["mm_page_alloc", "mm_page_free"]) {
            assert!(
                layout.available.contains(tracepoint),
                "{tracepoint}: {layout:?}"
            );
        }
        assert!(layout.unsupported.is_empty(), "{layout:?}");
    }
}
