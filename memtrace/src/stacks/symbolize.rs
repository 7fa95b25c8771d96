//! From a module file and an offset in it to a function name, and a file and line where debug
//! information exists.
//!
//! Names come from DWARF (`.debug_info`, through `addr2line`, inlined functions included) when
//! the module or its separate debug file (`/usr/lib/debug/.build-id/…`, `.gnu_debuglink`) has
//! it, else from the symbol table (`.symtab`, or `.dynsym` in a stripped library). A stripped
//! library's static functions (glibc's `sysmalloc`) have no name without its debug file.
//!
//! # Modules replaced on disk
//!
//! A process keeps the file version it mapped, while the path may meanwhile hold another build
//! (a package upgrade, a rebuild). The symbolizer therefore reads a module once (through the
//! [`ModuleCache`] it shares with the unwinder, by build-id, or by inode, size and mtime for
//! files without one), and remembers which build each path held when it was first asked about
//! ("first sight"):
//!
//! - [`Symbolizer::symbolize`] answers with the build the path held at first sight, even if the
//!   file was since replaced by another build or deleted. memtrace asks when it sees a mapping
//!   made, so first sight is the build the process mapped.
//! - [`Symbolizer::symbolize_inlined`] with an expected build-id (e.g. one the kernel reported)
//!   answers from the cached build with that id, else from the file on disk if it has that id,
//!   else with module and offset only: the file is missing or holds a different build.
//! - A path that cannot be read when first asked about gets module and offset only; it is not
//!   remembered, so a file that appears later is read then.
//!
//! Files are read, never mapped, so a file overwritten in place cannot change a cached module.
//!
//! A module's DWARF is parsed, and its separate debug file found and read, only when one of
//! its addresses is first named ([`SymbolModule`]); the debug file is verified then, so one
//! that changed since first sight gives symbol-table names, never another build's.

use std::{
    borrow::Cow,
    cell::{Cell, OnceCell},
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    rc::Rc,
};

use object::{Object, ObjectSymbol, SymbolKind};
use std::io::Read as _;

use crate::file_access::{open_regular, Links};

use super::{
    dwarf::{DwarfNames, DwarfSections, Name},
    elf::{self, ElfFile, LoadSegment},
    modules::{Module, ModuleCache, ModuleKey, SharedModules},
    Frame, MappedFile,
};

/// Names addresses of module files, reading each module once through its [`ModuleCache`].
pub struct Symbolizer {
    modules: SharedModules,
    /// The build each path held when first asked about.
    first_sight: HashMap<String, ModuleKey>,
    /// Paths a live process maps but whose file could not be read through its view: the
    /// file at that path here may be another one, so it is not read by path either.
    unreadable: HashSet<String>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer with a module cache of its own.
    pub fn new() -> Self {
        Self::with_modules(ModuleCache::new().shared())
    }

    /// A symbolizer (with a module cache of its own) that looks for separate debug files
    /// under `directory` instead of `/usr/lib/debug` (e.g. a container's root joined with it).
    pub fn with_debug_directory(directory: impl Into<PathBuf>) -> Self {
        Self::with_modules(ModuleCache::with_debug_directory(directory).shared())
    }

    /// A symbolizer that reads modules through `modules`, shared with an unwinder.
    pub fn with_modules(modules: SharedModules) -> Self {
        Self {
            modules,
            first_sight: HashMap::new(),
            unreadable: HashSet::new(),
        }
    }

    /// Names the code at `file_offset` in the module the path held at first sight; the frame
    /// is that of the innermost inlined function when the code was inlined. Module and offset
    /// only when the module cannot be read or has no name for the offset.
    pub fn symbolize(&mut self, module_path: &str, file_offset: u64) -> Frame {
        let mut frames = self.symbolize_inlined(module_path, None, file_offset);
        frames.swap_remove(0)
    }

