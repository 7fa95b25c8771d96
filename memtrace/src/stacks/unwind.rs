//! From a [`StackSample`] to return addresses.
//!
//! x86_64 samples are unwound by `framehop` with each module's DWARF CFI (`.eh_frame`, indexed
//! by `.eh_frame_hdr`): that is what gets through glibc, which keeps no frame pointers. Modules
//! are registered with framehop lazily, frame by frame, as the walk reaches them, so a sample
//! only costs the modules its stack passes through. Where an address has no module or its
//! module no unwind information, framehop follows the frame pointer instead.
//!
//! ia32 samples get a frame-pointer walk (the `frame_pointer` module): framehop does not
//! support 32-bit x86.

use std::{collections::HashMap, ops::Range, path::Path, sync::Arc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
};

use crate::file_access::Links;

use super::{
    elf::{self, ElfFile, FileIdentity, LoadSegment},
    frame_pointer, mapped_file, FileView, MappedFile, ModuleMap, StackAbi, StackSample,
};

/// Section data as framehop holds it: shared, so one parse serves every sample.
type SectionData = Arc<[u8]>;

/// Unwinds stack samples, caching the unwind sections of every module file it reads.
pub struct Unwinder {
    /// Modules read by path from memtrace's own root ([`FileView::Host`]).
    modules: HashMap<String, CachedModule>,
    /// Modules read through a live process's view, by the identity of the file read.
    viewed: HashMap<FileIdentity, Option<Arc<UnwindSections>>>,
    /// Every parse with a build-id, shared by all the files of that build (containers made
    /// from one image map the same build from files of their own).
    by_build_id: HashMap<Vec<u8>, Arc<UnwindSections>>,
    /// Mappings whose file could not be read as their process maps it, so their frames were
    /// walked without their CFI (frame pointers only).
    unreadable: u64,
    rule_cache: CacheX86_64,
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwinder {
    pub fn new() -> Self {
        Self {
            modules: HashMap::new(),
            viewed: HashMap::new(),
            by_build_id: HashMap::new(),
            unreadable: 0,
            rule_cache: CacheX86_64::new(),
        }
    }

    /// How many times a module could not be read as its process maps it (gone, or the file
    /// there is not the mapped one): those walks went on by frame pointers alone.
    pub fn unreadable_modules(&self) -> u64 {
        self.unreadable
    }

    /// Return addresses, innermost first (the first is the syscall's ip), at most `max_frames`.
    ///
    /// The walk ends at the outermost frame, at `max_frames`, or where it would need stack
    /// bytes beyond the captured ones.
    pub fn unwind(
        &mut self,
        sample: &StackSample,
        modules: &dyn ModuleMap,
        max_frames: usize,
    ) -> Vec<u64> {
        if max_frames == 0 {
            return Vec::new();
        }
        match sample.abi {
            StackAbi::X86_64 => self.unwind_x86_64(sample, modules, max_frames),
            StackAbi::I386 => frame_pointer::walk_i386(sample, modules, max_frames),
        }
    }

    /// The build-id of the version of `module_path` this unwinder last read, if the file has
    /// one. Recorded with a stack, it lets the symbolizer name frames from that very build.
    /// Only x86_64 walks read module files; ia32 walks leave this `None`.
    pub fn module_build_id(&self, module_path: &str) -> Option<&[u8]> {
        self.modules.get(module_path)?.build_id.as_deref()
    }

    fn unwind_x86_64(
        &mut self,
        sample: &StackSample,
        modules: &dyn ModuleMap,
        max_frames: usize,
    ) -> Vec<u64> {
        // A fresh framehop unwinder per sample: module addresses differ between processes, and
        // `ModuleMap` speaks for one process only. The parsed sections are shared (`Arc`), so
        // this costs a few allocations, not a parse.
        let mut framehop = UnwinderX86_64::<SectionData>::new();
        let mut registered: Vec<Range<u64>> = Vec::new();
        let mut regs = UnwindRegsX86_64::new(sample.ip, sample.sp, sample.bp);
        let mut read_stack = |address: u64| sample.read_word::<8>(address).ok_or(());

        let mut frames = vec![sample.ip];
        let mut address = FrameAddress::from_instruction_pointer(sample.ip);
        while frames.len() < max_frames {
            let lookup = address.address_for_lookup();
            if !registered.iter().any(|range| range.contains(&lookup)) {
                if let Some(module) = self.framehop_module(lookup, modules, &registered) {
                    registered.push(module.avma_range());
                    framehop.add_module(module);
                }
            }
            let caller =
                framehop.unwind_frame(address, &mut regs, &mut self.rule_cache, &mut read_stack);
            // `Ok(None)` is the outermost frame; an error is a read past the captured stack or
            // an address no rule could unwind: either way nothing more can be trusted.
            let Ok(Some(return_address)) = caller else {
                break;
            };
            let Some(next) = FrameAddress::from_return_address(return_address) else {
                break;
            };
            frames.push(return_address);
            address = next;
        }
        frames
    }

    /// The framehop module for the executable file mapping that holds `address`, if its file
    /// can be read and no registered module overlaps it.
    fn framehop_module(
        &mut self,
        address: u64,
        modules: &dyn ModuleMap,
        registered: &[Range<u64>],
    ) -> Option<Module<SectionData>> {
        let mapping = modules.mapping_at(address)?;
        if !mapping.executable || !mapping.path.starts_with('/') {
            return None;
        }
        let overlaps = |range: &Range<u64>| range.start < mapping.end && mapping.start < range.end;
        if registered.iter().any(overlaps) {
            return None;
        }
        let sections = match &mapping.view {
            FileView::Host => self.module_sections(&mapping.path)?,
            FileView::Process { .. } => self.viewed_sections(&mapping)?,
        };
        let base_avma = sections.base_avma(&mapping)?;
        Some(Module::new(
            mapping.path.clone(),
            mapping.start..mapping.end,
            base_avma,
            sections.framehop_info(),
        ))
    }

    /// The unwind sections of the file `mapping` maps, read through its process's view
    /// ([`mapped_file`]), from the cache when that file or its build was read before.
    fn viewed_sections(&mut self, mapping: &MappedFile) -> Option<Arc<UnwindSections>> {
        if let Some(identity) = mapped_file::identity(mapping) {
            if let Some(cached) = self.viewed.get(&identity) {
                return cached.clone();
            }
        }
        let Ok(file) = mapped_file::open(mapping) else {
            self.unreadable += 1;
            return None;
        };
        let sections = file.parse().map(|parsed| match elf::build_id(&parsed) {
            Some(build_id) => self
                .by_build_id
                .entry(build_id)
                .or_insert_with(|| Arc::new(UnwindSections::read(&parsed)))
                .clone(),
            None => Arc::new(UnwindSections::read(&parsed)),
        });
        self.viewed.insert(file.identity, sections.clone());
        sections
    }

    /// The unwind sections of the file at `path`, from the cache while the file is unchanged
    /// or has been replaced by the same build (same build-id). A file that has disappeared is
    /// served from the cache too: processes keep running the version they mapped. A file
    /// replaced by another build is read again, since processes started from now on map it
    /// (a process still running the old build then unwinds only as far as frame pointers go).
    fn module_sections(&mut self, path: &str) -> Option<Arc<UnwindSections>> {
        let current = FileIdentity::current(Path::new(path));
        if let Some(cached) = self.modules.get_mut(path) {
            match current {
                None => return cached.sections.clone(),
                Some(identity) if identity == cached.identity => return cached.sections.clone(),
                Some(identity) => {
                    let same_build = cached.build_id.is_some()
                        && ElfFile::open(Path::new(path), Links::Refuse)
                            .ok()
                            .and_then(|file| {
                                let parsed = file.parse()?;
                                elf::build_id(&parsed)
                            })
                            == cached.build_id;
                    if same_build {
                        cached.identity = identity;
                        return cached.sections.clone();
                    }
                }
            }
        }
        let loaded = CachedModule::load(Path::new(path))?;
        let sections = loaded.sections.clone();
        self.modules.insert(path.to_string(), loaded);
        sections
    }
}

/// What the unwinder keeps of one module file. A file that is not a usable ELF is remembered
/// as such (`sections: None`) so it is not read again for every sample.
struct CachedModule {
    identity: FileIdentity,
    build_id: Option<Vec<u8>>,
    sections: Option<Arc<UnwindSections>>,
}

impl CachedModule {
    fn load(path: &Path) -> Option<Self> {
        let file = ElfFile::open(path, Links::Refuse).ok()?;
        let Some(parsed) = file.parse() else {
            return Some(Self {
                identity: file.identity,
                build_id: None,
                sections: None,
            });
        };
        Some(Self {
            identity: file.identity,
            build_id: elf::build_id(&parsed),
            sections: Some(Arc::new(UnwindSections::read(&parsed))),
        })
    }
}

/// The sections framehop unwinds with, plus the segments that place them in memory.
struct UnwindSections {
    segments: Vec<LoadSegment>,
    text: Option<elf::SectionBytes>,
    eh_frame: Option<elf::SectionBytes>,
    eh_frame_hdr: Option<elf::SectionBytes>,
    /// Only read when there is no `.eh_frame`: framehop uses it as a last resort.
    debug_frame: Option<SectionData>,
    got_svma: Option<Range<u64>>,
}

impl UnwindSections {
    fn read<'data>(file: &impl object::Object<'data>) -> Self {
        let eh_frame = elf::section_bytes(file, ".eh_frame");
        let debug_frame = match eh_frame {
            Some(_) => None,
            None => elf::section_bytes(file, ".debug_frame").map(|section| section.data),
        };
        Self {
            segments: elf::load_segments(file),
            text: elf::section_bytes(file, ".text"),
            eh_frame,
            eh_frame_hdr: elf::section_bytes(file, ".eh_frame_hdr"),
            debug_frame,
            got_svma: elf::section_svma(file, ".got"),
        }
    }

