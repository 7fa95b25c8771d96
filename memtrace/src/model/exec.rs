//! A new image: the layout the kernel built while loading it, and the facts about that layout
//! that show whether it was placed as its ABI expects (libraries above the executable, room
//! above the heap).

use std::collections::HashSet;
use std::sync::Arc;

use crate::event::{Abi, ExecEvent, ExecMappingEvent, ExecMappingKind};
use crate::linux_abi::{MAP_ANONYMOUS, MAP_SHARED};
use crate::model::address_space::AddressSpace;
use crate::model::backing::Backing;
use crate::model::brk::{heap_region, HEAP_NAME};
use crate::model::memfd::MemfdRegistry;
use crate::model::names::Names;
use crate::model::region::{page_align_up, Creation, Perms, Region, RegionKind};

pub const STACK_NAME: &str = "[stack]";

/// One successful exec of a process.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecInfo {
    pub time_ns: u64,
    pub filename: String,
    /// The interpreter of a script, or the binary as the kernel finally ran it.
    pub interp: String,
    /// The ABI the process had until this exec.
    pub from_abi: Abi,
    pub to_abi: Abi,
    pub personality: u32,
    /// Lowest mapping of the executable file (start_code when it cannot be told).
    pub exe_base: u64,
    /// Where the ELF interpreter was loaded (AT_BASE); 0 for static binaries.
    pub interp_base: u64,
    pub start_code: u64,
    pub entry: u64,
    pub mmap_base: u64,
    pub brk_start: u64,
    pub stack_start: u64,
    pub stack_end: u64,
    exe_name: Option<Arc<str>>,
    interp_name: Option<Arc<str>>,
    /// The facts as they stood when a later exec replaced this image.
    superseded: Option<ImageFacts>,
}

/// What a person checks when a layout looks wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageFacts {
    /// Lowest start address of a library mapping (a file with executable code that is neither
    /// the executable nor the interpreter).
    pub lowest_library: Option<u64>,
    /// Highest start address of a library mapping.
    pub highest_library: Option<u64>,
    /// The lowest mapping above the brk start that is not the heap: what bounds the heap.
    pub above_brk: Option<Region>,
}

impl ExecInfo {
    /// The facts of this image in `space` (the process's layout now, or at exit); for an
    /// image a later exec replaced, as they were then.
    pub fn facts(&self, space: &AddressSpace) -> ImageFacts {
        match &self.superseded {
            Some(facts) => facts.clone(),
            None => self.compute_facts(space),
        }
    }

    pub(crate) fn supersede(&mut self, space: &AddressSpace) {
        if self.superseded.is_none() {
            self.superseded = Some(self.compute_facts(space));
        }
    }

    fn compute_facts(&self, space: &AddressSpace) -> ImageFacts {
        let is_image = |name: &str| {
            [&self.exe_name, &self.interp_name]
                .iter()
                .any(|image| image.as_deref() == Some(name))
        };
        let library_names: HashSet<&str> = space
            .iter()
            .filter(|region| region.kind == RegionKind::File && region.perms.executable())
            .map(Region::name)
            .filter(|name| !is_image(name))
            .collect();
        let library_starts = || {
            space
                .iter()
                .filter(|region| {
                    region.kind == RegionKind::File && library_names.contains(region.name())
                })
                .map(|region| region.start)
        };
        ImageFacts {
            lowest_library: library_starts().min(),
            highest_library: library_starts().max(),
            above_brk: space
                .first_from(self.brk_start, |region| region.kind != RegionKind::Heap)
                .cloned(),
        }
    }
}

