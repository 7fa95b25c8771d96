//! The mappings the kernel makes itself when it loads a new image, rebuilt at capture time.
//!
//! Between execve and the new program's first instruction the ELF loader maps the executable's
//! and the interpreter's PT_LOAD segments, adds their bss, and installs the vdso and its data
//! pages. None of that is a syscall. The exec event tells where things went (the executable
//! file, AT_PHDR, AT_BASE, AT_SYSINFO_EHDR); this module reads the program headers and places
//! the segments the way `load_elf_binary` does. The result goes into the event stream as
//! `ExecMapping` events, so recordings carry it and replay needs none of the files.

use std::{io, path::Path, sync::OnceLock};

use object::elf::{ET_DYN, PF_R, PF_W, PF_X, PT_LOAD, PT_PHDR};

use crate::event::{ExecMappingEvent, ExecMappingKind, FileRef};
use crate::file_access::Links;
use crate::linux_abi::{MAP_FIXED, MAP_PRIVATE, PROT_EXEC, PROT_READ, PROT_WRITE};
use crate::stacks::elf::{ElfFile, LoadHeaders, Segment};

use crate::linux_abi::PAGE_SIZE as PAGE;

/// Where the loader put the new image: from the exec event.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The ELF file the kernel loaded.
    pub exe: FileRef,
    /// AT_PHDR: the executable's program headers in memory.
    pub phdr: u64,
    /// AT_BASE: the interpreter's load address (0 without one).
    pub interp_base: u64,
    /// AT_SYSINFO_EHDR: the vdso (0 without one).
    pub vdso_base: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {0}: {1}")]
    Io(String, io::Error),
    #[error("{0} is not an ELF file memtrace can read")]
    NotElf(String),
    #[error("{0}: the file there now is not the one mapped (inode {1}, mapped {2})")]
    NotTheMappedFile(String, u64, u64),
}

/// The kernel-made mappings of a new image of process `pid`, in address order.
///
/// The files are read through the process's own view, never by their path on the host: a
/// process in a chroot or a container names its files from its own root, and the host may
/// have a different file (another glibc's ld.so) at the same path. The executable is read as
/// `/proc/PID/exe`, the interpreter as the very file mapped at AT_BASE
/// (`/proc/PID/map_files/START-END`); each is checked against the inode the kernel reported,
/// and a file that cannot be read or is not the mapped one is an error, never replaced.
///
/// `root`: the process's root as this machine reaches it, when known from before (see
/// `capture::roots`); `None` is memtrace's own.
pub fn kernel_mappings(
    image: &LoadedImage,
    pid: u32,
    root: Option<&Path>,
) -> Result<Vec<ExecMappingEvent>, ImageError> {
    // A short-lived process may be gone before its exec event is read: then the files are
    // read by path from the root it was last known to have (memtrace's own if none), the
    // executable still checked by its inode (a match also shows that root is its).
    let root = root.unwrap_or(Path::new("/"));
    let (exe, alive) = match LoadHeaders::read_checked(
        Path::new(&format!("/proc/{pid}/exe")),
        &image.exe.path,
        image.exe.inode,
    ) {
        Ok(exe) => (exe, true),
        Err(ImageError::Io(..)) => {
            let path = in_root(root, &image.exe.path);
            (
                LoadHeaders::read_checked(&path, &image.exe.path, image.exe.inode)?,
                false,
            )
        }
        Err(error) => return Err(error),
    };
    let mut mappings = Vec::new();
    let exe_bias = exe.load_bias(image.phdr);
    place_segments(&exe, exe_bias, &image.exe, &mut mappings);

    if let (Some(interp), true) = (&exe.interpreter, image.interp_base != 0) {
        let live = if alive {
            live_interpreter(pid, image.interp_base)?
        } else {
            None
        };
        let (file, interp_elf) = match live {
            Some(found) => found,
            None if alive && Path::new(&format!("/proc/{pid}/exe")).exists() => {
                return Err(ImageError::Io(
                    interp.clone(),
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "pid {pid} has no file mapped at its AT_BASE {:#x}",
                            image.interp_base
                        ),
                    ),
                ));
            }
            None => {
                // The process exited between the two reads (a short-lived one often does):
                // its root is gone with it, so the interpreter is read by path, which is
                // right only if memtrace sees the same files, as the executable's inode shows.
                if alive {
                    LoadHeaders::read_checked(
                        &in_root(root, &image.exe.path),
                        &image.exe.path,
                        image.exe.inode,
                    )?;
                }
                interpreter_by_path(interp, root)?
            }
        };
        place_segments(&interp_elf, image.interp_base, &file, &mut mappings);
    }
    if image.vdso_base != 0 {
        mappings.extend(special_mappings(image.vdso_base));
    }
    mappings.sort_by_key(|m| m.start);
    Ok(mappings)
}

