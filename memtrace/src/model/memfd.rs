//! The memfds created during the session: who made them, when, and how many fds still refer to
//! them. A mapping whose memfd has no fd left is the .NET double-mapping leak's signature.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::names::Names;

pub use crate::linux_abi::MEMFD_PATH_PREFIX;
/// How `/proc/PID/maps` marks a file whose last name is gone (every memfd).
pub const DELETED_SUFFIX: &str = " (deleted)";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemfdId(u32);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memfd {
    pub id: MemfdId,
    /// As regions are named: `memfd:NAME`.
    pub name: Arc<str>,
    /// 0 when the kernel side could not name the file.
    pub inode: u64,
    pub created_ns: u64,
    pub created_by_pid: u32,
    open_fds: u32,
    /// Found mapped when memtrace attached: `created_ns` is the attach, not its creation.
    pub seen_at_attach: bool,
}

impl Memfd {
    /// Fds known to refer to this memfd, across all processes.
    pub fn open_fds(&self) -> u32 {
        self.open_fds
    }
}

/// Memfds are swept once there are this many (and then whenever their number doubles).
const SWEEP_FLOOR: usize = 1024;

#[derive(Clone, Debug, Default)]
pub struct MemfdRegistry {
    /// By id; `None` for a slot swept and not taken again.
    memfds: Vec<Option<Memfd>>,
    free: Vec<u32>,
    /// Memfds held, and how many were held after the last sweep.
    held: usize,
    held_after_sweep: usize,
    /// The latest memfd with each inode: a freed memfd's inode number can be reused.
    by_inode: HashMap<u64, MemfdId>,
}

impl MemfdRegistry {
    pub fn get(&self, id: MemfdId) -> Option<&Memfd> {
        self.memfds.get(id.0 as usize)?.as_ref()
    }

    fn get_mut(&mut self, id: MemfdId) -> Option<&mut Memfd> {
        self.memfds.get_mut(id.0 as usize)?.as_mut()
    }

    pub fn by_inode(&self, inode: u64) -> Option<MemfdId> {
        if inode == 0 {
            return None;
        }
        self.by_inode.get(&inode).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Memfd> {
        self.memfds.iter().flatten()
    }

    /// Whether enough memfds came since the last sweep to sweep again: a program that creates,
    /// maps, unmaps and closes a memfd per frame (a Wayland client's buffers) would otherwise
    /// grow the registry with every one, for as long as it is traced.
    pub(crate) fn sweep_due(&self) -> bool {
        self.held >= 2 * self.held_after_sweep.max(SWEEP_FLOOR)
    }

    /// Forgets the memfds no fd refers to and `referenced` does not hold (no region maps
    /// them): nothing can name them again. Their ids are given to the next memfds.
    pub(crate) fn sweep(&mut self, referenced: &std::collections::HashSet<MemfdId>) {
        for (slot, entry) in self.memfds.iter_mut().enumerate() {
            let Some(memfd) = entry else {
                continue;
            };
            if memfd.open_fds > 0 || referenced.contains(&memfd.id) {
                continue;
            }
            if self.by_inode.get(&memfd.inode) == Some(&memfd.id) {
                self.by_inode.remove(&memfd.inode);
            }
            *entry = None;
            self.free.push(slot as u32);
            self.held -= 1;
        }
        self.held_after_sweep = self.held;
    }

    /// Registers a memfd_create; the caller accounts for the fd it returned.
    pub(crate) fn create(
        &mut self,
        bare_name: &str,
        inode: u64,
        created_ns: u64,
        created_by_pid: u32,
        names: &mut Names,
    ) -> MemfdId {
        let id = match self.free.pop() {
            Some(slot) => MemfdId(slot),
            None => {
                self.memfds.push(None);
                MemfdId(self.memfds.len() as u32 - 1)
            }
        };
        self.memfds[id.0 as usize] = Some(Memfd {
            id,
            name: names.intern(&region_name(bare_name)),
            inode,
            created_ns,
            created_by_pid,
            open_fds: 0,
            seen_at_attach: false,
        });
        self.held += 1;
        if inode != 0 {
            self.by_inode.insert(inode, id);
        }
        id
    }

    /// A memfd found mapped at attach (known by its inode); the one already known is reused.
    pub(crate) fn seen_at_attach(
        &mut self,
        region_name: &str,
        inode: u64,
        time_ns: u64,
        pid: u32,
        names: &mut Names,
    ) -> MemfdId {
        if let Some(id) = self.by_inode(inode) {
            return id;
        }
        let bare_name = region_name.strip_prefix("memfd:").unwrap_or(region_name);
        let id = self.create(bare_name, inode, time_ns, pid, names);
        if let Some(memfd) = self.get_mut(id) {
            memfd.seen_at_attach = true;
        }
        id
    }

    pub(crate) fn fd_opened(&mut self, id: MemfdId) {
        if let Some(memfd) = self.get_mut(id) {
            memfd.open_fds += 1;
        }
    }

    pub(crate) fn fd_closed(&mut self, id: MemfdId) {
        if let Some(memfd) = self.get_mut(id) {
            memfd.open_fds = memfd.open_fds.saturating_sub(1);
        }
    }
}

/// `memfd:NAME` from a memfd's own name (`NAME`).
pub fn region_name(bare_name: &str) -> String {
    format!("memfd:{bare_name}")
}

/// `memfd:NAME` from a path as the kernel shows it (`/memfd:NAME`, maybe ` (deleted)`), or
/// `None` when the path is not a memfd's.
pub fn region_name_from_path(path: &str) -> Option<String> {
    let bare = path.strip_prefix(MEMFD_PATH_PREFIX)?;
    Some(region_name(
        bare.strip_suffix(DELETED_SUFFIX).unwrap_or(bare),
    ))
}