    /// Every function the code at `file_offset` belongs to, innermost (inlined) first and the
    /// function that contains it last; never empty. With `expected_build_id`, only that build
    /// of the module is used (see the module documentation).
    pub fn symbolize_inlined(
        &mut self,
        module_path: &str,
        expected_build_id: Option<&[u8]>,
        file_offset: u64,
    ) -> Vec<Frame> {
        let bare = Frame {
            module: Some(module_path.to_string()),
            module_offset: Some(file_offset),
            ..Frame::default()
        };
        let module = match expected_build_id {
            None => self.first_sight_module(module_path),
            Some(build_id) => self.module_with_build_id(module_path, build_id),
        };
        let names = module
            .map(|module| module.symbols.names_at(file_offset))
            .unwrap_or_default();
        if names.is_empty() {
            return vec![bare];
        }
        let outermost = names.len() - 1;
        names
            .into_iter()
            .enumerate()
            .map(|(index, name)| Frame {
                function: name.function,
                file: name.file,
                line: name.line,
                inlined: index < outermost,
                ..bare.clone()
            })
            .collect()
    }

    /// Reads the module behind `mapping` as its process maps it ([`super::mapped_file`]) and keeps it
    /// by build-id, so that names asked later with that build-id come from this very file (a
    /// container's, not the host's file of that name). `Err` when it cannot be read, and then
    /// nothing is kept. A file without a build-id becomes its path's first sight if the path
    /// has none; if the path's first sight is another file, its frames cannot be named by
    /// path ([`Registered::named_by_path`] is false).
    pub fn register_mapped(&mut self, mapping: &MappedFile) -> std::io::Result<Registered> {
        let (key, module) = self.modules.borrow_mut().mapped(mapping)?;
        let named_by_path = match self.first_sight.get(&mapping.path) {
            None => {
                self.first_sight.insert(mapping.path.clone(), key);
                true
            }
            Some(seen) => *seen == key,
        };
        Ok(Registered {
            build_id: module.build_id.clone().unwrap_or_default(),
            named_by_path,
        })
    }

    /// Notes that a live process's file at `path` could not be read as the process maps it:
    /// unless a process's view brings that path in, its frames are not named from the file
    /// that happens to be at `path` on this machine.
    pub fn mark_unreadable(&mut self, path: &str) {
        self.unreadable.insert(path.to_string());
    }

    /// The build-id of the module the path held at first sight.
    pub fn build_id(&mut self, module_path: &str) -> Option<Vec<u8>> {
        match self.first_sight_key(module_path)? {
            ModuleKey::BuildId(build_id) => Some(build_id),
            ModuleKey::File(_) => None,
        }
    }

    fn first_sight_module(&mut self, path: &str) -> Option<Rc<Module>> {
        let key = self.first_sight_key(path)?;
        self.modules.borrow().build(&key)
    }

    fn first_sight_key(&mut self, path: &str) -> Option<ModuleKey> {
        if let Some(key) = self.first_sight.get(path) {
            return Some(key.clone());
        }
        if self.unreadable.contains(path) {
            return None;
        }
        // Another path (a copy, a link) or the unwinder may already have read the same build.
        let (_, key, _) = self.modules.borrow_mut().at_path(path)?;
        self.first_sight.insert(path.to_string(), key.clone());
        Some(key)
    }

    fn module_with_build_id(&mut self, path: &str, build_id: &[u8]) -> Option<Rc<Module>> {
        let key = ModuleKey::BuildId(build_id.to_vec());
        if let Some(module) = self.modules.borrow().build(&key) {
            return Some(module);
        }
        let (_, found, module) = self.modules.borrow_mut().at_path(path)?;
        if found != key {
            return None;
        }
        self.first_sight.entry(path.to_string()).or_insert(key);
        Some(module)
    }
}

/// A module read through its process's view.
pub struct Registered {
    /// Its build-id; empty when it has none.
    pub build_id: Vec<u8>,
    /// Whether the path's first sight is this very file, so that naming by path names it.
    pub named_by_path: bool,
}

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
    fn names_at(&self, file_offset: u64) -> Vec<Name> {
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
