//! A module's DWARF: the functions (inlined ones included), files and lines at an address,
//! through `addr2line`.
//!
//! Only the sections that naming reads are kept (location lists, macros, type units and name
//! indexes are never read by `addr2line`), and nothing is parsed until a name is asked for,
//! and then only the compilation units that hold the address ([`DwarfNames`]): parsed whole,
//! glibc's debug file (libc6-dbg, some 4100 units) costs about 25 MiB of abbreviations and
//! line-program headers on top of its 8 MiB of sections.

use std::{
    borrow::Cow,
    cell::{OnceCell, RefCell},
    collections::HashMap,
    ops::Range,
    rc::Rc,
    sync::Arc,
};

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

/// A module's DWARF, parsed one compilation unit at a time.
///
/// `addr2line` parses every unit of a file when its context is made (abbreviations and
/// line-program header of each: about 25 MiB for glibc's 4100 units), while a report names
/// addresses from a handful of them. So the units are indexed by address once, their parses
/// dropped as the index is made, and each unit an address falls in gets an `addr2line`
/// context of its own, over DWARF sections in which `.debug_info` is that unit alone. The
/// index finds and orders the candidate units exactly as `addr2line` does over the whole file,
/// and the first that knows the address names it, as there, so names are the same.
///
/// A unit alone has no other unit to refer to: one that refers into another
/// (`DW_FORM_ref_addr`, as LTO and `dwz` write) is named by a context over the whole file,
/// made when first needed.
pub(super) struct DwarfNames {
    sections: DwarfSections,
    /// The units, by the index `addr2line` gives them.
    units: Vec<UnitSpan>,
    /// Their address ranges, sorted as `addr2line` sorts them.
    ranges: Vec<UnitRange>,
    /// The units asked about so far.
    parsed: RefCell<HashMap<usize, Rc<UnitContext>>>,
    /// The whole file's context, for units that refer to others.
    whole: OnceCell<Option<addr2line::Context<DwarfReader>>>,
}

/// Where a unit's bytes are.
struct UnitSpan {
    /// In `.debug_info`.
    info: Range<usize>,
    /// Its sets in `.debug_aranges`.
    arange_sets: Vec<ArangeSet>,
}

/// One set of `.debug_aranges`, which names its unit by offset in `.debug_info`.
struct ArangeSet {
    bytes: Range<usize>,
    /// Where the set holds its unit's offset, relative to `bytes`.
    unit_offset_field: Range<usize>,
}

/// An address range of a unit, as `addr2line`'s `UnitRange`.
struct UnitRange {
    range: gimli::Range,
    unit: usize,
    /// The lowest `begin` of this range and every later one, to end a search early.
    min_begin: u64,
}

/// One unit's names.
enum UnitContext {
    Alone(addr2line::Context<DwarfReader>),
    /// It refers to DIEs of other units, or cannot be read alone.
    NeedsWhole,
}

impl DwarfNames {
    /// Indexes the units of `sections`; `None` when `addr2line` could not read them either.
    pub(super) fn parse(sections: DwarfSections) -> Option<Self> {
        let (units, ranges) = index_units(&sections.dwarf()).ok()?;
        Some(Self {
            sections,
            units,
            ranges,
            parsed: RefCell::default(),
            whole: OnceCell::new(),
        })
    }

    /// The DWARF functions at `svma`, innermost first.
    pub(super) fn names_at(&self, svma: u64) -> Vec<Name> {
        for unit in self.units_at(svma) {
            let context = self.unit_context(unit);
            let found = match &*context {
                UnitContext::Alone(context) => frame_names(context, svma),
                UnitContext::NeedsWhole => return self.whole_names_at(svma),
            };
            match found {
                // `addr2line` stops at the first unit that knows the address, or at an error.
                Ok(Some(names)) => return names,
                Ok(None) => continue,
                Err(()) => return Vec::new(),
            }
        }
        Vec::new()
    }

