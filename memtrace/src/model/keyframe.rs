//! Keyframes: a live process's state as the model holds it, written in the attach layout's
//! form (the `/proc/PID/maps` lines it would show, its break, its open memfd descriptors), so
//! that a recording cut at a keyframe replays alone. The inverse of [`super::attach`]: a
//! layout written here and read back there classifies, names and sizes every region alike.

use super::{memfd, Model, Region, RegionKind};
use crate::event::{Abi, AttachEvent, AttachFd, Comm, MapsLine};
use crate::model::memfd::DELETED_SUFFIX;

/// What the kernel names a shared anonymous mapping (`/proc/PID/maps`).
const SHARED_ZERO: &str = "/dev/zero (deleted)";

/// One process's keyframe, with who it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Keyframe {
    pub pid: u32,
    pub comm: Comm,
    pub abi: Abi,
    pub container: Option<crate::event::ContainerIdentity>,
    pub layout: AttachEvent,
}

impl Model {
    /// Whether the latest process with this pid is known and has not exited.
    pub(crate) fn knows_live(&self, pid: u32) -> bool {
        self.by_pid
            .get(&pid)
            .is_some_and(|&id| self.processes[id].alive())
    }

    /// The keyframe of every live traced process, in order of first appearance.
    pub fn keyframes(&self) -> Vec<Keyframe> {
        self.live_processes()
            .filter(|view| view.process().traced())
            .map(|view| {
                let process = view.process();
                let memfd_fds = process
                    .fds
                    .entries()
                    .filter_map(|(fd, memfd, cloexec)| {
                        let inode = self.memfds.get(memfd)?.inode;
                        (inode != 0).then_some(AttachFd { fd, inode, cloexec })
                    })
                    .collect();
                let start_brk = process.brk.start().unwrap_or(0);
                Keyframe {
                    pid: process.pid,
                    comm: process.comm,
                    abi: process.abi,
                    container: process.container().cloned(),
                    layout: AttachEvent {
                        regions: view.layout().iter().map(maps_line).collect(),
                        start_brk,
                        brk: process.brk.current().unwrap_or(start_brk),
                        ppid: process.ppid,
                        exe: process.exe.to_string(),
                        memfd_fds,
                    },
                }
            })
            .collect()
    }
}

/// The line `/proc/PID/maps` would show for a region: the name [`super::attach::classify`]
/// reads back as the same kind and name.
fn maps_line(region: &Region) -> MapsLine {
    let name = match (region.kind, region.name.as_deref()) {
        (RegionKind::SharedAnon, None) => SHARED_ZERO.to_owned(),
        (RegionKind::Memfd, Some(name)) => match name.strip_prefix("memfd:") {
            Some(bare) => format!("{}{bare}{DELETED_SUFFIX}", memfd::MEMFD_PATH_PREFIX),
            None => name.to_owned(),
        },
        (_, name) => name.unwrap_or("").to_owned(),
    };
    MapsLine {
        start: region.start,
        end: region.end,
        perms: region.perms.to_string(),
        offset: region.offset,
        inode: region.inode,
        name,
    }
}
