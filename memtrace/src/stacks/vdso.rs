//! The vDSO: the kernel's own shared object, mapped into every process at `[vdso]`.
//!
//! A 32-bit program makes its syscalls through the vDSO's `__kernel_vsyscall` (sysenter or
//! `int 0x80`), so every ia32 stack sample starts there; x86_64 stacks pass through it only in
//! the time functions' syscall fallbacks. It is no file on disk, so its CFI and its symbols are
//! read from a live process's memory (`/proc/PID/mem` at its `[vdso]` mapping). The image is
//! the kernel's, the same for every process of one ABI, so it is read once per ABI by
//! [`VdsoImages`] (and again only while no process of that ABI could be read); each process
//! maps it at an address of its own, which the unwinder applies.
//!
//! Its frames are named when the stack is unwound, from its dynamic symbols (`__kernel_vsyscall`,
//! `__vdso_clock_gettime`), and the stream records those names as it does JIT code's
//! ([`JitSymbol`]): a replay on a machine whose kernel has another vDSO names them alike.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    sync::{Arc, Mutex, PoisonError},
};

use object::{Object, ObjectSymbol, SymbolKind};

use super::{elf, unwind_sections::UnwindSections, JitSymbol, StackAbi};

/// The name of the vDSO's mapping in `/proc/PID/maps` and in memtrace's model.
pub const VDSO_NAME: &str = "[vdso]";

/// Far more than any vDSO (8 KiB on 6.x kernels): an ELF header claiming more is not one.
const MAX_IMAGE_BYTES: u64 = 1 << 20;

/// The vDSO images read so far, by ABI: the kernel's, so one store for all of memtrace,
/// filled by whoever first reaches a live process of that ABI (capture at an exec, the
/// unwinder at a sample).
static IMAGES: Mutex<Vec<(StackAbi, Arc<Vdso>)>> = Mutex::new(Vec::new());

/// The vDSO of `abi`, if read before.
pub(super) fn read_before(abi: StackAbi) -> Option<Arc<Vdso>> {
    let images = IMAGES.lock().unwrap_or_else(PoisonError::into_inner);
    images
        .iter()
        .find(|(known, _)| *known == abi)
        .map(|(_, vdso)| vdso.clone())
}

/// The vDSO of `abi`, read from process `pid`'s mapping at `start` if not read before.
/// `None` when it was never read and cannot be now (the process is gone): the walk then
/// does without it, and a later sample of a live process reads it.
pub(super) fn image(abi: StackAbi, pid: u32, start: u64) -> Option<Arc<Vdso>> {
    if let Some(vdso) = read_before(abi) {
        return Some(vdso);
    }
    let vdso = match Vdso::read(pid, start, abi) {
        Ok(vdso) => Arc::new(vdso),
        Err(error) => {
            log::debug!("pid {pid}: vdso at {start:#x} not read: {error}");
            return None;
        }
    };
    let mut images = IMAGES.lock().unwrap_or_else(PoisonError::into_inner);
    if !images.iter().any(|(known, _)| *known == abi) {
        images.push((abi, vdso.clone()));
    }
    Some(vdso)
}

/// A process of `abi` has just exec'ed with its vDSO at `start`: the vDSO of its ABI is read
/// now unless read before. Stack samples are often unwound after their process is gone,
/// too late to read it from them; right after its exec a process still runs.
pub fn remember(abi: memtrace_common::Abi, pid: u32, start: u64) {
    let abi = match abi {
        memtrace_common::Abi::I386 => StackAbi::I386,
        memtrace_common::Abi::X86_64 => StackAbi::X86_64,
        _ => return,
    };
    if start != 0 {
        image(abi, pid, start);
    }
}

/// What unwinding and naming need of one vDSO image.
pub(super) struct Vdso {
    pub unwind: Arc<UnwindSections>,
    /// The SVMA of the image's first byte: a mapping address minus the mapping's start plus
    /// this is the SVMA the CFI and the symbols speak of.
    first_svma: u64,
    /// Its functions, by SVMA.
    symbols: Vec<VdsoSymbol>,
}

struct VdsoSymbol {
    svma: u64,
    len: u64,
    name: Arc<str>,
}

