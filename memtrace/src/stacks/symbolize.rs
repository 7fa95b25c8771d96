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
//! (a package upgrade, a rebuild). The symbolizer therefore reads a module once, caches it by
//! build-id (by inode, size and mtime for files without one), and remembers which build each
//! path held when it was first asked about ("first sight"):
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

use std::{
    borrow::Cow,
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSymbol, SymbolKind};
use std::io::Read as _;

use crate::file_access::{open_regular, Links};

use super::{
    elf::{self, ElfFile, FileIdentity, LoadSegment},
    mapped_file, Frame, MappedFile,
};

type DwarfReader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// Where distributions install separate debug files.
const DEFAULT_DEBUG_DIRECTORY: &str = "/usr/lib/debug";

/// Names addresses of module files, caching each module by build-id.
pub struct Symbolizer {
    /// The build each path held when first asked about.
    first_sight: HashMap<String, ModuleKey>,
    modules: HashMap<ModuleKey, SymbolModule>,
    /// Paths a live process maps but whose file could not be read through its view: the
    /// file at that path here may be another one, so it is not read by path either.
    unreadable: std::collections::HashSet<String>,
    debug_directory: PathBuf,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Which build of a module: its build-id, or for a file without one, that file version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ModuleKey {
    BuildId(Vec<u8>),
    File(FileIdentity),
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::with_debug_directory(DEFAULT_DEBUG_DIRECTORY)
    }

