//! Opening the file behind a mapping the way its process sees it.
//!
//! A process in a container or a chroot names its files from its own root: its
//! `/usr/lib/x86_64-linux-gnu/libc.so.6` is not the host's file of that name, which may be
//! another build or absent. Unwinding with the host's CFI or naming frames with its symbols
//! would then be silently wrong. So a live process's module is read as the process maps it:
//! the very mapped object (`/proc/PID/map_files/START-END`), or else its path under the
//! process's root (`/proc/PID/root/PATH`), each checked against the inode the kernel reported
//! for the mapping. Once the process is gone (a short-lived one often is before its stack
//! samples are read), its root as the host reaches it (`/proc/PID/root` read while it ran: a
//! chroot's directory, `/` on the host) joined with the path, still inode-checked. Anything
//! else is "cannot be read", never another file. (A container whose root the host cannot
//! reach shows `/` as its root: for its processes gone early, the inode is the only check.)

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::file_access::Links;

use super::{elf::ElfFile, MappedFile};

/// Whose view a mapping's file is read through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FileView {
    /// memtrace's own: the path as it is on this machine (replays, tests).
    #[default]
    Host,
    /// A live traced process's. `root`: its root directory as this machine reaches it (`/`
    /// for a process on the host, the directory of a chroot), for when the process is gone
    /// and its `/proc` entries with it; `None` when never known, and then the host's path is
    /// tried. Either way inode-checked.
    Process { pid: u32, root: Option<Arc<str>> },
}

/// Where the file behind `mapping` can be read, best first, with whether a final link may be
/// followed (`map_files` entries are links to the mapped file).
fn candidates(mapping: &MappedFile) -> Vec<(PathBuf, Links)> {
    match &mapping.view {
        FileView::Host => vec![(PathBuf::from(&mapping.path), Links::Refuse)],
        FileView::Process { pid, root } => {
            let relative = mapping.path.trim_start_matches('/');
            vec![
                (
                    PathBuf::from(format!(
                        "/proc/{pid}/map_files/{:x}-{:x}",
                        mapping.start, mapping.end
                    )),
                    Links::Follow,
                ),
                (
                    PathBuf::from(format!("/proc/{pid}/root/{relative}")),
                    Links::Refuse,
                ),
                (
                    Path::new(root.as_deref().unwrap_or("/")).join(relative),
                    Links::Refuse,
                ),
            ]
        }
    }
}

/// Opens the file mapped by `mapping`: the first candidate that opens and, when the mapping's
/// inode is known, has that inode.
pub(crate) fn open(mapping: &MappedFile) -> io::Result<ElfFile> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no way to read it");
    for (path, links) in candidates(mapping) {
        match ElfFile::open(&path, links) {
            Ok(file) if mapping.inode == 0 || file.identity.inode() == mapping.inode => {
                return Ok(file)
            }
            Ok(file) => {
                last = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is inode {}, the mapping's is {}",
                        path.display(),
                        file.identity.inode(),
                        mapping.inode
                    ),
                );
            }
            // A file found with the wrong inode says more than a later candidate's absence.
            Err(error) if last.kind() != io::ErrorKind::InvalidData => last = error,
            Err(_) => {}
        }
    }
    Err(last)
}

/// The identity of the file `open` would read, without reading it (a `stat`), to find it in
/// a cache; `None` when no candidate is there with the right inode.
pub(crate) fn identity(mapping: &MappedFile) -> Option<super::elf::FileIdentity> {
    candidates(mapping).into_iter().find_map(|(path, links)| {
        let identity = super::elf::FileIdentity::at(&path, links)?;
        (mapping.inode == 0 || identity.inode() == mapping.inode).then_some(identity)
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn mapping_of_own(path: &str, inode: u64) -> MappedFile {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let region = maps
            .lines()
            .filter_map(crate::procfs::parse_maps_line)
            .find(|region| region.name == path)
            .expect("this test's executable is mapped");
        MappedFile {
            start: region.start,
            end: region.end,
            file_offset: region.offset,
            path: region.name,
            executable: false,
            inode,
            view: FileView::Process {
                pid: std::process::id(),
                root: Some(Arc::from("/nonexistent")),
            },
        }
    }

    /// The file is read as the process maps it, and only if it has the mapping's inode.
    #[test]
    fn the_mapped_file_is_read_and_another_refused() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let inode = std::fs::metadata(exe).unwrap().ino();
        let file = open(&mapping_of_own(exe, inode)).unwrap();
        assert_eq!(file.identity.inode(), inode);
        assert!(identity(&mapping_of_own(exe, inode)).is_some());
        let error = open(&mapping_of_own(exe, inode + 1)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(identity(&mapping_of_own(exe, inode + 1)).is_none());
    }
}
