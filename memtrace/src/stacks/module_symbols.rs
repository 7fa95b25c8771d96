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

use object::{Object, ObjectSymbol, SymbolKind};

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
    pub(super) fn read<'data>(
        path: &Path,
        file: &impl Object<'data>,
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
                outermost.function = symbols.name_at(svma).map(str::to_string);
            }
            Some(_) => {}
            None => names.extend(symbols.name_at(svma).map(|function| Name {
                function: Some(function.to_string()),
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
#[derive(Clone, Default)]
struct SymbolTable {
    /// Sorted by address; one symbol per address, the preferred alias.
    sorted: Vec<Symbol>,
}

#[derive(Clone)]
struct Symbol {
    address: u64,
    size: u64,
    name: String,
}

impl SymbolTable {
    fn read<'data>(file: &impl Object<'data>) -> Self {
        let mut table = Self {
            sorted: file
                .symbols()
                .chain(file.dynamic_symbols())
                .filter(|symbol| {
                    // A symbol without a size cannot tell where its function ends: it would
                    // name every stripped static function after it.
                    symbol.kind() == SymbolKind::Text && symbol.is_definition() && symbol.size() > 0
                })
                .filter_map(|symbol| {
                    let name = symbol.name().ok().filter(|name| !name.is_empty())?;
                    Some(Symbol {
                        address: symbol.address(),
                        size: symbol.size(),
                        name: addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned(),
                    })
                })
                .collect(),
        };
        table.sort();
        table
    }

    fn add(&mut self, other: SymbolTable) {
        self.sorted.extend(other.sorted);
        self.sort();
    }

    /// Sorts by address and keeps one name per address. Aliases are common (glibc's `malloc`
    /// is also `__libc_malloc`; `mmap` is `__mmap` and `mmap64`): the public spelling, with
    /// the fewest leading underscores and then the shortest, is the one people know.
    fn sort(&mut self) {
        let preference = |symbol: &Symbol| {
            let underscores = symbol.name.len() - symbol.name.trim_start_matches('_').len();
            (underscores, symbol.name.len())
        };
        self.sorted.sort_by(|a, b| {
            (a.address, preference(a), &a.name).cmp(&(b.address, preference(b), &b.name))
        });
        self.sorted.dedup_by_key(|symbol| symbol.address);
    }

    /// The function whose symbol covers `svma`.
    fn name_at(&self, svma: u64) -> Option<&str> {
        let after = self.sorted.partition_point(|symbol| symbol.address <= svma);
        let symbol = self.sorted.get(after.checked_sub(1)?)?;
        (svma - symbol.address < symbol.size).then_some(symbol.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(address: u64, size: u64, name: &str) -> Symbol {
        Symbol {
            address,
            size,
            name: name.to_string(),
        }
    }

    #[test]
    fn symbols_cover_their_size_and_public_aliases_win() {
        let mut table = SymbolTable {
            sorted: vec![
                symbol(0x2000, 0x10, "__mmap"),
                symbol(0x1000, 0x100, "__libc_malloc"),
                symbol(0x2000, 0x10, "mmap64"),
                symbol(0x1000, 0x100, "malloc"),
                symbol(0x2000, 0x10, "mmap"),
            ],
        };
        table.sort();
        assert_eq!(table.name_at(0x1000), Some("malloc"));
        assert_eq!(table.name_at(0x10ff), Some("malloc"));
        assert_eq!(
            table.name_at(0x1100),
            None,
            "a stripped static function after malloc"
        );
        assert_eq!(table.name_at(0x200f), Some("mmap"));
        assert_eq!(table.name_at(0xfff), None);
    }
}
