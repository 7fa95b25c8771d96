//! `--cgroup PATH`: the cgroup v2 whose processes a session traces, as the kernel identifies it.
//!
//! The kernel side compares each task's cgroup id (`bpf_get_current_cgroup_id`) with the one
//! configured here. A cgroup's id is the inode number of its directory in the v2 hierarchy
//! (kernfs node ids, since 5.5; memtrace needs 5.8 for BTF anyway), so the directory alone
//! identifies it: no walk of /proc, and every process that is started in it or joins it later
//! is traced from its first syscall there.
//!
//! Only the cgroup itself is matched, not the cgroups below it: tracing programs may call
//! `bpf_get_current_ancestor_cgroup_id` only from 5.14 on, and the kernels memtrace supports
//! start at 5.10. A container runtime puts each container's processes in a leaf cgroup of its
//! own (`docker run`, a pod's container), which is the one to give.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

/// A cgroup v2 directory and what names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The directory on this machine (e.g. `/sys/fs/cgroup/system.slice/foo.service`).
    pub directory: PathBuf,
    /// The cgroup as `/proc/PID/cgroup` names it (`/system.slice/foo.service`).
    pub name: String,
    /// The kernel's id for it: its directory's inode number.
    pub id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("--cgroup {0}: {1}")]
    Unreadable(String, io::Error),
    #[error("--cgroup {0}: not a cgroup v2 directory (give a directory under the cgroup2 mount{1}, or a path relative to it)")]
    NotCgroup2(String, String),
    #[error("--unit {0}: no cgroup of that name in the hierarchy (is the unit running?)")]
    NoUnit(String),
    #[error("--unit {0}: several cgroups have that name ({1}): give one with --cgroup")]
    AmbiguousUnit(String, String),
}

impl Cgroup {
    /// Resolves `--cgroup PATH`: a cgroup v2 directory given by its path on this machine
    /// (`/sys/fs/cgroup/foo`), or by its path in the v2 hierarchy (`/foo`, as
    /// `/proc/PID/cgroup` names it, or `foo`).
    pub fn resolve(path: &Path) -> Result<Self, CgroupError> {
        let given = path.display().to_string();
        let mount = cgroup2_mount();
        let directory = if is_cgroup2(path) {
            path.to_path_buf()
        } else {
            let relative = path.strip_prefix("/").unwrap_or(path);
            match &mount {
                Some(mount) if is_cgroup2(&mount.join(relative)) => mount.join(relative),
                _ => {
                    // Say why: the path may not exist at all, as given nor in the hierarchy.
                    let in_hierarchy = mount.as_ref().map(|m| m.join(relative));
                    if let (Err(error), false) =
                        (fs::metadata(path), in_hierarchy.is_some_and(|p| p.exists()))
                    {
                        return Err(CgroupError::Unreadable(given, error));
                    }
                    let at = mount
                        .map(|m| format!(", {}", m.display()))
                        .unwrap_or_default();
                    return Err(CgroupError::NotCgroup2(given, at));
                }
            }
        };
        let directory =
            fs::canonicalize(&directory).map_err(|e| CgroupError::Unreadable(given.clone(), e))?;
        let id = fs::metadata(&directory)
            .map_err(|e| CgroupError::Unreadable(given.clone(), e))?
            .ino();
        let name = match cgroup2_mount().and_then(|m| {
            directory
                .strip_prefix(fs::canonicalize(m).ok()?)
                .ok()
                .map(Path::to_path_buf)
        }) {
            Some(relative) => format!("/{}", relative.display()),
            None => directory.display().to_string(),
        };
        Ok(Self {
            directory,
            name,
            id,
        })
    }