/// The interpreter as the live process maps it at AT_BASE; None when the process is gone.
fn live_interpreter(pid: u32, base: u64) -> Result<Option<(FileRef, LoadHeaders)>, ImageError> {
    let Some((file, source)) = mapped_file_at(pid, base) else {
        return Ok(None);
    };
    match LoadHeaders::read_checked(&source, &file.path, file.inode) {
        Ok(elf) => Ok(Some((file, elf))),
        Err(ImageError::Io(..)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The interpreter named by PT_INTERP, read from the process's root (`root`, as this machine
/// reaches it) and named as the process sees it.
fn interpreter_by_path(interp: &str, root: &Path) -> Result<(FileRef, LoadHeaders), ImageError> {
    // The maps name the file behind the link (/lib64/ld-linux-x86-64.so.2 is one); a link's
    // absolute target is inside the process's root, not memtrace's.
    let path = resolve_in_root(root, interp).unwrap_or_else(|| interp.to_string());
    let source = in_root(root, &path);
    let elf = LoadHeaders::read_checked(&source, &path, 0)?;
    let inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(&source).map_err(|e| ImageError::Io(path.clone(), e))?,
    );
    Ok((FileRef { inode, path }, elf))
}

/// Where the file a process names `path` is on this machine, given its root.
fn in_root(root: &Path, path: &str) -> std::path::PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// `path` with every link resolved as the process would, inside `root` (an absolute target
/// starts again at `root`, `..` stops at it), as the process names the result; `None` when a
/// component cannot be read or the links loop. `canonicalize` would resolve absolute targets
/// against memtrace's own root.
fn resolve_in_root(root: &Path, path: &str) -> Option<String> {
    const MAX_LINKS: usize = 40;
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = format!("/{}", resolved.join("/"));
        if !resolved.is_empty() {
            candidate.push('/');
        }
        candidate.push_str(&component);
        let on_host = in_root(root, &candidate);
        let metadata = std::fs::symlink_metadata(&on_host).ok()?;
        if !metadata.file_type().is_symlink() {
            resolved.push(component);
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return None;
        }
        let target = std::fs::read_link(&on_host).ok()?;
        let target = target.to_str()?;
        if target.starts_with('/') {
            resolved.clear();
        }
        pending.extend(target.split('/').rev().map(str::to_string));
    }
    Some(format!("/{}", resolved.join("/")))
}

/// The file mapped at `start` in process `pid`, named as the process sees it (the maps show
/// it from memtrace's root, the process's root is cut off), and where to read that very file.
fn mapped_file_at(pid: u32, start: u64) -> Option<(FileRef, std::path::PathBuf)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let region = maps
        .lines()
        .filter_map(crate::procfs::parse_maps_line)
        .find(|region| region.start == start && region.inode != 0)?;
    let identity = crate::procfs::container_identity(pid)?;
    let path = identity.process_view(&region.name).to_string();
    let source = format!("/proc/{pid}/map_files/{:x}-{:x}", region.start, region.end).into();
    Some((
        FileRef {
            inode: region.inode,
            path,
        },
        source,
    ))
}

