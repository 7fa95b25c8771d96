//! Per-process table of the fds known to refer to memfds. Other fds are not traced and do not
//! matter: only a memfd's fd tells whether its mappings outlived it.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::model::memfd::{MemfdId, MemfdRegistry};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FdEntry {
    memfd: MemfdId,
    /// Closed by exec (MFD_CLOEXEC).
    cloexec: bool,
}

/// A B-tree, not a hash map: an empty one is 24 bytes and no allocation, which every
/// process pays (most have no memfd), a million forked children that never ran included.
#[derive(Clone, Debug, Default)]
pub struct FdTable {
    memfds: BTreeMap<u32, FdEntry>,
}

impl FdTable {
    pub fn memfd(&self, fd: u32) -> Option<MemfdId> {
        self.memfds.get(&fd).map(|entry| entry.memfd)
    }

    /// Each fd with the memfd it refers to and whether exec closes it.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u32, MemfdId, bool)> + '_ {
        self.memfds
            .iter()
            .map(|(&fd, entry)| (fd, entry.memfd, entry.cloexec))
    }

    /// The memfds its fds refer to.
    pub(crate) fn memfds(&self) -> impl Iterator<Item = MemfdId> + '_ {
        self.memfds.values().map(|entry| entry.memfd)
    }

    pub fn len(&self) -> usize {
        self.memfds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.memfds.is_empty()
    }

    pub(crate) fn open(
        &mut self,
        fd: u32,
        memfd: MemfdId,
        cloexec: bool,
        registry: &mut MemfdRegistry,
    ) {
        registry.fd_opened(memfd);
        // A reused fd number means we missed how the old one went away (dup2 onto it, say).
        if let Some(previous) = self.memfds.insert(fd, FdEntry { memfd, cloexec }) {
            registry.fd_closed(previous.memfd);
        }
    }

    pub(crate) fn close(&mut self, fd: u32, registry: &mut MemfdRegistry) {
        if let Some(entry) = self.memfds.remove(&fd) {
            registry.fd_closed(entry.memfd);
        }
    }

    pub(crate) fn close_on_exec(&mut self, registry: &mut MemfdRegistry) {
        self.memfds.retain(|_, entry| {
            if entry.cloexec {
                registry.fd_closed(entry.memfd);
            }
            !entry.cloexec
        });
    }

    pub(crate) fn close_all(&mut self, registry: &mut MemfdRegistry) {
        for (_, entry) in std::mem::take(&mut self.memfds) {
            registry.fd_closed(entry.memfd);
        }
    }

    /// Adds a parent's fds (already [`Self::inherit`]ed) under the ones this process has
    /// already been seen to open.
    pub(crate) fn adopt_inherited(&mut self, inherited: FdTable, registry: &mut MemfdRegistry) {
        for (fd, entry) in inherited.memfds {
            match self.memfds.entry(fd) {
                Entry::Occupied(_) => registry.fd_closed(entry.memfd),
                Entry::Vacant(slot) => {
                    slot.insert(entry);
                }
            }
        }
    }

    /// The child's copy after fork: every fd now has one more holder.
    pub(crate) fn inherit(&self, registry: &mut MemfdRegistry) -> FdTable {
        for entry in self.memfds.values() {
            registry.fd_opened(entry.memfd);
        }
        self.clone()
    }
}
