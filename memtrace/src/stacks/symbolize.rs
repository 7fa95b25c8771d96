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
    collections::{HashMap, HashSet},
    path::PathBuf,
    rc::Rc,
};

use super::{
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
