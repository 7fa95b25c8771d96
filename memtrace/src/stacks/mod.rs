//! User call stacks for the mappings a traced syscall creates.
//!
//! Leaked memory is grouped by the call site that allocated it, so every traced mapping carries
//! the user stack of its syscall. The kernel side captures a [`StackSample`] (the user registers
//! at the syscall and a copy of the top of the user stack); this module turns it into return
//! addresses ([`Unwinder`]) and those into names ([`Symbolizer`]).
//!
//! Distribution libcs are built without frame pointers and every mmap is made from inside libc
//! (malloc → sysmalloc → mmap), so a frame-pointer walk stops at the first libc frame. Stacks
//! are therefore unwound with the DWARF CFI in each module's `.eh_frame`, falling back to frame
//! pointers only where a module has no unwind information: 64-bit ones by `framehop`, 32-bit
//! (ia32) ones by gimli's CFI evaluation ([`cfi_i386`]: framehop has no 32-bit x86). A 32-bit
//! syscall is made from the vDSO's `__kernel_vsyscall`, which is no file: the vDSO is read from
//! a live process's memory, once per ABI ([`vdso`]).
//!
//! Modules are read from disk, a live process's as that process sees them ([`mapped_file`]:
//! a container's files are not the host's files of the same name), each file once, into one
//! [`ModuleCache`] the [`Unwinder`] and the [`Symbolizer`] share: by build-id, so containers
//! sharing an image share one parse, and a file replaced on disk (same path, new inode) is
//! recognised by its build-id instead of being trusted blindly. Unwinding happens when the sample arrives, while
//! the files on disk are most likely the ones mapped; [`Unwinder::module_build_id`] tells which
//! build it used, so that a later symbolization can ask for exactly that build
//! ([`Symbolizer::symbolize_inlined`]) and get module+offset rather than another build's names.
//!
//! Return addresses point after their call; [`symbolize_stack`] looks them up one byte earlier,
//! and callers that name frames one by one should do the same.

mod cfi_i386;
mod dwarf;
pub(crate) mod elf;
mod frame_pointer;
pub mod mapped_file;
mod module_symbols;
mod modules;
pub mod perf_map;
pub mod symbolize;
pub mod unwind;
mod unwind_sections;
pub mod vdso;

#[cfg(test)]
mod tests;

pub use mapped_file::FileView;
pub use modules::{ModuleCache, SharedModules};
pub use perf_map::{JitSymbol, PerfMaps};
pub use symbolize::Symbolizer;
pub use unwind::Unwinder;

/// The user ABI of the sampled task, which decides word size and unwinding method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackAbi {
    X86_64,
    /// A 32-bit x86 task (on a 64-bit kernel): registers hold 32-bit values, stack words are
    /// 4 bytes.
    I386,
}

/// What the kernel captured at the syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub abi: StackAbi,
    /// The user instruction pointer (just after the syscall instruction).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The bytes at `[sp, sp + stack.len())`.
    pub stack: Vec<u8>,
}

impl StackSample {
    /// The little-endian word of `N` bytes at `address`, if it lies inside the captured stack.
    fn read_word<const N: usize>(&self, address: u64) -> Option<u64> {
        let start = usize::try_from(address.checked_sub(self.sp)?).ok()?;
        let bytes: [u8; N] = self
            .stack
            .get(start..start.checked_add(N)?)?
            .try_into()
            .ok()?;
        let mut word = [0u8; 8];
        word[..N].copy_from_slice(&bytes);
        Some(u64::from_le_bytes(word))
    }

    /// Whether `address` lies inside the captured stack bytes.
    fn captures(&self, address: u64) -> bool {
        address >= self.sp && address - self.sp < self.stack.len() as u64
    }
}

/// The return addresses of one walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Innermost first; the first is the syscall's ip.
    pub frames: Vec<u64>,
    /// The walk stopped before the outermost frame: at `max_frames`, at stack bytes it
    /// lacked, or at an address it could not unwind.
    pub truncated: bool,
}

