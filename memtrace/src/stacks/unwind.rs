//! From a [`StackSample`] to return addresses.
//!
//! x86_64 samples are unwound by `framehop` with each module's DWARF CFI (`.eh_frame`, indexed
//! by `.eh_frame_hdr`): that is what gets through glibc, which keeps no frame pointers. Modules
//! are registered with framehop lazily, frame by frame, as the walk reaches them, so a sample
//! only costs the modules its stack passes through. Where an address has no module or its
//! module no unwind information, framehop follows the frame pointer instead.
//!
//! ia32 samples are unwound by the same CFI, read with gimli ([`super::cfi_i386`]: framehop
//! does not support 32-bit x86), frame pointers again where a module has none. Their first
//! frame is always in the vDSO's `__kernel_vsyscall` ([`super::vdso`]), whose CFI is read from
//! the process's memory, or else taken as the kernel lays it out. A walk that still stops
//! early is replaced by the frame-pointer search of [`super::frame_pointer`] when that finds
//! more frames.

use std::{collections::HashMap, ops::Range, path::Path, rc::Rc, sync::Arc};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    FrameAddress, Module as FramehopModule, Unwinder as _,
};

use super::{
    cfi_i386::{self, Regs, Step},
    elf::FileIdentity,
    frame_pointer,
    modules::{Module, ModuleCache, SharedModules},
    unwind_sections::{SectionData, UnwindSections},
    vdso::{self, Vdso, VDSO_NAME},
    FileView, JitSymbol, MappedFile, ModuleMap, StackAbi, StackSample, Walk,
};

/// ia32 registers and addresses are 32 bits wide.
const I386_MASK: u64 = 0xffff_ffff;

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
    /// gimli's evaluation state for ia32 walks, kept between them.
    cfi_context: Box<cfi_i386::Context>,
}

/// A module an ia32 walk has looked up: its address range, CFI and base AVMA.
type I386Module = (Range<u64>, Arc<UnwindSections>, u64);

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
            cfi_context: Box::new(cfi_i386::Context::new()),
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
            StackAbi::I386 => self.unwind_i386(sample, modules, max_frames),
        }
    }

    /// The vDSO function at `address` of a process whose vDSO mapping starts at
    /// `vdso_start`, if a walk of `abi` has read that vDSO.
    pub fn vdso_symbol(&self, abi: StackAbi, vdso_start: u64, address: u64) -> Option<JitSymbol> {
        vdso::read_before(abi)?.symbol_at(vdso_start, address)
    }

    /// The build-id of the version of `module_path` this unwinder last read, if the file has
    /// one. Recorded with a stack, it lets the symbolizer name frames from that very build.
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
        let overlaps = |range: &Range<u64>| range.start < mapping.end && mapping.start < range.end;
        if !mapping.executable || registered.iter().any(overlaps) {
            return None;
        }
        if mapping.path == VDSO_NAME {
            let vdso = self.vdso_of(StackAbi::X86_64, &mapping)?;
            return Some(FramehopModule::new(
                mapping.path.clone(),
                mapping.start..mapping.end,
                vdso.base_avma(mapping.start)?,
                vdso.unwind.framehop_info(),
            ));
        }
        if !mapping.path.starts_with('/') {
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

    /// The vDSO `mapping` shows, read from its process unless read before; a mapping not of
    /// a live process ([`FileView::Host`]) has no memory to read it from.
    fn vdso_of(&self, abi: StackAbi, mapping: &MappedFile) -> Option<Arc<Vdso>> {
        match mapping.view {
            FileView::Process { pid, .. } => vdso::image(abi, pid, mapping.start),
            FileView::Host => vdso::read_before(abi),
        }
    }

    /// The CFI walk of an ia32 sample, or the frame-pointer search when that gets further.
    fn unwind_i386(
        &mut self,
        sample: &StackSample,
        modules: &dyn ModuleMap,
        max_frames: usize,
    ) -> Walk {
        let walk = self.walk_i386_cfi(sample, modules, max_frames);
        if walk.truncated {
            let searched = frame_pointer::walk_i386(sample, modules, max_frames);
            if searched.frames.len() > walk.frames.len() {
                return searched;
            }
        }
        walk
    }

    fn walk_i386_cfi(
        &mut self,
        sample: &StackSample,
        modules: &dyn ModuleMap,
        max_frames: usize,
    ) -> Walk {
        let mut regs = Regs {
            ip: sample.ip & I386_MASK,
            sp: sample.sp & I386_MASK,
            bp: Some(sample.bp & I386_MASK),
        };
        // The modules this walk has met: a stack passes through few, most of them many times.
        let mut met: Vec<I386Module> = Vec::new();
        let mut frames = vec![sample.ip];
        loop {
            if frames.len() >= max_frames {
                return Walk {
                    frames,
                    truncated: true,
                };
            }
            // The innermost frame is stopped at its syscall; the others at a return address,
            // whose call is one byte earlier.
            let lookup = if frames.len() == 1 {
                regs.ip
            } else {
                regs.ip.saturating_sub(1)
            };
            let module = match met.iter().find(|(range, ..)| range.contains(&lookup)) {
                Some(module) => Some(module.clone()),
                None => self.i386_module(lookup, modules).inspect(|module| {
                    met.push(module.clone());
                }),
            };
            let by_cfi = module.and_then(|(_, sections, base_avma)| {
                let cfi = sections.cfi()?;
                cfi_i386::step(
                    &cfi,
                    base_avma,
                    lookup,
                    &mut regs,
                    sample,
                    &mut self.cfi_context,
                )
            });
            let step = by_cfi.unwrap_or_else(|| {
                let in_vdso = modules
                    .mapping_at(lookup)
                    .is_some_and(|mapping| mapping.path == VDSO_NAME);
                if frames.len() == 1 && in_vdso {
                    cfi_i386::kernel_vsyscall_step(&mut regs, sample)
                } else {
                    cfi_i386::frame_pointer_step(&mut regs, sample, modules)
                }
            });
            match step {
                Step::Caller(return_address) => frames.push(return_address),
                Step::Outermost => {
                    return Walk {
                        frames,
                        truncated: false,
                    }
                }
                Step::Lost => {
                    return Walk {
                        frames,
                        truncated: true,
                    }
                }
            }
        }
    }

    /// The CFI of the executable mapping (file or vDSO) holding `address`, if it can be read.
    fn i386_module(&mut self, address: u64, modules: &dyn ModuleMap) -> Option<I386Module> {
        let mapping = modules.mapping_at(address)?;
        if !mapping.executable {
            return None;
        }
        let (sections, base_avma) = if mapping.path == VDSO_NAME {
            let vdso = self.vdso_of(StackAbi::I386, &mapping)?;
            (vdso.unwind.clone(), vdso.base_avma(mapping.start)?)
        } else if mapping.path.starts_with('/') {
            let sections = match &mapping.view {
                FileView::Host => self.module_sections(&mapping.path)?,
                FileView::Process { .. } => self.viewed_sections(&mapping)?,
            };
            let base_avma = sections.base_avma(&mapping)?;
            (sections, base_avma)
        } else {
            return None;
        };
        Some((mapping.start..mapping.end, sections, base_avma))
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