/// `elf_load`: each PT_LOAD maps its file pages; memory beyond the file part (bss) that does
/// not fit in the last file page becomes anonymous memory.
fn place_segments(elf: &LoadHeaders, bias: u64, file: &FileRef, out: &mut Vec<ExecMappingEvent>) {
    for segment in elf.segments.iter().filter(|s| s.kind == PT_LOAD) {
        let prot = segment.prot();
        let start = bias.wrapping_add(page_down(segment.vaddr));
        let file_end = bias.wrapping_add(page_up(segment.vaddr + segment.filesz));
        if segment.filesz > 0 && file_end > start {
            out.push(ExecMappingEvent {
                kind: ExecMappingKind::Mmap,
                start,
                len: file_end - start,
                prot,
                flags: (MAP_PRIVATE | MAP_FIXED) as u32,
                offset: page_down(segment.offset),
                file: Some(file.clone()),
                name: None,
            });
        }
        if segment.memsz > segment.filesz {
            let zero_start = page_up(bias.wrapping_add(segment.vaddr + segment.filesz));
            let zero_end = page_up(bias.wrapping_add(segment.vaddr + segment.memsz));
            if zero_end > zero_start {
                out.push(ExecMappingEvent {
                    kind: ExecMappingKind::Bss,
                    start: zero_start,
                    len: zero_end - zero_start,
                    // vm_brk_flags: data pages, executable only if the segment was.
                    prot: 0x3 | (prot & 0x4),
                    flags: MAP_PRIVATE as u32,
                    offset: 0,
                    file: None,
                    name: None,
                });
            }
        }
    }
}

/// The vdso and the data pages right below it. Their sizes are the kernel's, not the
/// program's, so memtrace's own layout (same kernel) tells them.
fn special_mappings(vdso_base: u64) -> Vec<ExecMappingEvent> {
    special_layout()
        .iter()
        .map(|special| ExecMappingEvent {
            kind: ExecMappingKind::Special,
            start: vdso_base.wrapping_add_signed(special.offset_from_vdso),
            len: special.len,
            prot: special.prot,
            flags: 0,
            offset: 0,
            file: None,
            name: Some(special.name.clone()),
        })
        .collect()
}

#[derive(Clone, Debug)]
struct SpecialRegion {
    name: String,
    offset_from_vdso: i64,
    len: u64,
    prot: u32,
}

/// `[vvar]`, `[vvar_vclock]`, `[vdso]` as this kernel lays them out, relative to the vdso.
fn special_layout() -> &'static [SpecialRegion] {
    static LAYOUT: OnceLock<Vec<SpecialRegion>> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let regions: Vec<_> = maps
            .lines()
            .filter_map(crate::procfs::parse_maps_line)
            .collect();
        let Some(vdso_index) = regions.iter().position(|r| r.name == "[vdso]") else {
            return Vec::new();
        };
        let vdso_start = regions[vdso_index].start;
        // Walk down from the vdso over the contiguous special pages that belong to it.
        let mut first = vdso_index;
        while first > 0 {
            let below = &regions[first - 1];
            if below.end == regions[first].start && below.name.starts_with("[vvar") {
                first -= 1;
            } else {
                break;
            }
        }
        regions[first..=vdso_index]
            .iter()
            .map(|r| SpecialRegion {
                name: r.name.clone(),
                offset_from_vdso: r.start as i64 - vdso_start as i64,
                len: r.end - r.start,
                prot: prot_of_perms(&r.perms),
            })
            .collect()
    })
}

fn prot_of_perms(perms: &str) -> u32 {
    let bytes = perms.as_bytes();
    let flag = |index: usize, letter: u8, bit: u32| {
        if bytes.get(index) == Some(&letter) {
            bit
        } else {
            0
        }
    };
    flag(0, b'r', 1) | flag(1, b'w', 2) | flag(2, b'x', 4)
}

fn page_down(value: u64) -> u64 {
    value & !(PAGE - 1)
}

