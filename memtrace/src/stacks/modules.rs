//! The one cache of opened module files, shared by the [`Unwinder`](super::Unwinder) and the
//! [`Symbolizer`](super::Symbolizer).
//!
//! Both need the same files (the unwinder a module's CFI when a sample arrives, the symbolizer
//! its symbols and debug information to name the frames): each file is opened and parsed once
//! here, by whichever asks first, and kept by build (its build-id, or for a file without one,
//! that file version), so containers made from one image share one parse of each library.
//!
//! What a module is needed for is read when its file is opened (unwind sections, symbols,
//! and the bytes of its own DWARF sections), and the file is closed then: files are read,
//! never mapped nor kept open, so a file overwritten in place later cannot change a cached
//! module. Parsing DWARF, and finding and reading a separate debug file, wait until a frame
//! of the module is first named ([`SymbolModule`]): in a live session that is the report,
//! after the rings are unmapped, so the largest part of what call stacks cost is never held
//! at the same time as the rings.
//!
//! Which build a path stands for (the unwinder's latest read, the symbolizer's first sight)
//! is each user's own business: the cache only answers "what is this file" and "what is this
//! build".

use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use crate::file_access::Links;

use super::{
    elf::{self, ElfFile, FileIdentity},
    mapped_file,
    module_symbols::SymbolModule,
    unwind_sections::UnwindSections,
    MappedFile,
};

/// Where distributions install separate debug files.
const DEFAULT_DEBUG_DIRECTORY: &str = "/usr/lib/debug";

/// A [`ModuleCache`] as the unwinder and the symbolizer of one session share it.
pub type SharedModules = Rc<RefCell<ModuleCache>>;

/// Opened module files, by build and by the file version they were read from.
pub struct ModuleCache {
    builds: HashMap<ModuleKey, Rc<Module>>,
    /// The build each file version read holds, so a file seen again is recognised by a `stat`.
    files: HashMap<FileIdentity, ModuleKey>,
    /// Where separate debug files are looked for.
    debug_directory: PathBuf,
}

/// Which build of a module: its build-id, or for a file without one, that file version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum ModuleKey {
    BuildId(Vec<u8>),
    File(FileIdentity),
}

/// What the unwinder and the symbolizer need of one module build.
pub(super) struct Module {
    pub build_id: Option<Vec<u8>>,
    /// `None` when the file is not a usable ELF: remembered so it is not read again.
    pub unwind: Option<Arc<UnwindSections>>,
    pub symbols: SymbolModule,
}

impl Default for ModuleCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ModuleCache {
    pub fn new() -> Self {
        Self::with_debug_directory(DEFAULT_DEBUG_DIRECTORY)
    }

    /// A cache that looks for separate debug files under `directory` instead of
    /// `/usr/lib/debug` (e.g. a container's root joined with it).
    pub fn with_debug_directory(directory: impl Into<PathBuf>) -> Self {
        Self {
            builds: HashMap::new(),
            files: HashMap::new(),
            debug_directory: directory.into(),
        }
    }

    pub fn shared(self) -> SharedModules {
        Rc::new(RefCell::new(self))
    }

    /// The module in the file `mapping` maps, read as its process maps it ([`mapped_file`]);
    /// `Err` when that file cannot be read.
    pub(super) fn mapped(&mut self, mapping: &MappedFile) -> io::Result<(ModuleKey, Rc<Module>)> {
        if let Some(found) = mapped_file::identity(mapping).and_then(|id| self.known(&id)) {
            return Ok(found);
        }
        let file = mapped_file::open(mapping)?;
        Ok(self.read(Path::new(&mapping.path), &file))
    }

    /// The module in the file at `path` now, with that file's identity; `None` if it cannot
    /// be opened.
    pub(super) fn at_path(&mut self, path: &str) -> Option<(FileIdentity, ModuleKey, Rc<Module>)> {
        if let Some(identity) = FileIdentity::at(Path::new(path), Links::Refuse) {
            if let Some((key, module)) = self.known(&identity) {
                return Some((identity, key, module));
            }
        }
        let file = ElfFile::open(Path::new(path), Links::Refuse).ok()?;
        let (key, module) = self.read(Path::new(path), &file);
        Some((file.identity, key, module))
    }

    /// The build `key`, if some file of it was read.
    pub(super) fn build(&self, key: &ModuleKey) -> Option<Rc<Module>> {
        self.builds.get(key).cloned()
    }

    fn known(&self, identity: &FileIdentity) -> Option<(ModuleKey, Rc<Module>)> {
        let key = self.files.get(identity)?;
        Some((key.clone(), self.builds.get(key)?.clone()))
    }

    /// Tells which build `file` (opened from `path`) is, and reads it unless that build was
    /// read before from another file (a copy, a container's own file, a replaced file).
    fn read(&mut self, path: &Path, file: &ElfFile) -> (ModuleKey, Rc<Module>) {
        let parsed = file.parse();
        let build_id = parsed.as_ref().and_then(elf::build_id);
        let key = match &build_id {
            Some(build_id) => ModuleKey::BuildId(build_id.clone()),
            None => ModuleKey::File(file.identity),
        };
        let debug_directory = &self.debug_directory;
        let module = self
            .builds
            .entry(key.clone())
            .or_insert_with(|| {
                Rc::new(match &parsed {
                    Some(parsed) => Module {
                        build_id,
                        unwind: Some(Arc::new(UnwindSections::read(parsed))),
                        symbols: SymbolModule::read(path, parsed, debug_directory),
                    },
                    None => Module {
                        build_id: None,
                        unwind: None,
                        symbols: SymbolModule::default(),
                    },
                })
            })
            .clone();
        self.files.insert(file.identity, key.clone());
        (key, module)
    }
}
