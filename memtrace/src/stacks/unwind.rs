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

use std::{collections::HashMap, ops::Range, path::Path, rc::Rc, sync::Arc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    FrameAddress, Module as FramehopModule, Unwinder as _,
};

use super::{
    elf::FileIdentity,
    frame_pointer,
    modules::{Module, ModuleCache, SharedModules},
    unwind_sections::{SectionData, UnwindSections},
    FileView, MappedFile, ModuleMap, StackAbi, StackSample, Walk,
};

/// Unwinds stack samples with the unwind sections of the modules in its [`ModuleCache`].
pub struct Unwinder {
    modules: SharedModules,
    /// The file version each path held when last read from memtrace's own root
    /// ([`FileView::Host`]).
    by_path: HashMap<String, LastRead>,
    /// Mappings whose file could not be read as their process maps it, so their frames were
    /// walked without their CFI (frame pointers only).
    unreadable: u64,
    rule_cache: CacheX86_64,
}

/// The file a path held when the unwinder last read it.
struct LastRead {
    identity: FileIdentity,
    module: Rc<Module>,
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwinder {
    /// An unwinder with a module cache of its own.
    pub fn new() -> Self {
        Self::with_modules(ModuleCache::new().shared())
    }

    /// An unwinder that reads modules through `modules`, shared with a symbolizer.
    pub fn with_modules(modules: SharedModules) -> Self {
        Self {
            modules,
            by_path: HashMap::new(),
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
        self.walk(sample, modules, max_frames).frames
    }

    /// [`Self::unwind`], and whether the walk was cut short.
    pub fn walk(
        &mut self,
        sample: &StackSample,
        modules: &dyn ModuleMap,
        max_frames: usize,
    ) -> Walk {
        if max_frames == 0 {
            return Walk {
                frames: Vec::new(),
                truncated: true,
            };
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
        self.by_path.get(module_path)?.module.build_id.as_deref()
    }

    fn unwind_x86_64(
        &mut self,
        sample: &StackSample,
        modules: &dyn ModuleMap,
        max_frames: usize,
    ) -> Walk {
        // A fresh framehop unwinder per sample: module addresses differ between processes, and
        // `ModuleMap` speaks for one process only. The parsed sections are shared (`Arc`), so
        // this costs a few allocations, not a parse.
        let mut framehop = UnwinderX86_64::<SectionData>::new();
        let mut registered: Vec<Range<u64>> = Vec::new();
        let mut regs = UnwindRegsX86_64::new(sample.ip, sample.sp, sample.bp);
        let mut read_stack = |address: u64| sample.read_word::<8>(address).ok_or(());

        let mut frames = vec![sample.ip];
        let mut address = FrameAddress::from_instruction_pointer(sample.ip);
        loop {
            if frames.len() >= max_frames {
                return Walk {
                    frames,
                    truncated: true,
                };
            }
            let lookup = address.address_for_lookup();
            if !registered.iter().any(|range| range.contains(&lookup)) {
                if let Some(module) = self.framehop_module(lookup, modules, &registered) {
                    registered.push(module.avma_range());
                    framehop.add_module(module);
                }
            }
            let caller =
                framehop.unwind_frame(address, &mut regs, &mut self.rule_cache, &mut read_stack);
            // `Ok(None)` is the outermost frame (`_start`, a thread's start, whose CFI says
            // there is no caller); an error is a read past the captured stack or an address
            // no rule could unwind: nothing more can be trusted, and the stack is cut short.
            let return_address = match caller {
                Ok(Some(return_address)) => return_address,
                Ok(None) => {
                    return Walk {
                        frames,
                        truncated: false,
                    }
                }
                Err(_) => {
                    return Walk {
                        frames,
                        truncated: true,
                    }
                }
            };
            let Some(next) = FrameAddress::from_return_address(return_address) else {
                return Walk {
                    frames,
                    truncated: true,
                };
            };
            frames.push(return_address);
            address = next;
        }
    }

    /// The framehop module for the executable file mapping that holds `address`, if its file
    /// can be read and no registered module overlaps it.
    fn framehop_module(
        &mut self,
        address: u64,
        modules: &dyn ModuleMap,
        registered: &[Range<u64>],
    ) -> Option<FramehopModule<SectionData>> {
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
        Some(FramehopModule::new(
            mapping.path.clone(),
            mapping.start..mapping.end,
            base_avma,
            sections.framehop_info(),
        ))
    }

    /// The unwind sections of the file `mapping` maps, read through its process's view
    /// ([`super::mapped_file`]).
    fn viewed_sections(&mut self, mapping: &MappedFile) -> Option<Arc<UnwindSections>> {
        match self.modules.borrow_mut().mapped(mapping) {
            Ok((_, module)) => module.unwind.clone(),
            Err(_) => {
                self.unreadable += 1;
                None
            }
        }
    }

    /// The unwind sections of the file at `path`, the version read last while the file is
    /// unchanged. A file that has disappeared is served from that version too: processes keep
    /// running the version they mapped. A file replaced on disk is looked at again (the cache
    /// knows it if it is the same build), since processes started from now on map it (a
    /// process still running an old build then unwinds only as far as frame pointers go).
    fn module_sections(&mut self, path: &str) -> Option<Arc<UnwindSections>> {
        let current = FileIdentity::current(Path::new(path));
        if let Some(last) = self.by_path.get(path) {
            if current.is_none() || current == Some(last.identity) {
                return last.module.unwind.clone();
            }
        }
        let (identity, _, module) = self.modules.borrow_mut().at_path(path)?;
        let sections = module.unwind.clone();
        self.by_path
            .insert(path.to_string(), LastRead { identity, module });
        sections
    }
}