    /// The AVMA of SVMA 0, which framehop calls the module's base (ELF's base SVMA is 0).
    ///
    /// The mapping places file offset `file_offset` at `start`; the segment holding that
    /// offset says which SVMA it has, so `start - svma` is the load bias. For a PIE or a
    /// shared library the text segment's SVMA usually equals its file offset and this is
    /// `start - file_offset`; for a non-PIE executable it is 0.
    fn base_avma(&self, mapping: &MappedFile) -> Option<u64> {
        let svma = elf::svma_of_file_offset(&self.segments, mapping.file_offset)?;
        mapping.start.checked_sub(svma)
    }

    fn framehop_info(&self) -> ExplicitModuleSectionInfo<SectionData> {
        let svma = |section: &Option<elf::SectionBytes>| section.as_ref().map(|s| s.svma.clone());
        let data = |section: &Option<elf::SectionBytes>| section.as_ref().map(|s| s.data.clone());
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: svma(&self.text),
            text: data(&self.text),
            got_svma: self.got_svma.clone(),
            eh_frame_svma: svma(&self.eh_frame),
            eh_frame: data(&self.eh_frame),
            eh_frame_hdr_svma: svma(&self.eh_frame_hdr),
            eh_frame_hdr: data(&self.eh_frame_hdr),
            debug_frame: self.debug_frame.clone(),
            ..ExplicitModuleSectionInfo::default()
        }
    }
}