    /// The cgroup of a systemd unit (`sshd.service`): systemd names a unit's cgroup after it,
    /// under its slice (`/system.slice/sshd.service`), so it is the directory of that name in
    /// the hierarchy. Found by walking the hierarchy rather than asking systemd, which a
    /// container or an initramfs may not run.
    pub fn of_unit(unit: &str) -> Result<Self, CgroupError> {
        let mount = cgroup2_mount()
            .ok_or_else(|| CgroupError::NotCgroup2(format!("--unit {unit}"), String::new()))?;
        let mut found = Vec::new();
        let mut pending = vec![(mount, 0usize)];
        while let Some((directory, depth)) = pending.pop() {
            let Ok(entries) = fs::read_dir(&directory) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    continue;
                }
                if entry.file_name() == unit {
                    found.push(entry.path());
                } else if depth < 8 {
                    pending.push((entry.path(), depth + 1));
                }
            }
        }
        match found.as_slice() {
            [only] => Self::resolve(only),
            [] => Err(CgroupError::NoUnit(unit.to_owned())),
            several => Err(CgroupError::AmbiguousUnit(
                unit.to_owned(),
                several
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// The processes in the cgroup now (`cgroup.procs`), in the order the kernel lists them.
    pub fn members(&self) -> io::Result<Vec<u32>> {
        let procs = fs::read_to_string(self.directory.join("cgroup.procs"))?;
        Ok(procs
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect())
    }

    /// Whether the cgroup still exists: the same directory, not a new one of that name.
    pub fn exists(&self) -> bool {
        fs::metadata(&self.directory).is_ok_and(|meta| meta.ino() == self.id)
    }
}

/// The paths of cgroup v2 ids, as `/proc/PID/cgroup` names them (`/system.slice/foo.service`):
/// how the cgroup id the kernel gives at fork and exec is shown. A cgroup's id is its
/// directory's inode number, so walking the hierarchy names every id there; the names are
/// cached, and the hierarchy walked again when an id not named yet appears (a cgroup made
/// since). An id that a fresh walk does not find belongs to a cgroup already removed: it is
/// remembered as such, and not looked for again.
#[derive(Debug, Default)]
pub struct CgroupNames {
    /// Where the hierarchy is mounted, once looked up (`None` inside: no cgroup v2 here).
    mount: Option<Option<PathBuf>>,
    paths: HashMap<u64, String>,
    removed: HashSet<u64>,
}

impl CgroupNames {
    /// The path of cgroup `id`, or `None` when it was removed before memtrace could name it.
    pub fn path_of(&mut self, id: u64) -> Option<&str> {
        if !self.paths.contains_key(&id) && !self.removed.contains(&id) {
            self.walk();
            if !self.paths.contains_key(&id) {
                self.removed.insert(id);
            }
        }
        self.paths.get(&id).map(String::as_str)
    }

    /// How a report names a cgroup that was removed before it could be named: by its id.
    pub fn removed_name(id: u64) -> String {
        format!("(removed cgroup, id {id})")
    }

    /// Names every cgroup in the hierarchy now. By hand: a directory walk of a dozen lines,
    /// where each directory's own inode is all that is read.
    fn walk(&mut self) {
        let Some(mount) = self.mount.get_or_insert_with(cgroup2_mount).clone() else {
            return;
        };
        let mut pending = vec![(mount, String::new())];
        while let Some((directory, path)) = pending.pop() {
            // A cgroup removed during the walk is simply not there.
            let Ok(meta) = fs::metadata(&directory) else {
                continue;
            };
            let name = if path.is_empty() {
                "/".to_owned()
            } else {
                path.clone()
            };
            self.paths.insert(meta.ino(), name);
            let Ok(entries) = fs::read_dir(&directory) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    let child = format!("{path}/{}", entry.file_name().to_string_lossy());
                    pending.push((entry.path(), child));
                }
            }
        }
    }
}

/// Whether `path` is a directory of a cgroup v2 hierarchy.
fn is_cgroup2(path: &Path) -> bool {
    path.is_dir() && statfs(path).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

/// Where this machine mounts the cgroup v2 hierarchy: `/sys/fs/cgroup` (unified), or
/// `/sys/fs/cgroup/unified` (hybrid), as the first `cgroup2` line of `/proc/self/mountinfo`
/// says. Read by hand: one field of one line, not worth a crate.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = mount.split_whitespace().nth(4)?;
        // mountinfo escapes spaces and the like as octal (`\040`); cgroup mounts have none.
        Some(PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_cgroup_resolves_by_either_name() {
        let mount = cgroup2_mount().expect("a cgroup v2 hierarchy");
        let by_dir = Cgroup::resolve(&mount).unwrap();
        assert_eq!(by_dir.name, "/");
        let by_name = Cgroup::resolve(Path::new("/")).unwrap();
        assert_eq!(by_name.id, by_dir.id);
        assert!(by_dir.exists());
        assert!(by_dir.members().is_ok());
    }

    /// The kernel's id of memtrace's own cgroup names the path `/proc/self/cgroup` shows; an
    /// id no cgroup has is a removed one, named by its id.
    #[test]
    fn cgroup_ids_are_named_by_their_paths() {
        let mount = cgroup2_mount().expect("a cgroup v2 hierarchy");
        let own = crate::procfs::cgroup_v2_path(&fs::read_to_string("/proc/self/cgroup").unwrap())
            .unwrap();
        let relative = own.trim_start_matches('/');
        let id = fs::metadata(mount.join(relative)).unwrap().ino();
        let mut names = CgroupNames::default();
        assert_eq!(names.path_of(id), Some(own.as_str()));
        assert_eq!(names.path_of(u64::MAX), None);
        assert_eq!(
            CgroupNames::removed_name(u64::MAX),
            format!("(removed cgroup, id {})", u64::MAX)
        );
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let error = Cgroup::resolve(Path::new("/usr/bin")).unwrap_err();
        assert!(matches!(error, CgroupError::NotCgroup2(..)), "{error}");
        let error = Cgroup::resolve(Path::new("/no/such/cgroup-dir")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--cgroup /no/such/cgroup-dir: "),
            "{error}"
        );
    }
}