impl Vdso {
    /// Reads the image mapped at `start` in process `pid`, which must be `abi`'s: a 64-bit
    /// program's `int 0x80` is an ia32 syscall too, but its vDSO is the 64-bit one, and it
    /// must not stand for the 32-bit one in every later walk.
    fn read(pid: u32, start: u64, abi: StackAbi) -> io::Result<Self> {
        // /proc/PID/mem rather than process_vm_readv: the same read, and a plain file.
        let mem = File::open(format!("/proc/{pid}/mem"))?;
        let mut header = [0u8; 64];
        mem.read_exact_at(&mut header, start)?;
        let len = image_len(&header).ok_or_else(|| invalid("not an ELF image"))?;
        let mut image = vec![0u8; len as usize];
        mem.read_exact_at(&mut image, start)?;
        Self::parse(&image, abi)
    }

    fn parse(image: &[u8], abi: StackAbi) -> io::Result<Self> {
        let file = object::File::parse(image).map_err(|error| invalid(&error.to_string()))?;
        if file.is_64() != (abi == StackAbi::X86_64) {
            return Err(invalid(&format!("not the vDSO of {abi:?}")));
        }
        let segments = elf::load_segments(&file);
        let first_svma =
            elf::svma_of_file_offset(&segments, 0).ok_or_else(|| invalid("no segment at 0"))?;
        let mut symbols: Vec<VdsoSymbol> = file
            .dynamic_symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.size() > 0)
            .filter_map(|symbol| {
                Some(VdsoSymbol {
                    svma: symbol.address(),
                    len: symbol.size(),
                    name: Arc::from(symbol.name().ok()?),
                })
            })
            .collect();
        // `clock_gettime` is a weak alias of `__vdso_clock_gettime`: the kernel's own name
        // (with underscores) is kept, as perf shows it.
        symbols.sort_by(|a, b| {
            a.svma
                .cmp(&b.svma)
                .then(b.name.starts_with("__").cmp(&a.name.starts_with("__")))
        });
        symbols.dedup_by_key(|symbol| symbol.svma);
        Ok(Self {
            unwind: Arc::new(UnwindSections::read(&file)),
            first_svma,
            symbols,
        })
    }

    /// The function at `address` of a process whose vDSO mapping starts at `start`, as a
    /// symbol at that process's addresses.
    pub(super) fn symbol_at(&self, start: u64, address: u64) -> Option<JitSymbol> {
        let svma = address.checked_sub(start)? + self.first_svma;
        let after = self.symbols.partition_point(|symbol| symbol.svma <= svma);
        let symbol = self.symbols.get(after.checked_sub(1)?)?;
        (svma - symbol.svma < symbol.len).then(|| JitSymbol {
            start: start + (symbol.svma - self.first_svma),
            len: symbol.len,
            name: symbol.name.clone(),
        })
    }

    /// The AVMA of SVMA 0 for a mapping at `start`, as framehop and the ia32 unwinder take it.
    pub(super) fn base_avma(&self, start: u64) -> Option<u64> {
        start.checked_sub(self.first_svma)
    }
}

/// The image's length from its ELF header: up to the end of its section headers or of its
/// last segment, whichever is further (the kernel's image keeps its section headers last).
fn image_len(header: &[u8; 64]) -> Option<u64> {
    use object::{
        elf::{FileHeader32, FileHeader64},
        read::elf::FileHeader,
        Endianness,
    };
    fn len<Elf: FileHeader<Endian = Endianness>>(header: &[u8]) -> Option<u64> {
        let elf = Elf::parse(header).ok()?;
        let endian = elf.endian().ok()?;
        let sections = Into::<u64>::into(elf.e_shoff(endian))
            + u64::from(elf.e_shnum(endian)) * u64::from(elf.e_shentsize(endian));
        let headers = Into::<u64>::into(elf.e_phoff(endian))
            + u64::from(elf.e_phnum(endian)) * u64::from(elf.e_phentsize(endian));
        Some(sections.max(headers))
    }
    let len = match object::FileKind::parse(&header[..]).ok()? {
        object::FileKind::Elf32 => len::<FileHeader32<Endianness>>(header)?,
        object::FileKind::Elf64 => len::<FileHeader64<Endianness>>(header)?,
        _ => return None,
    };
    (64..=MAX_IMAGE_BYTES).contains(&len).then_some(len)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("vdso: {message}"))
}

