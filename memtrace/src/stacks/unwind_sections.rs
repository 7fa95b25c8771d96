//! What unwinding needs of one module build: its CFI (`.eh_frame` and its index, or else
//! `.debug_frame`) and the segments that place it in memory. Held by the
//! [`ModuleCache`](super::modules::ModuleCache); the [`Unwinder`](super::Unwinder) hands it to
//! framehop.
//!
//! `.text` is not read: framehop looks at instructions only to unwind a function's first
//! frame from inside its prologue or epilogue, and memtrace's first frame is always stopped
//! at a syscall, every other one at a call's return address, where the CFI alone is exact.
//! Reading it made memtrace as large as the programs it traced (236 MB for chromium's).

use std::{ops::Range, sync::Arc};

use framehop::ExplicitModuleSectionInfo;

use super::{elf, MappedFile};

/// Section data as framehop holds it: shared, so one parse serves every sample.
pub(super) type SectionData = Arc<[u8]>;

/// The sections framehop unwinds with, plus the segments that place them in memory.
pub(super) struct UnwindSections {
    segments: Vec<elf::LoadSegment>,
    /// Where `.text` is (a base for text-relative CFI pointers); its bytes are not read.
    text_svma: Option<Range<u64>>,
    eh_frame: Option<elf::SectionBytes>,
    eh_frame_hdr: Option<elf::SectionBytes>,
    /// Only read when there is no `.eh_frame`: framehop uses it as a last resort.
    debug_frame: Option<SectionData>,
    got_svma: Option<Range<u64>>,
}

impl UnwindSections {
    pub(super) fn read<'data>(file: &impl object::Object<'data>) -> Self {
        let eh_frame = elf::section_bytes(file, ".eh_frame");
        let debug_frame = match eh_frame {
            Some(_) => None,
            None => elf::section_bytes(file, ".debug_frame").map(|section| section.data),
        };
        Self {
            segments: elf::load_segments(file),
            text_svma: elf::section_svma(file, ".text"),
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
    pub(super) fn base_avma(&self, mapping: &MappedFile) -> Option<u64> {
        let svma = elf::svma_of_file_offset(&self.segments, mapping.file_offset)?;
        mapping.start.checked_sub(svma)
    }

    pub(super) fn framehop_info(&self) -> ExplicitModuleSectionInfo<SectionData> {
        let svma = |section: &Option<elf::SectionBytes>| section.as_ref().map(|s| s.svma.clone());
        let data = |section: &Option<elf::SectionBytes>| section.as_ref().map(|s| s.data.clone());
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text_svma.clone(),
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

/// The CFI as the ia32 unwinder ([`super::cfi_i386`]) reads it with gimli: sections and the
/// SVMAs their pointers are relative to.
pub(super) struct CfiSections<'a> {
    pub eh_frame: &'a elf::SectionBytes,
    pub eh_frame_hdr: Option<&'a elf::SectionBytes>,
    pub text_svma: Option<u64>,
    pub got_svma: Option<u64>,
}

impl UnwindSections {
    /// Whether it has `.eh_frame`.
    #[cfg(test)]
    pub(super) fn has_eh_frame(&self) -> bool {
        self.eh_frame.is_some()
    }

    /// Its `.eh_frame` and what reading it needs; `None` without one (ia32 modules are not
    /// unwound by `.debug_frame`: every ia32 library and program keeps `.eh_frame`).
    pub(super) fn cfi(&self) -> Option<CfiSections<'_>> {
        Some(CfiSections {
            eh_frame: self.eh_frame.as_ref()?,
            eh_frame_hdr: self.eh_frame_hdr.as_ref(),
            text_svma: self.text_svma.as_ref().map(|range| range.start),
            got_svma: self.got_svma.as_ref().map(|range| range.start),
        })
    }
}
