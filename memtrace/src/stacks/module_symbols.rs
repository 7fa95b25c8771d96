//! What naming frames needs of one module build: its segments and symbol table, read at
//! first sight, and its DWARF (its own, or its separate debug file's), read when one of its
//! addresses is first named. Held by the [`ModuleCache`](super::modules::ModuleCache); the
//! [`Symbolizer`](super::Symbolizer) asks it for names.

use std::{
    borrow::Cow,
    cell::{Cell, OnceCell},
    io::Read as _,
    path::{Path, PathBuf},
};

use object::{
    elf::{STT_FUNC, STT_GNU_IFUNC},
    read::elf::{ElfFile as ObjectElfFile, FileHeader, SectionHeader as _, Sym as _},
    Object, ReadRef,
};

use crate::file_access::{open_regular, Links};

use super::{
    dwarf::{DwarfNames, DwarfSections, Name},
    elf::{self, ElfFile, LoadSegment},
};

/// What the symbolizer needs of one module build.
///
/// Its segments and symbol table are read at first sight; its DWARF only when one of its
/// addresses is first named (a live session names frames in its report, once the rings are
/// gone): parsed DWARF is most of what call stacks cost. The module's own DWARF sections are
/// copied at first sight, so they come from the very file the process mapped whatever happens
/// to it later; a separate debug file is looked for when first needed and used only if it is
/// the same build (build-id, or the debuglink's checksum), so a debug file changed meanwhile
/// gives no DWARF names, never another build's.
#[derive(Default)]
pub(super) struct SymbolModule {
    segments: Vec<LoadSegment>,
    symbols: SymbolTable,
    /// Where its DWARF is, until it is read into `debug_info`.
    unread: Cell<Option<DwarfSource>>,
    debug_info: OnceCell<DebugInfo>,
}

/// Where a module's DWARF is to be read from.
struct DwarfSource {
    /// The module's own sections, if it has `.debug_info`.
    own: Option<DwarfSections>,
    /// Where to look for a separate debug file when the module has no usable DWARF itself.
    separate: DebugFileLookup,
}

/// How a module's separate debug file is found and recognised.
struct DebugFileLookup {
    /// The module's path (the debuglink names a file next to it).
    module_path: PathBuf,
    build_id: Option<Vec<u8>>,
    /// The `.gnu_debuglink` name and the checksum of the file it names.
    debuglink: Option<(Vec<u8>, u32)>,
    debug_directory: PathBuf,
}

/// A module's DWARF once read, and the symbol table to use with it.
struct DebugInfo {
    dwarf: Option<DwarfNames>,
    /// The module's symbols with its debug file's (static functions, e.g. glibc's
    /// `sysmalloc`), when a debug file was read; else the module's own are used.
    symbols: Option<SymbolTable>,
}

impl SymbolModule {
    /// Reads what the module `file` (opened from `path`) needs at first sight; its DWARF, or
    /// its separate debug file (looked for under `debug_directory`), waits for the first name.
    pub(super) fn read<'data, R: ReadRef<'data>>(
        path: &Path,
        file: &object::File<'data, R>,
        debug_directory: &Path,
    ) -> Self {
        let source = DwarfSource {
            own: DwarfSections::read(file),
            separate: DebugFileLookup {
                module_path: path.to_path_buf(),
                build_id: elf::build_id(file),
                debuglink: file
                    .gnu_debuglink()
                    .ok()
                    .flatten()
                    .map(|(name, crc)| (name.to_vec(), crc)),
                debug_directory: debug_directory.to_path_buf(),
            },
        };
        Self {
            segments: elf::load_segments(file),
            symbols: SymbolTable::read(file),
            unread: Cell::new(Some(source)),
            debug_info: OnceCell::new(),
        }
    }

    /// Whether its DWARF was read (for tests: it must wait for a name).
    #[cfg(test)]
    pub(super) fn dwarf_read(&self) -> bool {
        self.debug_info.get().is_some()
    }

    /// Its DWARF, read and parsed the first time it is asked for.
    fn debug_info(&self) -> &DebugInfo {
        self.debug_info.get_or_init(|| match self.unread.take() {
            Some(source) => source.read(&self.symbols),
            None => DebugInfo {
                dwarf: None,
                symbols: None,
            },
        })
    }