fn page_up(value: u64) -> u64 {
    value.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

impl Segment {
    /// The segment's PF_R/PF_W/PF_X as the PROT_* bits `elf_map` gives its mapping.
    fn prot(&self) -> u32 {
        [(PF_R, PROT_READ), (PF_W, PROT_WRITE), (PF_X, PROT_EXEC)]
            .into_iter()
            .filter(|(flag, _)| self.flags & flag != 0)
            .fold(0, |prot, (_, bit)| prot | bit as u32)
    }
}

/// The parts of an ELF file the loader looks at, read by the one ELF reader the call stacks
/// use too ([`ElfFile`]).
impl LoadHeaders {
    #[cfg(test)]
    fn read(path: &str) -> Result<Self, ImageError> {
        Self::read_checked(Path::new(path), path, 0)
    }

    /// Reads the file at `source` (a /proc link to it: followed), named `path` in errors, if
    /// its inode is `expected_inode` (0: not checked).
    fn read_checked(source: &Path, path: &str, expected_inode: u64) -> Result<Self, ImageError> {
        let file = ElfFile::open(source, Links::Follow)
            .map_err(|e| ImageError::Io(path.to_string(), e))?;
        let inode = file.identity.inode();
        if expected_inode != 0 && inode != expected_inode {
            return Err(ImageError::NotTheMappedFile(
                path.to_string(),
                inode,
                expected_inode,
            ));
        }
        file.load_headers()
            .ok_or_else(|| ImageError::NotElf(path.to_string()))
    }

    /// How far a position-independent image was moved: AT_PHDR minus where the program
    /// headers are in the file's own address space. Fixed-address images are not moved.
    fn load_bias(&self, at_phdr: u64) -> u64 {
        if self.elf_type != ET_DYN || at_phdr == 0 {
            return 0;
        }
        let phdr_vaddr = self
            .segments
            .iter()
            .find(|s| s.kind == PT_PHDR)
            .map(|s| s.vaddr)
            .or_else(|| {
                self.segments
                    .iter()
                    .find(|s| {
                        s.kind == PT_LOAD
                            && s.offset <= self.phoff
                            && self.phoff < s.offset + s.filesz
                    })
                    .map(|s| s.vaddr + (self.phoff - s.offset))
            })
            .unwrap_or(0);
        at_phdr.wrapping_sub(phdr_vaddr)
    }
}

#[cfg(test)]
mod tests {

    /// Links inside a process's root resolve inside it: an absolute target starts again at
    /// the root, `..` stops there.
    #[test]
    fn links_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("memtrace-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(root.join("lib64")).unwrap();
        std::fs::write(root.join("lib/x86_64-linux-gnu/ld-2.31.so"), b"").unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-2.31.so",
            root.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../lib64", root.join("lib/x86_64-linux-gnu/up")).unwrap();
        assert_eq!(
            resolve_in_root(&root, "/lib64/ld-linux-x86-64.so.2").as_deref(),
            Some("/lib/x86_64-linux-gnu/ld-2.31.so")
        );
        assert_eq!(
            resolve_in_root(&root, "/lib/x86_64-linux-gnu/up/ld-linux-x86-64.so.2").as_deref(),
            Some("/lib/x86_64-linux-gnu/ld-2.31.so")
        );
        assert_eq!(
            resolve_in_root(&root, "/../../lib64/../lib/x86_64-linux-gnu/ld-2.31.so").as_deref(),
            Some("/lib/x86_64-linux-gnu/ld-2.31.so")
        );
        assert_eq!(resolve_in_root(&root, "/no/such"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
    use super::*;
    use crate::procfs::parse_maps_line;

    /// memtrace's own image, placed from its own auxv-equivalent numbers, must match what
    /// the kernel shows in /proc/self/maps for the executable's file pages.
    #[test]
    fn own_executable_segments_match_proc_maps() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe_path = exe.to_string_lossy().into_owned();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let regions: Vec<_> = maps.lines().filter_map(parse_maps_line).collect();
        let own: Vec<_> = regions.iter().filter(|r| r.name == exe_path).collect();
        let elf = LoadHeaders::read(&exe_path).unwrap();
        let first_load = elf.segments.iter().find(|s| s.kind == PT_LOAD).unwrap();
        let bias = own[0].start - page_down(first_load.vaddr);
        let inode = own[0].inode;
        let mut placed = Vec::new();
        place_segments(
            &elf,
            bias,
            &FileRef {
                inode,
                path: exe_path.clone(),
            },
            &mut placed,
        );
        let file_pages: Vec<_> = placed.iter().filter(|m| m.file.is_some()).collect();
        // ld.so's RELRO mprotect may split one segment into two lines: compare coverage.
        assert_eq!(
            file_pages.first().unwrap().start,
            own.first().unwrap().start
        );
        let placed_end = file_pages.last().map(|m| m.start + m.len).unwrap();
        assert_eq!(placed_end, own.last().unwrap().end);
    }

    #[test]
    fn special_layout_ends_with_the_vdso() {
        let layout = special_layout();
        let vdso = layout.last().expect("this kernel maps a vdso");
        assert_eq!(vdso.name, "[vdso]");
        assert_eq!(vdso.offset_from_vdso, 0);
        assert_eq!(vdso.prot, 5);
    }

    #[test]
    fn another_file_than_the_mapped_one_is_refused() {
        let image = LoadedImage {
            exe: FileRef {
                inode: 1,
                path: "/usr/bin/elsewhere".into(),
            },
            phdr: 0,
            interp_base: 0,
            vdso_base: 0,
        };
        let error = kernel_mappings(&image, std::process::id(), None).unwrap_err();
        assert!(matches!(error, ImageError::NotTheMappedFile(..)), "{error}");
    }

    #[test]
    fn not_elf_is_an_error() {
        let error = LoadHeaders::read("/proc/self/status").unwrap_err();
        assert!(matches!(error, ImageError::NotElf(_)), "{error}");
    }

    fn image_of(path: &str, interp_base: u64) -> LoadedImage {
        let exe = LoadHeaders::read(path).unwrap();
        let first_load = exe.segments.iter().find(|s| s.kind == PT_LOAD).unwrap();
        let phdr = exe
            .segments
            .iter()
            .find(|s| s.kind == PT_PHDR)
            .map_or(first_load.vaddr + 64, |s| s.vaddr);
        LoadedImage {
            exe: FileRef {
                inode: std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap()),
                path: path.into(),
            },
            // A bias of 0x5555_5555_4000, as a PIE would get.
            phdr: 0x5555_5555_4000 + phdr,
            interp_base,
            vdso_base: 0,
        }
    }

    /// A short-lived process is often reaped before its exec event is read: its interpreter
    /// is then read by path, and placed at its AT_BASE all the same.
    #[test]
    fn a_process_gone_before_its_exec_is_read_still_gets_its_interpreter() {
        let mut child = std::process::Command::new("/usr/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let base = 0x7f00_0000_0000;
        let mappings = kernel_mappings(&image_of("/usr/bin/true", base), pid, None).unwrap();
        let interp: Vec<_> = mappings
            .iter()
            .filter(|m| m.file.as_ref().is_some_and(|f| f.path.contains("ld-linux")))
            .collect();
        assert!(!interp.is_empty(), "{mappings:#?}");
        assert_eq!(interp[0].start, base);
        assert!(interp[0].file.as_ref().unwrap().inode != 0);
    }

    /// A live process with nothing mapped at the AT_BASE the event gave is not papered over.
    #[test]
    fn a_live_process_without_its_interpreter_is_an_error() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let image = image_of(exe.to_str().unwrap(), 0x1000);
        let error = kernel_mappings(&image, std::process::id(), None).unwrap_err();
        assert!(
            error.to_string().contains("no file mapped at its AT_BASE"),
            "{error}"
        );
    }
}