/// A file mapping of the process at the time of the sample, as memtrace's model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    pub start: u64,
    pub end: u64,
    /// The file offset mapped at `start`.
    pub file_offset: u64,
    pub path: String,
    pub executable: bool,
    /// The inode the kernel reported for the mapped file; 0 when unknown (not checked).
    pub inode: u64,
    /// Whose view the file is read through ([`mapped_file`]).
    pub view: FileView,
}

impl MappedFile {
    /// The file offset that `address` (inside this mapping) shows.
    pub fn file_offset_of(&self, address: u64) -> u64 {
        address - self.start + self.file_offset
    }

    fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }
}

/// Where the unwinder finds modules for addresses of one process.
pub trait ModuleMap {
    fn mapping_at(&self, address: u64) -> Option<MappedFile>;
}

/// A process's file mappings as a plain sorted list, e.g. from `/proc/PID/maps`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedFiles {
    sorted: Vec<MappedFile>,
}

impl FromIterator<MappedFile> for MappedFiles {
    fn from_iter<I: IntoIterator<Item = MappedFile>>(mappings: I) -> Self {
        let mut sorted: Vec<MappedFile> = mappings.into_iter().collect();
        sorted.sort_by_key(|mapping| mapping.start);
        Self { sorted }
    }
}

impl ModuleMap for MappedFiles {
    fn mapping_at(&self, address: u64) -> Option<MappedFile> {
        let after = self
            .sorted
            .partition_point(|mapping| mapping.start <= address);
        let candidate = self.sorted.get(after.checked_sub(1)?)?;
        candidate.contains(address).then(|| candidate.clone())
    }
}

/// One symbolized stack frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The address in the process (the syscall's ip, or a return address).
    pub address: u64,
    /// Path of the file mapped at `address`; `None` for anonymous or unknown memory.
    pub module: Option<String>,
    /// File offset of `address` in `module`.
    pub module_offset: Option<u64>,
    /// Demangled function name, from DWARF or else from the symbol table.
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// This function was inlined into the frame that follows it (same `address`); only DWARF
    /// can tell, so it is always false for frames named from the symbol table.
    pub inlined: bool,
}

impl std::fmt::Display for Frame {
    /// `function (file:line)` when known, else `module+0xoffset`, else the bare address.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.function, &self.module, self.module_offset) {
            (Some(function), _, _) => write!(f, "{function}")?,
            (None, Some(module), Some(offset)) => {
                let name = module.rsplit('/').next().unwrap_or(module);
                write!(f, "{name}+{offset:#x}")?
            }
            _ => write!(f, "{:#x}", self.address)?,
        }
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, " ({file}:{line})"),
            (Some(file), None) => write!(f, " ({file})"),
            _ => Ok(()),
        }
    }
}

/// Names every address of an unwound stack (innermost first, as [`Unwinder::unwind`] returns
/// it). Inlined functions become frames of their own, innermost first, all with the address
/// they were found at.
///
/// Every address but the first is a return address, which points after its call instruction
/// and can belong to the next line or even the next function; those are looked up one byte
/// earlier, inside the call, while the frame keeps the true address.
pub fn symbolize_stack(
    symbolizer: &mut Symbolizer,
    addresses: &[u64],
    modules: &dyn ModuleMap,
) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(addresses.len());
    for (index, &address) in addresses.iter().enumerate() {
        let lookup = if index == 0 {
            address
        } else {
            address.saturating_sub(1)
        };
        let Some(mapping) = modules.mapping_at(lookup) else {
            frames.push(Frame {
                address,
                ..Frame::default()
            });
            continue;
        };
        let module_offset = mapping.file_offset_of(address);
        for mut frame in
            symbolizer.symbolize_inlined(&mapping.path, None, mapping.file_offset_of(lookup))
        {
            frame.address = address;
            frame.module_offset = Some(module_offset);
            frames.push(frame);
        }
    }
    frames
}