    /// The functions at `file_offset`, innermost first; empty when nothing names it.
    pub(super) fn names_at(&self, file_offset: u64) -> Vec<Name> {
        let Some(svma) = elf::svma_of_file_offset(&self.segments, file_offset) else {
            return Vec::new();
        };
        let debug_info = self.debug_info();
        let symbols = debug_info.symbols.as_ref().unwrap_or(&self.symbols);
        let mut names = debug_info
            .dwarf
            .as_ref()
            .map(|dwarf| dwarf.names_at(svma))
            .unwrap_or_default();
        // DWARF may place the address (a line) without naming its function, or not know it
        // at all (code from objects built without -g): the symbol table names it then.
        match names.last_mut() {
            Some(outermost) if outermost.function.is_none() => {
                outermost.function = symbols.name_at(svma);
            }
            Some(_) => {}
            None => names.extend(symbols.name_at(svma).map(|function| Name {
                function: Some(function),
                ..Name::default()
            })),
        }
        names
    }
}

impl DwarfSource {
    /// The module's own DWARF, else its separate debug file's, with that file's symbols.
    fn read(self, module_symbols: &SymbolTable) -> DebugInfo {
        if let Some(dwarf) = self.own.and_then(DwarfNames::parse) {
            return DebugInfo {
                dwarf: Some(dwarf),
                symbols: None,
            };
        }
        let Some(debug_file) = self.separate.find() else {
            return DebugInfo {
                dwarf: None,
                symbols: None,
            };
        };
        let Some(debug) = debug_file.parse() else {
            return DebugInfo {
                dwarf: None,
                symbols: None,
            };
        };
        let mut symbols = module_symbols.clone();
        symbols.add(SymbolTable::read(&debug));
        DebugInfo {
            dwarf: DwarfSections::read(&debug).and_then(DwarfNames::parse),
            symbols: Some(symbols),
        }
    }
}

impl DebugFileLookup {
    /// Debian and others ship debug information in separate files, found by build-id or by
    /// the `.gnu_debuglink` name. A candidate is used only if it is the same build.
    fn find(&self) -> Option<ElfFile> {
        let build_id = self.build_id.as_deref();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(build_id) = build_id.filter(|id| id.len() >= 2) {
            let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
            candidates.push(
                self.debug_directory
                    .join(".build-id")
                    .join(&hex[..2])
                    .join(format!("{}.debug", &hex[2..])),
            );
        }
        if let (Some((name, _crc)), Some(directory)) = (&self.debuglink, self.module_path.parent())
        {
            let name = String::from_utf8_lossy(name).into_owned();
            candidates.push(directory.join(&name));
            candidates.push(directory.join(".debug").join(&name));
            let relative = directory.strip_prefix("/").unwrap_or(directory);
            candidates.push(self.debug_directory.join(relative).join(&name));
        }
        let expected_crc = self.debuglink.as_ref().map(|(_, crc)| *crc);
        candidates.into_iter().find_map(|candidate| {
            // /usr/lib/debug/.build-id/xx/yyyy.debug are links to the debug files.
            let debug = ElfFile::open(&candidate, Links::Follow).ok()?;
            let same_build = {
                let parsed = debug.parse()?;
                match (build_id, elf::build_id(&parsed)) {
                    (Some(ours), Some(theirs)) => ours == theirs,
                    // Without build-ids only the debuglink's checksum of the whole file can tell.
                    _ => expected_crc.is_some_and(|crc| crc32_of_file(&candidate) == Some(crc)),
                }
            };
            same_build.then_some(debug)
        })
    }
}

fn crc32_of_file(path: &Path) -> Option<u32> {
    let mut data = Vec::new();
    open_regular(path, Links::Follow)
        .ok()?
        .read_to_end(&mut data)
        .ok()?;
    Some(crc32fast::hash(&data))
}

/// Function symbols by address, for modules (or addresses) without DWARF.
///
/// Names are kept as the file spells them (mangled), one after the other in one string, and
/// demangled when a frame is named: a large C++ program has hundreds of thousands of
/// symbols (node: 185,000), and demangling them all at first sight took 0.8 s, while its
/// samples piled up unread, and twice the memory.
#[derive(Clone, Default)]
struct SymbolTable {
    /// Sorted by address; one symbol per address, the preferred alias.
    sorted: Vec<Symbol>,
    /// Every symbol's name, at the offsets its [`Symbol`] gives.
    names: String,
}

#[derive(Clone, Copy)]
struct Symbol {
    address: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
}

impl SymbolTable {
    fn read<'data, R: ReadRef<'data>>(file: &object::File<'data, R>) -> Self {
        let mut table = Self::default();
        match file {
            object::File::Elf32(elf) => table.read_elf(elf),
            object::File::Elf64(elf) => table.read_elf(elf),
            _ => {}
        }
        table.sort();
        table
    }