    /// The units whose ranges hold `svma`, in the order `addr2line` tries them
    /// (`ResUnits::find_range`).
    fn units_at(&self, svma: u64) -> impl Iterator<Item = usize> + '_ {
        let first = self.ranges.partition_point(|range| range.range.end <= svma);
        self.ranges[first..]
            .iter()
            .take_while(move |range| svma >= range.min_begin)
            .filter(move |range| range.range.begin <= svma && svma < range.range.end)
            .map(|range| range.unit)
    }

    fn unit_context(&self, unit: usize) -> Rc<UnitContext> {
        if let Some(context) = self.parsed.borrow().get(&unit) {
            return context.clone();
        }
        let context = Rc::new(
            self.units
                .get(unit)
                .and_then(|span| self.unit_alone(span))
                .map_or(UnitContext::NeedsWhole, UnitContext::Alone),
        );
        self.parsed.borrow_mut().insert(unit, context.clone());
        context
    }

    /// A context over the unit `span` alone; `None` if it refers into other units.
    fn unit_alone(&self, span: &UnitSpan) -> Option<addr2line::Context<DwarfReader>> {
        let info = self
            .sections
            .reader(SectionId::DebugInfo)
            .range(span.info.clone());
        // The unit is at offset 0 of its `.debug_info`: its arange sets must say so.
        let aranges = self.sections.reader(SectionId::DebugAranges);
        let mut arange_bytes = Vec::new();
        for set in &span.arange_sets {
            let start = arange_bytes.len();
            arange_bytes.extend_from_slice(aranges.bytes().get(set.bytes.clone())?);
            let field = start + set.unit_offset_field.start..start + set.unit_offset_field.end;
            // Zero is zero in either byte order.
            arange_bytes.get_mut(field)?.fill(0);
        }
        let arange_bytes =
            gimli::EndianArcSlice::new(Arc::from(arange_bytes), self.sections.endian);
        let load = |id| -> Result<DwarfReader, std::convert::Infallible> {
            Ok(match id {
                SectionId::DebugInfo => info.clone(),
                SectionId::DebugAranges => arange_bytes.clone(),
                _ => self.sections.reader(id),
            })
        };
        let Ok(dwarf) = gimli::Dwarf::load(load);
        if refers_to_other_units(&dwarf).unwrap_or(true) {
            return None;
        }
        addr2line::Context::from_dwarf(dwarf).ok()
    }

    fn whole_names_at(&self, svma: u64) -> Vec<Name> {
        let whole = self
            .whole
            .get_or_init(|| addr2line::Context::from_dwarf(self.sections.dwarf()).ok());
        whole
            .as_ref()
            .and_then(|context| frame_names(context, svma).ok().flatten())
            .unwrap_or_default()
    }
}