    /// A symbolizer that looks for separate debug files under `directory` instead of
    /// `/usr/lib/debug` (e.g. a container's root joined with it).
    pub fn with_debug_directory(directory: impl Into<PathBuf>) -> Self {
        Self {
            first_sight: HashMap::new(),
            modules: HashMap::new(),
            unreadable: std::collections::HashSet::new(),
            debug_directory: directory.into(),
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
            .map(|module| module.names_at(file_offset))
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

    /// Reads the module behind `mapping` as its process maps it ([`mapped_file`]) and keeps it
    /// by build-id, so that names asked later with that build-id come from this very file (a
    /// container's, not the host's file of that name). `Err` when it cannot be read, and then
    /// nothing is kept. A file without a build-id becomes its path's first sight if the path
    /// has none; if the path's first sight is another file, its frames cannot be named by
    /// path ([`Registered::named_by_path`] is false).
    pub fn register_mapped(&mut self, mapping: &MappedFile) -> std::io::Result<Registered> {
        let file = mapped_file::open(mapping)?;
        let build_id = file.parse().and_then(|parsed| elf::build_id(&parsed));
        let key = match &build_id {
            Some(build_id) => ModuleKey::BuildId(build_id.clone()),
            None => ModuleKey::File(file.identity),
        };
        if !self.modules.contains_key(&key) {
            let module = SymbolModule::read(Path::new(&mapping.path), &file, &self.debug_directory);
            self.modules.insert(key.clone(), module);
        }
        let named_by_path = match self.first_sight.get(&mapping.path) {
            None => {
                self.first_sight.insert(mapping.path.clone(), key);
                true
            }
            Some(seen) => *seen == key,
        };
        Ok(Registered {
            build_id: build_id.unwrap_or_default(),
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

    fn first_sight_module(&mut self, path: &str) -> Option<&SymbolModule> {
        let key = self.first_sight_key(path)?;
        self.modules.get(&key)
    }

    fn first_sight_key(&mut self, path: &str) -> Option<ModuleKey> {
        if let Some(key) = self.first_sight.get(path) {
            return Some(key.clone());
        }
        if self.unreadable.contains(path) {
            return None;
        }
        let (key, file) = identify(Path::new(path))?;
        // Another path (a copy, a link) may already have brought in the same build.
        if !self.modules.contains_key(&key) {
            let module = SymbolModule::read(Path::new(path), &file, &self.debug_directory);
            self.modules.insert(key.clone(), module);
        }
        self.first_sight.insert(path.to_string(), key.clone());
        Some(key)
    }

    fn module_with_build_id(&mut self, path: &str, build_id: &[u8]) -> Option<&SymbolModule> {
        let key = ModuleKey::BuildId(build_id.to_vec());
        if !self.modules.contains_key(&key) {
            let (found, file) = identify(Path::new(path))?;
            if found != key {
                return None;
            }
            let module = SymbolModule::read(Path::new(path), &file, &self.debug_directory);
            self.modules.insert(key.clone(), module);
            self.first_sight
                .entry(path.to_string())
                .or_insert(key.clone());
        }
        self.modules.get(&key)
    }
}

/// A module read through its process's view.
pub struct Registered {
    /// Its build-id; empty when it has none.
    pub build_id: Vec<u8>,
    /// Whether the path's first sight is this very file, so that naming by path names it.
    pub named_by_path: bool,
}

/// What the symbolizer keeps of one module build.
#[derive(Default)]
struct SymbolModule {
    segments: Vec<LoadSegment>,
    dwarf: Option<addr2line::Context<DwarfReader>>,
    symbols: SymbolTable,
}

/// One function an address belongs to.
#[derive(Default)]
struct Name {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

impl SymbolModule {
    /// Reads the module `file` (opened from `path`), and its separate debug file (looked for
    /// under `debug_directory`) if it has no DWARF itself. A file that is not ELF becomes an
    /// empty module, so it is not read again.
    fn read(path: &Path, file: &ElfFile, debug_directory: &Path) -> Self {
        let Some(parsed) = file.parse() else {
            return Self::default();
        };
        let mut module = Self {
            segments: elf::load_segments(&parsed),
            dwarf: load_dwarf(&parsed),
            symbols: SymbolTable::read(&parsed),
        };
        if module.dwarf.is_none() {
            let build_id = elf::build_id(&parsed);
            let debug_file =
                separate_debug_file(path, &parsed, build_id.as_deref(), debug_directory);
            if let Some(debug_file) = debug_file {
                if let Some(debug) = debug_file.parse() {
                    module.dwarf = load_dwarf(&debug);
                    module.symbols.add(SymbolTable::read(&debug));
                }
            }
        }
        module
    }

    /// The functions at `file_offset`, innermost first; empty when nothing names it.
    fn names_at(&self, file_offset: u64) -> Vec<Name> {
        let Some(svma) = elf::svma_of_file_offset(&self.segments, file_offset) else {
            return Vec::new();
        };
        let mut names = self
            .dwarf
            .as_ref()
            .map(|dwarf| dwarf_names(dwarf, svma))
            .unwrap_or_default();
        // DWARF may place the address (a line) without naming its function, or not know it
        // at all (code from objects built without -g): the symbol table names it then.
        match names.last_mut() {
            Some(outermost) if outermost.function.is_none() => {
                outermost.function = self.symbols.name_at(svma).map(str::to_string);
            }
            Some(_) => {}
            None => names.extend(self.symbols.name_at(svma).map(|function| Name {
                function: Some(function.to_string()),
                ..Name::default()
            })),
        }
        names
    }
}

/// Opens the module at `path` and tells which build it is; `None` if it cannot be opened.
fn identify(path: &Path) -> Option<(ModuleKey, ElfFile)> {
    let file = ElfFile::open(path, Links::Refuse).ok()?;
    let build_id = file.parse().and_then(|parsed| elf::build_id(&parsed));
    let key = match build_id {
        Some(build_id) => ModuleKey::BuildId(build_id),
        None => ModuleKey::File(file.identity),
    };
    Some((key, file))
}

/// The DWARF functions at `svma`, innermost first.
fn dwarf_names(dwarf: &addr2line::Context<DwarfReader>, svma: u64) -> Vec<Name> {
    let mut names = Vec::new();
    let Ok(mut frames) = dwarf.find_frames(svma).skip_all_loads() else {
        return names;
    };
    while let Ok(Some(frame)) = frames.next() {
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
    names
}

/// The DWARF of `file`, copied out of it, or `None` if it has no `.debug_info`.
fn load_dwarf<'data>(file: &impl Object<'data>) -> Option<addr2line::Context<DwarfReader>> {
    file.section_by_name(".debug_info")?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = gimli::Dwarf::load(|section| -> Result<DwarfReader, gimli::Error> {
        let data: Arc<[u8]> = elf::section_bytes(file, section.name())
            .map(|section| section.data)
            .unwrap_or_else(|| Arc::from(&[][..]));
        Ok(gimli::EndianArcSlice::new(data, endian))
    })
    .ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// Debian and others ship debug information in separate files, found by build-id or by the
/// `.gnu_debuglink` name. A candidate is used only if it is the same build.
fn separate_debug_file<'data>(
    path: &Path,
    file: &impl Object<'data>,
    build_id: Option<&[u8]>,
    debug_directory: &Path,
) -> Option<ElfFile> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(build_id) = build_id.filter(|id| id.len() >= 2) {
        let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
        candidates.push(
            debug_directory
                .join(".build-id")
                .join(&hex[..2])
                .join(format!("{}.debug", &hex[2..])),
        );
    }
    let link = file.gnu_debuglink().ok().flatten();
    if let (Some((name, _crc)), Some(directory)) = (link, path.parent()) {
        let name = String::from_utf8_lossy(name).into_owned();
        candidates.push(directory.join(&name));
        candidates.push(directory.join(".debug").join(&name));
        let relative = directory.strip_prefix("/").unwrap_or(directory);
        candidates.push(debug_directory.join(relative).join(&name));
    }
    let expected_crc = link.map(|(_, crc)| crc);
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

fn crc32_of_file(path: &Path) -> Option<u32> {
    let mut data = Vec::new();
    open_regular(path, Links::Follow)
        .ok()?
        .read_to_end(&mut data)
        .ok()?;
    Some(crc32fast::hash(&data))
}

/// Function symbols by address, for modules (or addresses) without DWARF.
#[derive(Default)]
struct SymbolTable {
    /// Sorted by address; one symbol per address, the preferred alias.
    sorted: Vec<Symbol>,
}

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