    /// The function symbols of `.symtab` and `.dynsym`. Each string table is read whole, in
    /// one read, and names taken from it: read one by one (as `object`'s symbols do, each a
    /// seek and a read until its NUL), node's 185,000 names cost 370,000 syscalls and half
    /// a second at first sight, while its stack samples waited.
    fn read_elf<'data, Elf: FileHeader, R: ReadRef<'data>>(
        &mut self,
        file: &ObjectElfFile<'data, Elf, R>,
    ) {
        let endian = file.endian();
        for symbols in [file.elf_symbol_table(), file.elf_dynamic_symbol_table()] {
            if symbols.is_empty() {
                continue;
            }
            let strings = file
                .elf_section_table()
                .section(symbols.string_section())
                .and_then(|section| section.data(endian, file.data()));
            let Ok(strings) = strings else {
                continue;
            };
            for symbol in symbols.symbols() {
                let size: u64 = symbol.st_size(endian).into();
                // A symbol without a size cannot tell where its function ends: it would
                // name every stripped static function after it.
                if !matches!(symbol.st_type(), STT_FUNC | STT_GNU_IFUNC)
                    || symbol.is_undefined(endian)
                    || size == 0
                {
                    continue;
                }
                let name = usize::try_from(symbol.st_name(endian))
                    .ok()
                    .and_then(|start| strings.get(start..))
                    .map(|rest| &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())])
                    .and_then(|name| std::str::from_utf8(name).ok())
                    .filter(|name| !name.is_empty());
                if let Some(name) = name {
                    self.push(symbol.st_value(endian).into(), size, name);
                }
            }
        }
    }

    fn push(&mut self, address: u64, size: u64, name: &str) {
        let (Ok(name_start), Ok(name_len)) =
            (u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return;
        };
        self.names.push_str(name);
        self.sorted.push(Symbol {
            address,
            size,
            name_start,
            name_len,
        });
    }

    fn name(&self, symbol: &Symbol) -> &str {
        let start = symbol.name_start as usize;
        self.names
            .get(start..start + symbol.name_len as usize)
            .unwrap_or_default()
    }

    fn add(&mut self, other: SymbolTable) {
        for symbol in &other.sorted {
            self.push(symbol.address, symbol.size, other.name(symbol));
        }
        self.sort();
    }

    /// Sorts by address and keeps one name per address. Aliases are common (glibc's `malloc`
    /// is also `__libc_malloc`; `mmap` is `__mmap` and `mmap64`): the public spelling, with
    /// the fewest leading underscores and then the shortest, is the one people know.
    fn sort(&mut self) {
        let mut sorted = std::mem::take(&mut self.sorted);
        // Names are compared only between aliases of one address.
        let preference = |symbol: &Symbol| {
            let name = self.name(symbol);
            let underscores = name.len() - name.trim_start_matches('_').len();
            (underscores, name.len(), name)
        };
        sorted.sort_unstable_by(|a, b| {
            a.address
                .cmp(&b.address)
                .then_with(|| preference(a).cmp(&preference(b)))
        });
        sorted.dedup_by_key(|symbol| symbol.address);
        self.sorted = sorted;
    }

    /// The function whose symbol covers `svma`, demangled.
    fn name_at(&self, svma: u64) -> Option<String> {
        let after = self.sorted.partition_point(|symbol| symbol.address <= svma);
        let symbol = self.sorted.get(after.checked_sub(1)?)?;
        (svma - symbol.address < symbol.size)
            .then(|| addr2line::demangle_auto(Cow::Borrowed(self.name(symbol)), None).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_cover_their_size_and_public_aliases_win() {
        let mut table = SymbolTable::default();
        table.push(0x2000, 0x10, "__mmap");
        table.push(0x1000, 0x100, "__libc_malloc");
        table.push(0x2000, 0x10, "mmap64");
        table.push(0x1000, 0x100, "malloc");
        table.push(0x2000, 0x10, "mmap");
        table.push(
            0x3000,
            0x10,
            "_ZN2v84base2OS8AllocateEPvmmNS1_16MemoryPermissionE",
        );
        table.sort();
        assert_eq!(table.name_at(0x1000).as_deref(), Some("malloc"));
        assert_eq!(table.name_at(0x10ff).as_deref(), Some("malloc"));
        assert_eq!(
            table.name_at(0x1100),
            None,
            "a stripped static function after malloc"
        );
        assert_eq!(table.name_at(0x200f).as_deref(), Some("mmap"));
        assert_eq!(table.name_at(0xfff), None);
        assert_eq!(
            table.name_at(0x3008).as_deref(),
            Some("v8::base::OS::Allocate(void*, unsigned long, unsigned long, v8::base::OS::MemoryPermission)"),
            "names are demangled when asked for"
        );
    }
}
