//! memtrace's one ELF reader: the facts the unwinder and the symbolizer need, the program
//! headers the exec layout needs (`capture::exec_image`), and how a file on disk is
//! recognised again.
//!
//! Files are read through `object::ReadCache` (plain reads, no mmap): a module may be
//! overwritten in place while memtrace runs, and a mapped file would then change under the
//! caches, or fault past its new end.

use std::{
    fs::{self, File},
    io,
    ops::Range,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::Arc,
};

use object::{
    read::{
        elf::{FileHeader, ProgramHeader},
        ReadCache,
    },
    Endianness, FileKind, Object, ObjectSection, ObjectSegment,
};

use crate::file_access::{open_regular, Links};

/// An opened module file, parsed lazily: only the parts asked for are read.
pub(crate) struct ElfFile {
    data: ReadCache<File>,
    pub identity: FileIdentity,
}

impl ElfFile {
    /// Opens a regular file without blocking (see [`crate::file_access`]).
    pub fn open(path: &Path, links: Links) -> io::Result<Self> {
        let file = open_regular(path, links)?;
        let identity = FileIdentity::of(&file.metadata()?);
        Ok(Self {
            data: ReadCache::new(file),
            identity,
        })
    }

    pub fn parse(&self) -> Option<object::File<'_, &ReadCache<File>>> {
        let parsed = object::File::parse(&self.data).ok()?;
        (parsed.format() == object::BinaryFormat::Elf).then_some(parsed)
    }
}

impl ElfFile {
    /// The ELF header's type and program headers, and PT_INTERP's name, as the kernel's
    /// loader reads them (for the mappings it makes at exec, `capture::exec_image`); `None`
    /// for a file the loader would refuse. Reads those alone: not the section headers, nor
    /// the symbol tables a full parse reads.
    pub fn load_headers(&self) -> Option<LoadHeaders> {
        match FileKind::parse(&self.data) {
            Ok(FileKind::Elf64) => {
                LoadHeaders::parse::<object::elf::FileHeader64<Endianness>>(&self.data)
            }
            Ok(FileKind::Elf32) => {
                LoadHeaders::parse::<object::elf::FileHeader32<Endianness>>(&self.data)
            }
            _ => None,
        }
    }
}

/// The parts of an ELF file the loader looks at: type, program headers, interpreter.
#[derive(Debug)]
pub(crate) struct LoadHeaders {
    pub elf_type: u16,
    pub phoff: u64,
    pub segments: Vec<Segment>,
    pub interpreter: Option<String>,
}

/// One program header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl LoadHeaders {
    fn parse<Elf: FileHeader<Endian = Endianness>>(data: &ReadCache<File>) -> Option<Self> {
        let header = Elf::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let headers = header.program_headers(endian, data).ok()?;
        let segments = headers
            .iter()
            .map(|segment| Segment {
                kind: segment.p_type(endian),
                flags: segment.p_flags(endian),
                offset: segment.p_offset(endian).into(),
                vaddr: segment.p_vaddr(endian).into(),
                filesz: segment.p_filesz(endian).into(),
                memsz: segment.p_memsz(endian).into(),
            })
            .collect();
        let interpreter = headers
            .iter()
            .find_map(|segment| segment.interpreter(endian, data).ok().flatten())
            .map(|name| String::from_utf8_lossy(name).into_owned());
        Some(Self {
            elf_type: header.e_type(endian),
            phoff: header.e_phoff(endian).into(),
            segments,
            interpreter,
        })
    }
}

/// What tells one version of a file at a path from another without reading it: a file replaced
/// on disk gets a new inode (rename) or a new size and modification time (overwrite in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

impl FileIdentity {
    pub fn of(metadata: &fs::Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        }
    }

    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The identity of the file at `path` now, or `None` if it cannot be stat'ed.
    pub fn current(path: &Path) -> Option<Self> {
        fs::metadata(path).ok().map(|metadata| Self::of(&metadata))
    }

    /// The identity of the file [`ElfFile::open`] with `links` would open at `path` now (a
    /// `stat`, nothing read), or `None` if it cannot be stat'ed or, refusing links, is one.
    pub fn at(path: &Path, links: Links) -> Option<Self> {
        let metadata = match links {
            Links::Follow => fs::metadata(path),
            Links::Refuse => fs::symlink_metadata(path),
        };
        let metadata = metadata.ok().filter(|metadata| !metadata.is_symlink())?;
        Some(Self::of(&metadata))
    }
}

