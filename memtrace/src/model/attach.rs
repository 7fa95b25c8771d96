//! A layout from `/proc/PID/maps` lines: how a process looked when memtrace attached, and the
//! reference the model's own layouts are compared with.

use crate::event::MapsLine;
use crate::linux_abi::{AIO_RING_PATH, SYSV_PATH_PREFIX};
use crate::model::address_space::AddressSpace;
use crate::model::backing::Backing;
use crate::model::exec::special_kind;
use crate::model::memfd::{self, MemfdRegistry, DELETED_SUFFIX};
use crate::model::names::Names;
use crate::model::region::{Creation, Origin, Perms, RegionKind};

/// What the kernel names a shared anonymous mapping in `/proc/PID/maps`.
const SHARED_ZERO: &str = "/dev/zero";

/// Builds a layout from maps lines, for comparing with a model's
/// [`AddressSpace::coverage`]. Creation records are zero.
pub fn space_from_maps(lines: &[MapsLine]) -> AddressSpace {
    let created = Creation {
        origin: Origin::Attach,
        time_ns: 0,
        syscall: None,
        pid: 0,
    };
    build_space(
        lines,
        created,
        &MemfdRegistry::default(),
        &mut Names::default(),
    )
}

pub(crate) fn build_space(
    lines: &[MapsLine],
    created: Creation,
    memfds: &MemfdRegistry,
    names: &mut Names,
) -> AddressSpace {
    let mut space = AddressSpace::new();
    for line in lines {
        let perms = Perms::parse(&line.perms);
        let backing = classify(&line.name, line.inode, perms, memfds, names);
        space.map(backing.region(line.start, line.end, perms, line.offset, created));
    }
    space
}

/// The kind of memory a maps line names, named the way the syscall path names it (no
/// ` (deleted)`, memfds as `memfd:NAME`, shared anonymous memory unnamed).
pub(crate) fn classify(
    name: &str,
    inode: u64,
    perms: Perms,
    memfds: &MemfdRegistry,
    names: &mut Names,
) -> Backing {
    let undeleted = name.strip_suffix(DELETED_SUFFIX).unwrap_or(name);
    let with_inode = |backing: Backing| Backing { inode, ..backing };
    if name.is_empty() || (perms.shared() && undeleted == SHARED_ZERO) {
        return Backing::anonymous(perms.shared());
    }
    if let Some(region_name) = memfd::region_name_from_path(name) {
        if let Some(session_memfd) = memfds
            .by_inode(inode)
            .and_then(|id| Backing::memfd(id, memfds))
        {
            return session_memfd;
        }
        return with_inode(Backing::named(RegionKind::Memfd, &region_name, names));
    }
    let kind = match name {
        "[heap]" => RegionKind::Heap,
        "[stack]" => RegionKind::Stack,
        _ if name.starts_with("[stack:") => RegionKind::Stack,
        _ if name.starts_with("[anon_shmem:") => RegionKind::SharedAnon,
        _ if name.starts_with("[anon:") => RegionKind::Anon,
        _ if name.starts_with('[') => special_kind(name),
        _ if perms.shared() && name.starts_with(SYSV_PATH_PREFIX) => RegionKind::SharedAnon,
        // Kernel memory shared with the process, not a file's pages: as io_setup names it.
        _ if perms.shared() && undeleted == AIO_RING_PATH => RegionKind::Other,
        _ if name.starts_with('/') => RegionKind::File,
        _ => RegionKind::Other,
    };
    with_inode(Backing::named(kind, undeleted, names))
}