/// memtrace's own (x86_64) vDSO, read once: the reference the tests compare against.
#[cfg(test)]
pub(super) fn own() -> Option<(u64, Arc<Vdso>)> {
    use std::sync::OnceLock;
    static OWN: OnceLock<Option<(u64, Arc<Vdso>)>> = OnceLock::new();
    OWN.get_or_init(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let region = maps
            .lines()
            .filter_map(crate::procfs::parse_maps_line)
            .find(|region| region.name == VDSO_NAME)?;
        let vdso = Vdso::read(std::process::id(), region.start, StackAbi::X86_64).ok()?;
        Some((region.start, Arc::new(vdso)))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_vdso_is_read_with_its_cfi_and_functions() {
        let (start, vdso) = own().expect("this process has a vdso");
        assert!(vdso.unwind.has_eh_frame(), "the vdso has .eh_frame");
        let clock = vdso
            .symbols
            .iter()
            .find(|symbol| symbol.name.contains("clock_gettime"))
            .expect("clock_gettime in the vdso");
        let inside = start + (clock.svma - vdso.first_svma) + 1;
        let symbol = vdso.symbol_at(start, inside).unwrap();
        assert_eq!(&*symbol.name, "__vdso_clock_gettime");
        assert!((symbol.start..symbol.start + symbol.len).contains(&inside));
        assert!(
            vdso.symbol_at(start, start).is_none(),
            "the ELF header is no function"
        );
    }

    #[test]
    fn the_image_is_read_once_per_abi() {
        let (start, _) = own().unwrap();
        let first = image(StackAbi::X86_64, std::process::id(), start).unwrap();
        // pid 0 has no /proc entry: only the image read before can answer.
        let again = image(StackAbi::X86_64, 0, start).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    /// A place in the vDSO's `__vdso_clock_gettime` whose CFA is not `rsp + 8` (where
    /// framehop's guess for a first frame without CFI, "just return", would be wrong), with
    /// that CFA's offset from `rsp`.
    fn clock_gettime_inside_a_frame(start: u64, vdso: &Vdso) -> (u64, i64) {
        use gimli::{BaseAddresses, CfaRule, UnwindSection};
        let clock = vdso
            .symbols
            .iter()
            .find(|symbol| &*symbol.name == "__vdso_clock_gettime")
            .expect("__vdso_clock_gettime");
        let eh_frame_section = vdso.unwind.cfi().expect(".eh_frame").eh_frame;
        let eh_frame = gimli::EhFrame::new(&eh_frame_section.data, gimli::LittleEndian);
        let bases = BaseAddresses::default().set_eh_frame(eh_frame_section.svma.start);
        let mut context = gimli::UnwindContext::new();
        (clock.svma..clock.svma + clock.len)
            .find_map(|svma| {
                let row = eh_frame
                    .unwind_info_for_address(
                        &bases,
                        &mut context,
                        svma,
                        gimli::EhFrame::cie_from_offset,
                    )
                    .ok()?;
                match *row.cfa() {
                    CfaRule::RegisterAndOffset { register, offset }
                        if register == gimli::X86_64::RSP && offset > 8 =>
                    {
                        Some((start + (svma - vdso.first_svma), offset))
                    }
                    _ => None,
                }
            })
            .expect("a frame of clock_gettime with a pushed register")
    }

    /// x86_64 stacks rarely pass through the vDSO (its time functions' syscall fallbacks),
    /// but when they do its CFI unwinds them, read from the process like a 32-bit one's.
    #[test]
    fn an_x86_64_walk_unwinds_the_vdso_by_its_cfi() {
        use crate::stacks::{FileView, MappedFile, MappedFiles, StackSample, Unwinder};
        let (start, vdso) = own().unwrap();
        let (ip, cfa_offset) = clock_gettime_inside_a_frame(start, &vdso);
        let modules: MappedFiles = [MappedFile {
            start,
            end: start + 0x2000,
            file_offset: 0,
            path: VDSO_NAME.to_string(),
            executable: true,
            inode: 0,
            view: FileView::Process {
                pid: std::process::id(),
                root: None,
            },
        }]
        .into_iter()
        .collect();
        let return_address: u64 = 0x5555_5555_1234;
        let mut stack = vec![0u8; cfa_offset as usize + 64];
        let at = cfa_offset as usize - 8;
        stack[at..at + 8].copy_from_slice(&return_address.to_le_bytes());
        let sample = StackSample {
            abi: StackAbi::X86_64,
            ip,
            sp: 0x7ffd_0000_0000,
            bp: 0,
            stack,
        };
        let walk = Unwinder::new().walk(&sample, &modules, 8);
        assert_eq!(walk.frames[..2], [ip, return_address], "{walk:?}");
    }

    #[test]
    fn a_vdso_of_another_abi_is_refused() {
        let (start, _) = own().unwrap();
        let error = Vdso::read(std::process::id(), start, StackAbi::I386)
            .err()
            .expect("a 64-bit vDSO is no 32-bit one");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn a_header_that_is_no_elf_is_refused() {
        assert_eq!(image_len(&[0u8; 64]), None);
    }
}