/// One `PT_LOAD` segment: where its bytes sit in the file and the address the ELF states for
/// them (its SVMA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoadSegment {
    file_offset: u64,
    file_size: u64,
    svma: u64,
}

/// The loadable segments of `file`, by file offset.
pub(crate) fn load_segments<'data>(file: &impl Object<'data>) -> Vec<LoadSegment> {
    let mut segments: Vec<LoadSegment> = file
        .segments()
        .map(|segment| {
            let (file_offset, file_size) = segment.file_range();
            LoadSegment {
                file_offset,
                file_size,
                svma: segment.address(),
            }
        })
        .collect();
    segments.sort_by_key(|segment| segment.file_offset);
    segments
}

/// Pages are mapped whole, so a mapping may start up to this far before its segment's first
/// byte (e.g. a data segment at file offset 0x1cf8d0 is mapped from offset 0x1cf000).
const PAGE_SIZE: u64 = 4096;

/// The SVMA that file offset `offset` is loaded at, going by the segment that maps it.
pub(crate) fn svma_of_file_offset(segments: &[LoadSegment], offset: u64) -> Option<u64> {
    let segment = segments.iter().find(|segment| {
        let first_page = segment.file_offset & !(PAGE_SIZE - 1);
        (first_page..segment.file_offset + segment.file_size.max(1)).contains(&offset)
    })?;
    // Wrapping: an offset in the page before the segment's first byte lies before its SVMA.
    Some(
        segment
            .svma
            .wrapping_add(offset)
            .wrapping_sub(segment.file_offset),
    )
}

/// The file's GNU build-id note, if it has one.
pub(crate) fn build_id<'data>(file: &impl Object<'data>) -> Option<Vec<u8>> {
    file.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// A section's stated address range and (uncompressed) contents, shareable between modules.
pub(crate) struct SectionBytes {
    pub svma: Range<u64>,
    pub data: Arc<[u8]>,
}

pub(crate) fn section_bytes<'data>(file: &impl Object<'data>, name: &str) -> Option<SectionBytes> {
    let section = file.section_by_name(name)?;
    let data = section.uncompressed_data().ok()?;
    Some(SectionBytes {
        svma: section.address()..section.address() + section.size(),
        data: Arc::from(&*data),
    })
}

/// A section's stated address range, without reading its contents.
pub(crate) fn section_svma<'data>(file: &impl Object<'data>, name: &str) -> Option<Range<u64>> {
    let section = file.section_by_name(name)?;
    Some(section.address()..section.address() + section.size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(file_offset: u64, file_size: u64, svma: u64) -> LoadSegment {
        LoadSegment {
            file_offset,
            file_size,
            svma,
        }
    }

    #[test]
    fn file_offsets_map_through_their_segment() {
        // glibc 2.36's libc.so.6: text at its own offset, data shifted into the page before.
        let segments = [
            segment(0, 0x25388, 0),
            segment(0x26000, 0x1550fc, 0x26000),
            segment(0x1cf8d0, 0x4f98, 0x1d08d0),
        ];
        assert_eq!(svma_of_file_offset(&segments, 0x9a3f1), Some(0x9a3f1));
        assert_eq!(svma_of_file_offset(&segments, 0x1cf000), Some(0x1d0000));
        assert_eq!(svma_of_file_offset(&segments, 0x1cf8d0), Some(0x1d08d0));
        assert_eq!(svma_of_file_offset(&segments, 0x400000), None);
    }

    #[test]
    fn a_non_pie_executable_keeps_its_link_addresses() {
        let segments = [
            segment(0, 0x1000, 0x400000),
            segment(0x1000, 0x2000, 0x401000),
        ];
        assert_eq!(svma_of_file_offset(&segments, 0x1234), Some(0x401234));
    }
}