/// A fresh address space for `record`: the kernel's own mappings in the order it made them,
/// then the stack and the heap (when the break is already above its start).
pub(crate) fn build_image(
    mappings: &[ExecMappingEvent],
    record: &ExecEvent,
    created: Creation,
    memfds: &MemfdRegistry,
    names: &mut Names,
) -> AddressSpace {
    let mut space = AddressSpace::new();
    for mapping in mappings {
        apply_mapping(&mut space, mapping, created, memfds, names);
    }
    if record.layout.stack_end > record.layout.stack_start {
        let stack = Backing::named(RegionKind::Stack, STACK_NAME, names);
        space.map(stack.region(
            record.layout.stack_start,
            record.layout.stack_end,
            Perms::PRIVATE_RW,
            0,
            created,
        ));
    }
    if record.layout.brk > record.layout.start_brk {
        let name = names.intern(HEAP_NAME);
        let heap_end = page_align_up(record.layout.brk);
        space.map(heap_region(
            record.layout.start_brk,
            heap_end,
            created,
            &name,
        ));
    }
    space
}

fn apply_mapping(
    space: &mut AddressSpace,
    mapping: &ExecMappingEvent,
    created: Creation,
    memfds: &MemfdRegistry,
    names: &mut Names,
) {
    let start = mapping.start;
    let Some(end) = start.checked_add(page_align_up(mapping.len)) else {
        return;
    };
    let prot = u64::from(mapping.prot);
    match mapping.kind {
        ExecMappingKind::Mmap => {
            let shared = u64::from(mapping.flags) & MAP_SHARED != 0;
            let backing = match &mapping.file {
                Some(file) => Backing::of_file(file, None, memfds, names),
                None if u64::from(mapping.flags) & MAP_ANONYMOUS != 0 => Backing::anonymous(shared),
                None => Backing::unnamed(RegionKind::Other),
            };
            let perms = Perms::from_prot(prot, shared);
            space.map(backing.region(start, end, perms, mapping.offset, created));
        }
        ExecMappingKind::Bss => {
            // vm_brk_flags maps read-write; the record's prot, when given, is the segment's.
            let perms = if prot == 0 {
                Perms::PRIVATE_RW
            } else {
                Perms::from_prot(prot, false)
            };
            space.map(Backing::anonymous(false).region(start, end, perms, 0, created));
        }
        ExecMappingKind::Special => {
            let name = mapping.name.as_deref().unwrap_or("");
            let backing = Backing::named(special_kind(name), name, names);
            let perms = Perms::from_prot(prot, false);
            space.map(backing.region(start, end, perms, 0, created));
        }
    }
}

/// The kernel's own pages (vdso, vvar, vsyscall) are one kind; other special mappings
/// (uprobes' xol area…) are "other".
pub(crate) fn special_kind(name: &str) -> RegionKind {
    if name == "[vdso]" || name == "[vsyscall]" || name.starts_with("[vvar") {
        RegionKind::Vdso
    } else {
        RegionKind::Other
    }
}

/// Identifies the executable and the interpreter among the new image's mappings: the
/// executable is the file holding start_code (or the entry point, or the program headers),
/// the interpreter the file at AT_BASE.
pub(crate) fn exec_info(
    record: &ExecEvent,
    space: &AddressSpace,
    time_ns: u64,
    from_abi: Abi,
) -> ExecInfo {
    let file_name_at = |address: u64| {
        space
            .region_at(address)
            .filter(|region| region.kind == RegionKind::File && address != 0)
            .and_then(|region| region.name.clone())
    };
    let exe_name = [
        record.layout.start_code,
        record.layout.entry,
        record.layout.phdr,
    ]
    .into_iter()
    .find_map(file_name_at);
    let interp_name = file_name_at(record.layout.interp_base);
    let exe_base = exe_name
        .as_deref()
        .and_then(|exe| {
            space
                .iter()
                .find(|region| region.name() == exe)
                .map(|region| region.start)
        })
        .unwrap_or(record.layout.start_code);
    ExecInfo {
        time_ns,
        filename: record.filename.clone(),
        interp: record.interp.clone(),
        from_abi,
        to_abi: record.new_abi,
        personality: record.personality,
        exe_base,
        interp_base: record.layout.interp_base,
        start_code: record.layout.start_code,
        entry: record.layout.entry,
        mmap_base: record.layout.mmap_base,
        brk_start: record.layout.start_brk,
        stack_start: record.layout.stack_start,
        stack_end: record.layout.stack_end,
        exe_name,
        interp_name,
        superseded: None,
    }
}
