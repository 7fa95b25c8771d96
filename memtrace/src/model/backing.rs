//! What a new region is a view of: a file, a memfd, anonymous memory. Shared by the syscall,
//! exec and attach paths so they name and classify the same memory the same way.

use std::sync::Arc;

use crate::event::FileRef;
use crate::model::memfd::{self, MemfdId, MemfdRegistry, DELETED_SUFFIX};
use crate::model::names::Names;
use crate::model::region::{Creation, Perms, Region, RegionKind};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Backing {
    pub(crate) kind: RegionKind,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) inode: u64,
    pub(crate) memfd: Option<MemfdId>,
}

impl Backing {
    pub(crate) fn anonymous(shared: bool) -> Self {
        Self::unnamed(if shared {
            RegionKind::SharedAnon
        } else {
            RegionKind::Anon
        })
    }

    pub(crate) fn unnamed(kind: RegionKind) -> Self {
        Self {
            kind,
            name: None,
            inode: 0,
            memfd: None,
        }
    }

    pub(crate) fn named(kind: RegionKind, name: &str, names: &mut Names) -> Self {
        Self {
            kind,
            name: Some(names.intern(name)),
            inode: 0,
            memfd: None,
        }
    }

    /// A memfd created during the session.
    pub(crate) fn memfd(id: MemfdId, registry: &MemfdRegistry) -> Option<Self> {
        let memfd = registry.get(id)?;
        Some(Self {
            kind: RegionKind::Memfd,
            name: Some(memfd.name.clone()),
            inode: memfd.inode,
            memfd: Some(id),
        })
    }

    /// The file behind an fd. A memfd is recognised by its inode first (the most reliable),
    /// then by the fd the process got from memfd_create, then by its `/memfd:` path alone
    /// (one created before the session).
    pub(crate) fn of_file(
        file: &FileRef,
        fd_memfd: Option<MemfdId>,
        registry: &MemfdRegistry,
        names: &mut Names,
    ) -> Self {
        let is_memfd_path = file.path.starts_with(memfd::MEMFD_PATH_PREFIX);
        let session_memfd = registry
            .by_inode(file.inode)
            .or(fd_memfd.filter(|_| is_memfd_path));
        if let Some(backing) = session_memfd.and_then(|id| Self::memfd(id, registry)) {
            return backing;
        }
        if let Some(name) = memfd::region_name_from_path(&file.path) {
            return Self {
                inode: file.inode,
                ..Self::named(RegionKind::Memfd, &name, names)
            };
        }
        let path = file.path.strip_suffix(DELETED_SUFFIX).unwrap_or(&file.path);
        Self {
            inode: file.inode,
            ..Self::named(RegionKind::File, path, names)
        }
    }

    pub(crate) fn region(
        self,
        start: u64,
        end: u64,
        perms: Perms,
        offset: u64,
        created: Creation,
    ) -> Region {
        Region {
            start,
            end,
            perms,
            kind: self.kind,
            name: self.name,
            offset,
            inode: self.inode,
            created,
            memfd: self.memfd,
            thread_stack: false,
            sealed: false,
            pkey: 0,
            stack: None,
        }
    }
}
