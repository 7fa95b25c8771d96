//! A module's DWARF: the functions (inlined ones included), files and lines at an address,
//! through `addr2line`.
//!
//! Only the sections that naming reads are kept (location lists, macros, type units and name
//! indexes are never read by `addr2line`), and nothing is parsed until a name is asked for:
//! parsed, glibc's debug file (libc6-dbg, some 4100 compilation units) costs about 25 MiB of
//! abbreviations and line-program headers on top of its 8 MiB of sections.

use std::{borrow::Cow, sync::Arc};

use gimli::SectionId;
use object::Object;

use super::elf;

pub(super) type DwarfReader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// The sections `addr2line` reads; any other is given to it empty.
const NAMING_SECTIONS: [SectionId; 10] = [
    SectionId::DebugAbbrev,
    SectionId::DebugAddr,
    SectionId::DebugAranges,
    SectionId::DebugInfo,
    SectionId::DebugLine,
    SectionId::DebugLineStr,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
];

/// The DWARF sections of one file that naming needs, copied out of it (decompressed).
pub(super) struct DwarfSections {
    endian: gimli::RunTimeEndian,
    /// In the order of [`NAMING_SECTIONS`]; empty where the file has no such section.
    data: Vec<Arc<[u8]>>,
}

impl DwarfSections {
    /// The sections of `file`, or `None` if it has no `.debug_info`.
    pub(super) fn read<'data>(file: &impl Object<'data>) -> Option<Self> {
        file.section_by_name(".debug_info")?;
        let endian = if file.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let data = NAMING_SECTIONS
            .iter()
            .map(|id| {
                elf::section_bytes(file, id.name())
                    .map(|section| section.data)
                    .unwrap_or_else(|| Arc::from(&[][..]))
            })
            .collect();
        Some(Self { endian, data })
    }

    fn reader(&self, id: SectionId) -> DwarfReader {
        let data = NAMING_SECTIONS
            .iter()
            .position(|naming| *naming == id)
            .and_then(|index| self.data.get(index).cloned())
            .unwrap_or_else(|| Arc::from(&[][..]));
        gimli::EndianArcSlice::new(data, self.endian)
    }

    fn dwarf(&self) -> gimli::Dwarf<DwarfReader> {
        let load = |id| -> Result<DwarfReader, std::convert::Infallible> { Ok(self.reader(id)) };
        match gimli::Dwarf::load(load) {
            Ok(dwarf) => dwarf,
            Err(never) => match never {},
        }
    }
}

/// One function an address belongs to.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Name {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// A module's parsed DWARF.
pub(super) struct DwarfNames {
    context: addr2line::Context<DwarfReader>,
}

impl DwarfNames {
    /// Parses `sections`; `None` when `addr2line` cannot read them.
    pub(super) fn parse(sections: DwarfSections) -> Option<Self> {
        let context = addr2line::Context::from_dwarf(sections.dwarf()).ok()?;
        Some(Self { context })
    }

    /// The DWARF functions at `svma`, innermost first.
    pub(super) fn names_at(&self, svma: u64) -> Vec<Name> {
        frame_names(&self.context, svma)
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

/// What `context` names at `svma`, innermost first: `None` when it knows nothing there,
/// `Err` when its DWARF cannot be read there.
fn frame_names(
    context: &addr2line::Context<DwarfReader>,
    svma: u64,
) -> Result<Option<Vec<Name>>, ()> {
    let mut frames = context.find_frames(svma).skip_all_loads().map_err(|_| ())?;
    let mut any = false;
    let mut names = Vec::new();
    while let Ok(Some(frame)) = frames.next() {
        any = true;
        let function = frame
            .function
            .as_ref()
            .and_then(|name| name.demangle().ok())
            .map(Cow::into_owned);
        let (file, line) = frame
            .location
            .map(|location| (location.file.map(str::to_string), location.line))
            .unwrap_or_default();
        if function.is_some() || file.is_some() {
            names.push(Name {
                function,
                file,
                line,
            });
        }
    }
    Ok(any.then_some(names))
}