/// Whether the only unit of `dwarf` has an attribute that refers to a DIE by its offset in
/// `.debug_info` (`DW_FORM_ref_addr`): alone, such an offset would point elsewhere.
fn refers_to_other_units(dwarf: &gimli::Dwarf<DwarfReader>) -> gimli::Result<bool> {
    let Some(header) = dwarf.units().next()? else {
        return Ok(true);
    };
    let unit = dwarf.unit(header)?;
    let mut entries = unit.entries_raw(None)?;
    while !entries.is_empty() {
        let Some(abbreviation) = entries.read_abbreviation()? else {
            continue;
        };
        for spec in abbreviation.attributes() {
            let attribute = entries.read_attribute(*spec)?;
            if let gimli::AttributeValue::DebugInfoRef(_) = attribute.value() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The units of `dwarf` and their address ranges, found as `addr2line`'s `ResUnits::parse`
/// finds them (the same units, indexes and ranges, each from the same attribute or table),
/// each unit's parse dropped as soon as its ranges are known. An error where `addr2line`
/// would fail fails here too.
fn index_units(
    dwarf: &gimli::Dwarf<DwarfReader>,
) -> gimli::Result<(Vec<UnitSpan>, Vec<UnitRange>)> {
    let mut aranges = Vec::new();
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(header) = headers.next()? {
        aranges.push((header.debug_info_offset(), header));
    }
    aranges.sort_unstable_by_key(|(info_offset, _)| *info_offset);

    let mut units = Vec::new();
    let mut ranges = Vec::new();
    let mut headers = dwarf.units();
    while let Some(header) = headers.next()? {
        let unit = units.len();
        let Some(offset) = header.debug_info_offset() else {
            continue;
        };
        let mut need_unit_range = match header.type_() {
            gimli::UnitType::Type { .. } | gimli::UnitType::SplitType { .. } => continue,
            gimli::UnitType::Partial => false,
            _ => true,
        };
        let info = offset.0..offset.0 + header.length_including_self();
        let Ok(dw_unit) = dwarf.unit(header) else {
            continue;
        };
        let dw_unit = gimli::UnitRef::new(dwarf, &dw_unit);
        let mut arange_sets = Vec::new();
        if need_unit_range {
            let mut entries = dw_unit.entries_raw(None)?;
            let Some(abbreviation) = entries.read_abbreviation()? else {
                continue;
            };
            let mut attributes = RangeAttributes::default();
            for spec in abbreviation.attributes() {
                let attribute = entries.read_attribute(*spec)?;
                attributes.note(dw_unit, &attribute)?;
            }
            if attributes.ranges_offset.is_none() {
                let first = aranges.partition_point(|(info_offset, _)| *info_offset < offset);
                for (_, set) in aranges[first..]
                    .iter()
                    .take_while(|(info_offset, _)| *info_offset == offset)
                {
                    arange_sets.push(ArangeSet::of(set));
                    let mut entries = set.entries();
                    while let Some(entry) = entries.next().transpose() {
                        // Errors are skipped as `addr2line` skips them (an address overflow).
                        let Ok(entry) = entry else { continue };
                        if entry.length() != 0 {
                            ranges.push(UnitRange::new(entry.range(), unit));
                            need_unit_range = false;
                        }
                    }
                }
            }
            if need_unit_range {
                need_unit_range = !attributes
                    .for_each_range(dw_unit, |range| ranges.push(UnitRange::new(range, unit)))?;
            }
        }
        if need_unit_range {
            // No ranges declared: the line program's sequences tell where the unit's code is.
            if let Some(program) = &dw_unit.line_program {
                if let Ok(sequences) = line_sequences(program.clone()) {
                    ranges.extend(sequences.map(|range| UnitRange::new(range, unit)));
                }
            }
        }
        units.push(UnitSpan { info, arange_sets });
    }

    ranges.sort_unstable_by_key(|range| (range.range.end, range.unit));
    let mut min_begin = u64::MAX;
    for range in ranges.iter_mut().rev() {
        min_begin = min_begin.min(range.range.begin);
        range.min_begin = min_begin;
    }
    Ok((units, ranges))
}

impl UnitRange {
    fn new(range: gimli::Range, unit: usize) -> Self {
        Self {
            range,
            unit,
            min_begin: 0,
        }
    }
}

impl ArangeSet {
    fn of(set: &gimli::ArangeHeader<DwarfReader>) -> Self {
        let format = set.encoding().format;
        let start = set.offset().0;
        let length_size = usize::from(format.initial_length_size());
        // After the length comes a 2-byte version, then the unit's offset.
        let field = length_size + 2;
        Self {
            bytes: start..start + length_size + set.length(),
            unit_offset_field: field..field + usize::from(format.word_size()),
        }
    }
}

/// The attributes of a unit's root DIE that give its address ranges (`addr2line`'s
/// `RangeAttributes`, which it does not export).
#[derive(Default)]
struct RangeAttributes {
    low_pc: Option<u64>,
    high_pc: Option<u64>,
    size: Option<u64>,
    ranges_offset: Option<gimli::RangeListsOffset<usize>>,
}

impl RangeAttributes {
    fn note(
        &mut self,
        unit: gimli::UnitRef<'_, DwarfReader>,
        attribute: &gimli::Attribute<DwarfReader>,
    ) -> gimli::Result<()> {
        match (attribute.name(), attribute.value()) {
            (gimli::DW_AT_low_pc, gimli::AttributeValue::Addr(address)) => {
                self.low_pc = Some(address);
            }
            (gimli::DW_AT_low_pc, gimli::AttributeValue::DebugAddrIndex(index)) => {
                self.low_pc = Some(unit.address(index)?);
            }
            (gimli::DW_AT_high_pc, gimli::AttributeValue::Addr(address)) => {
                self.high_pc = Some(address);
            }
            (gimli::DW_AT_high_pc, gimli::AttributeValue::DebugAddrIndex(index)) => {
                self.high_pc = Some(unit.address(index)?);
            }
            (gimli::DW_AT_high_pc, gimli::AttributeValue::Udata(size)) => {
                self.size = Some(size);
            }
            (gimli::DW_AT_ranges, value) => {
                self.ranges_offset = unit.attr_ranges_offset(value)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Calls `add` with each non-empty range; whether there was one.
    fn for_each_range(
        &self,
        unit: gimli::UnitRef<'_, DwarfReader>,
        mut add: impl FnMut(gimli::Range),
    ) -> gimli::Result<bool> {
        let mut added_any = false;
        let mut add_range = |range: gimli::Range| {
            if range.begin < range.end {
                add(range);
                added_any = true;
            }
        };
        if let Some(offset) = self.ranges_offset {
            let mut list = unit.ranges(offset)?;
            while let Some(range) = list.next()? {
                add_range(range);
            }
        } else if let (Some(begin), Some(end)) = (self.low_pc, self.high_pc) {
            add_range(gimli::Range { begin, end });
        } else if let (Some(begin), Some(size)) = (self.low_pc, self.size) {
            // A -1 tombstone overflows, and the range is then empty and skipped.
            add_range(gimli::Range {
                begin,
                end: begin.wrapping_add(size),
            });
        }
        Ok(added_any)
    }
}

/// The address ranges of a line program's sequences, as `addr2line`'s `Lines::parse` finds
/// them: from a sequence's first row to its end, when not empty.
fn line_sequences(
    program: gimli::IncompleteLineProgram<DwarfReader>,
) -> gimli::Result<impl Iterator<Item = gimli::Range>> {
    let mut sequences = Vec::new();
    let mut start = None;
    let mut rows = program.rows();
    while let Some((_, row)) = rows.next_row()? {
        if row.end_sequence() {
            if let Some(begin) = start.take() {
                let end = row.address();
                if begin < end {
                    sequences.push(gimli::Range { begin, end });
                }
            }
        } else if start.is_none() {
            start = Some(row.address());
        }
    }
    Ok(sequences.into_iter())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use object::ObjectSection;

    use super::*;
    use crate::{
        file_access::Links,
        stacks::{
            elf::ElfFile,
            tests::programs::{build_leaker, TempDir},
        },
    };

    /// Names every `stride`-th address of `path`'s `.text` (from its own DWARF, or from
    /// `debug_file`'s) one unit at a time and with `addr2line` over the whole file, and
    /// asserts the same names, inlined frames, files and lines; returns how many addresses
    /// had DWARF names, and whether a unit needed the whole file's context.
    fn assert_named_as_whole(path: &Path, debug_file: Option<&Path>, stride: u64) -> (usize, bool) {
        let module = ElfFile::open(path, Links::Follow).unwrap();
        let module = module.parse().unwrap();
        let text = module.section_by_name(".text").unwrap();
        let dwarf_file = ElfFile::open(debug_file.unwrap_or(path), Links::Follow).unwrap();
        let dwarf_file = dwarf_file.parse().unwrap();
        let by_unit = DwarfNames::parse(DwarfSections::read(&dwarf_file).unwrap()).unwrap();
        assert!(
            by_unit.parsed.borrow().is_empty(),
            "no unit parsed before a name"
        );
        let whole =
            addr2line::Context::from_dwarf(DwarfSections::read(&dwarf_file).unwrap().dwarf())
                .unwrap();
        let mut named = 0;
        for svma in (text.address()..text.address() + text.size()).step_by(stride as usize) {
            let expected = frame_names(&whole, svma).ok().flatten().unwrap_or_default();
            let found = by_unit.names_at(svma);
            assert_eq!(found, expected, "{} at {svma:#x}", path.display());
            named += usize::from(!found.is_empty());
        }
        (named, by_unit.whole.get().is_some())
    }

    /// The test's own executable: Rust, many units, inlining everywhere.
    #[test]
    fn names_by_unit_are_those_of_the_whole_file() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let (named, _) = assert_named_as_whole(&exe, None, 61);
        assert!(named > 1000, "{named} addresses named");
    }

    /// A link-time-optimised build refers from unit to unit (`DW_FORM_ref_addr`): those
    /// units are named through the whole file's context, with the same names.
    #[test]
    fn units_that_refer_to_others_are_named_as_the_whole_file_names_them() {
        let dir = TempDir::new("dwarf-lto");
        let binary = build_leaker(&dir, "leaker-lto", &["-flto", "-O2"]);
        let (named, needed_whole) = assert_named_as_whole(&binary, None, 1);
        assert!(named > 10, "{named} addresses named");
        assert!(needed_whole, "gcc -flto refers from unit to unit");
    }

    /// glibc's separate debug file (libc6-dbg, which `cargo xtask setup` installs), where
    /// the deferred, unit-by-unit parse matters most.
    #[test]
    fn names_by_unit_in_glibc_are_those_of_the_whole_file() {
        let Some(debug_file) = glibc_debug_file() else {
            return;
        };
        let (named, needed_whole) = assert_named_as_whole(Path::new(LIBC), Some(&debug_file), 97);
        assert!(named > 1000, "{named} addresses named");
        assert!(!needed_whole, "glibc's units refer to no other unit");
    }

    /// Naming an address parses the units that hold it, not the others.
    #[test]
    fn only_the_units_asked_about_are_parsed() {
        let Some(debug_file) = glibc_debug_file() else {
            return;
        };
        let libc = ElfFile::open(Path::new(LIBC), Links::Follow).unwrap();
        let libc = libc.parse().unwrap();
        let malloc = object::Object::dynamic_symbols(&libc)
            .find(|symbol| object::ObjectSymbol::name(symbol) == Ok("malloc"))
            .map(|symbol| object::ObjectSymbol::address(&symbol))
            .expect("glibc exports malloc");
        let debug = ElfFile::open(&debug_file, Links::Follow).unwrap();
        let debug = debug.parse().unwrap();
        let names = DwarfNames::parse(DwarfSections::read(&debug).unwrap()).unwrap();
        let found = names.names_at(malloc);
        assert!(
            found
                .last()
                .and_then(|name| name.file.as_deref())
                .is_some_and(|file| file.ends_with("malloc.c")),
            "{found:?}"
        );
        let parsed = names.parsed.borrow().len();
        assert!(
            parsed <= 2,
            "{parsed} of {} units parsed",
            names.units.len()
        );
        assert!(names.units.len() > 1000);
        assert!(names.whole.get().is_none());
    }

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    /// glibc's separate debug file, if libc6-dbg is installed; with CI=true its absence fails
    /// the test.
    fn glibc_debug_file() -> Option<std::path::PathBuf> {
        let file = ElfFile::open(Path::new(LIBC), Links::Follow).unwrap();
        let parsed = file.parse().unwrap();
        let build_id = crate::stacks::elf::build_id(&parsed).unwrap();
        let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
        let debug_file = Path::new("/usr/lib/debug/.build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if !debug_file.exists() {
            // CI installs libc6-dbg (`cargo xtask setup`): there its absence is a failure,
            // not a reason to pass without testing anything.
            assert!(
                std::env::var_os("CI").is_none_or(|ci| ci != "true"),
                "CI=true but {} is missing: install libc6-dbg",
                debug_file.display()
            );
            eprintln!("no {} (libc6-dbg): skipped", debug_file.display());
            return None;
        }
        Some(debug_file)
    }
}
