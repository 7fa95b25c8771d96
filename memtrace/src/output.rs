//! Every file memtrace writes (recordings, reports, pictures, the agent's captures) goes
//! through here, because memtrace runs as root and the paths it is given often lie in
//! directories other users can write to (`/tmp`).
//!
//! The policy, in the spirit of systemd's atomic writes and OpenSSH's `secure_filename`:
//!
//! - **The directory is resolved once**, when the output is checked ([`check`],
//!   [`Directory::open`]), and held as a descriptor; every later step (creating, renaming,
//!   listing, removing) is an `*at` call on that descriptor, so a directory moved or replaced
//!   by a link after the check cannot redirect anything. The report lands in the directory
//!   that was checked, wherever it has been moved since.
//! - **Links in the directory part** are followed only when no one else could have planted
//!   them: a link owned by root or by you (under sudo, `SUDO_UID`), or one in a directory that
//!   only root or you can write. A link another user made in a directory others can write to
//!   (`/tmp/d -> /root/...`) is refused at the check: following it would let them choose
//!   where root writes.
//! - The data always goes into a **new inode** created by memtrace: a hidden file next to the
//!   target, opened with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` and mode 0600, then renamed over
//!   the target. `rename` replaces the directory entry and never follows a symbolic link, so a
//!   link or a file planted at the target after the check is replaced, not written through,
//!   and the report is never lost for it; no one holds an earlier descriptor to the new inode.
//! - At the check, an existing target is **refused** with one line saying why when it is a
//!   symbolic link, a directory or anything else that is not a regular file (except a
//!   character device such as `/dev/null`, which is written as is: it holds no data to
//!   protect), or a regular file owned by someone other than root or the invoking user:
//!   replacing another user's file is not memtrace's call to make. A directory on a pseudo
//!   file system (`/proc`, `/sys`), where no file can be created, is refused too.
//! - Two outputs of one run naming the same file (through different paths, links or `..`) are
//!   refused up front ([`refuse_same_file`]): one would silently overwrite the other.
//! - **Temporaries of a killed run** (`.memtrace-PID-START-RANDOM.tmp`, and `.tmp.d` for staged
//!   directories) are removed the next time memtrace checks an output in that directory: those
//!   it owns whose process (told by pid and start time) is gone.
//!
//! Reports are written whole, synced, then renamed ([`Output::write_atomic`]): a reader sees
//! the old file or the new one. A recording streams for the whole session and must survive
//! `kill -9`, so [`Output::create_streaming`] renames the new, still empty file into place at
//! once and hands it back for appending.
//!
//! # Directories of outputs (the agent's captures)
//!
//! A caller that keeps a directory of outputs over a long time uses the same descriptor for
//! everything:
//!
//! 1. [`Directory::open`] opens and checks the directory once (links as above).
//! 2. [`Directory::stage`] creates a subdirectory under a temporary name (mode 0700);
//!    [`Staged::write_file`] / [`Staged::write_file_with`] write files into it through its own
//!    descriptor (0600, synced), and [`Staged::commit`] syncs it, renames it to its final name
//!    (never replacing an existing entry) and syncs the parent. A crash leaves the
//!    subdirectory complete under its final name, or absent (a temporary, removed later).
//!    Dropping a [`Staged`] without committing removes it.
//! 3. [`Directory::entries`] lists what is there (temporaries left out) and
//!    [`Directory::remove`] removes an entry, a whole subdirectory included, without following
//!    any link: rotation.
//! 4. [`Directory::remove_stale_temporaries`] cleans what a killed run left.

use std::{
    collections::VecDeque,
    ffi::{OsStr, OsString},
    fmt,
    fs::File,
    io::Write,
    os::{
        fd::{AsFd, OwnedFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::PermissionsExt,
        },
    },
    path::{Component, Path, PathBuf},
    sync::{Arc, OnceLock},
};

use nix::{
    errno::Errno,
    fcntl::{fcntl, openat, readlinkat, renameat, AtFlags, FcntlArg, OFlag},
    sys::{
        stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag},
        statfs::fstatfs,
    },
    unistd::{unlinkat, UnlinkatFlags},
};

/// Output files hold command lines, paths and address layouts (which defeat ASLR): owner-only.
pub const OUTPUT_MODE: u32 = 0o600;
/// Staged directories (the agent's captures): owner-only too.
pub const DIRECTORY_MODE: u32 = 0o700;

/// What every temporary name starts with.
const TEMPORARY_PREFIX: &str = ".memtrace-";
/// A temporary file, renamed over its target when complete.
const TEMPORARY_FILE: &str = ".tmp";
/// A staged directory, renamed to its final name when complete.
const TEMPORARY_DIRECTORY: &str = ".tmp.d";
/// The most symbolic links followed in a directory path, as the kernel's own limit.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write {}: it is a symbolic link", path.display())]
    Symlink { path: PathBuf },
    #[error("refusing to write {}: it is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("refusing to write {}: it belongs to uid {owner}, neither root nor you (uid {you}); remove it or choose another name", path.display())]
    ForeignOwner { path: PathBuf, owner: u32, you: u32 },
    #[error("refusing to write {}: {} is a symbolic link of uid {owner} in a directory others can write to, so they choose where it leads; name the directory it points to", path.display(), link.display())]
    UntrustedLink {
        path: PathBuf,
        link: PathBuf,
        owner: u32,
    },
    #[error("refusing to write {}: its directory is on {file_system}, where no file can be created", path.display())]
    PseudoFileSystem {
        path: PathBuf,
        file_system: &'static str,
    },
    #[error("{first_option} and {second_option} name the same file ({}); give them different files", first.display())]
    SameFile {
        first_option: String,
        first: PathBuf,
        second_option: String,
    },
    #[error("cannot write {}: {}", path.display(), describe_io(error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// An I/O error as a user reads it: the directory-shaped errors of a rename say what they
/// mean here.
fn describe_io(error: &std::io::Error) -> String {
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EISDIR | Errno::ENOTEMPTY) => {
            format!("{error} (a directory is at its name now)")
        }
        _ => error.to_string(),
    }
}

fn io_error(path: &Path) -> impl Fn(Errno) -> OutputError + '_ {
    move |errno| OutputError::Io {
        path: path.to_owned(),
        error: errno.into(),
    }
}

/// What was at the target's name when it was checked.
#[derive(Clone, Copy, Debug)]
enum Existing {
    Nothing,
    /// A regular file that may be replaced; its identity, to tell two paths to it apart.
    Regular {
        device: u64,
        inode: u64,
    },
    /// Written in place (no rename): `/dev/null`, a terminal.
    CharDevice {
        device: u64,
        inode: u64,
    },
}

/// A directory opened once: everything done in it goes through this descriptor. Cheap to
/// clone (the descriptor is shared).
#[derive(Clone)]
pub struct Directory {
    fd: Arc<OwnedFd>,
    /// As the user named it, for messages only: it is never looked up again.
    path: PathBuf,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("path", &self.path)
            .finish()
    }
}

/// An entry of a [`Directory`], as [`Directory::entries`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    /// A directory (never a link to one: links are listed as [`EntryKind::Other`]).
    pub kind: EntryKind,
    /// The size of a regular file; 0 for anything else.
    pub bytes: u64,
    /// Last modification, nanoseconds since the epoch: the order of rotation.
    pub modified_ns: i128,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Other,
}

impl Directory {
    /// Opens `path` as a directory, following only the links no one else could have planted
    /// (see the module's documentation), and checks that files can be created there.
    pub fn open(path: &Path) -> Result<Self, OutputError> {
        Self::open_for(path, path)
    }

    /// [`open`](Self::open) on behalf of `target`, which errors name.
    fn open_for(path: &Path, target: &Path) -> Result<Self, OutputError> {
        let fd = resolve_directory(path, target)?;
        if let Some(file_system) = pseudo_file_system(&fd) {
            return Err(OutputError::PseudoFileSystem {
                path: target.to_owned(),
                file_system,
            });
        }
        Ok(Self {
            fd: Arc::new(fd),
            path: path.to_owned(),
        })
    }

    /// The path the directory was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the entry `name` of this directory as an output (see [`check`]); `path` is how
    /// messages name it.
    fn output(&self, name: &OsStr, path: &Path) -> Result<Output, OutputError> {
        let existing = match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Existing::Nothing,
            Err(errno) => return Err(io_error(path)(errno)),
            Ok(stat) => judge(path, &stat)?,
        };
        Ok(Output {
            path: path.to_owned(),
            dir: self.clone(),
            name: name.to_owned(),
            existing,
        })
    }

    /// The entry `name` of this directory as an output, checked as [`check`] does.
    pub fn file(&self, name: &OsStr) -> Result<Output, OutputError> {
        self.output(name, &self.path.join(name))
    }

    /// A subdirectory, opened without following a link (a capture directory to read back
    /// or to sum up).
    pub fn subdirectory(&self, name: &OsStr) -> Result<Directory, OutputError> {
        let path = self.path.join(name);
        let fd = openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error(&path))?;
        Ok(Directory {
            fd: Arc::new(fd),
            path,
        })
    }

    /// A new subdirectory under a temporary name, to be filled and then
    /// [committed](Staged::commit) under its final name.
    pub fn stage(&self) -> Result<Staged, OutputError> {
        let mut attempts = 0;
        let temporary = loop {
            let temporary = temporary_name(TEMPORARY_DIRECTORY);
            match mkdirat(
                self.fd.as_fd(),
                temporary.as_os_str(),
                Mode::from_bits_truncate(DIRECTORY_MODE),
            ) {
                Ok(()) => break temporary,
                Err(Errno::EEXIST) if attempts < 100 => attempts += 1,
                Err(errno) => return Err(io_error(&self.path)(errno)),
            }
        };
        let staged = self.subdirectory(&temporary).and_then(|dir| {
            // The umask may have taken bits away: exactly 0700.
            nix::sys::stat::fchmod(dir.fd.as_fd(), Mode::from_bits_truncate(DIRECTORY_MODE))
                .map_err(io_error(&dir.path))?;
            Ok(dir)
        });
        match staged {
            Ok(dir) => Ok(Staged {
                parent: self.clone(),
                dir,
                temporary,
                committed: false,
            }),
            Err(error) => {
                let _ = remove_tree(self.fd.as_fd(), &temporary, 0);
                Err(error)
            }
        }
    }

    /// The entries of the directory, in no particular order; memtrace's temporaries are left
    /// out.
    pub fn entries(&self) -> Result<Vec<Entry>, OutputError> {
        let mut listing = nix::dir::Dir::openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error(&self.path))?;
        let mut entries = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(io_error(&self.path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            if name == "." || name == ".." || temporary_kind(&name).is_some() {
                continue;
            }
            // Gone since it was listed: not an entry any more.
            let Ok(stat) = fstatat(
                self.fd.as_fd(),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            let kind = match file_kind(&stat) {
                SFlag::S_IFREG => EntryKind::File,
                SFlag::S_IFDIR => EntryKind::Directory,
                _ => EntryKind::Other,
            };
            entries.push(Entry {
                name,
                kind,
                bytes: if kind == EntryKind::File {
                    stat.st_size as u64
                } else {
                    0
                },
                modified_ns: i128::from(stat.st_mtime) * 1_000_000_000
                    + i128::from(stat.st_mtime_nsec),
            });
        }
        Ok(entries)
    }

    /// Removes the entry `name`: a file, a link (not what it points to), or a directory with
    /// everything in it, each step through a descriptor and never following a link.
    pub fn remove(&self, name: &OsStr) -> Result<(), OutputError> {
        remove_tree(self.fd.as_fd(), name, 0).map_err(io_error(&self.path.join(name)))
    }

    /// Removes the temporaries of killed runs: entries named as memtrace names its
    /// temporaries, owned by memtrace's user, whose process is gone. Returns how many.
    pub fn remove_stale_temporaries(&self) -> usize {
        let Ok(mut listing) = nix::dir::Dir::openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return 0;
        };
        let stale: Vec<(OsString, TemporaryKind)> = listing
            .iter()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
                let kind = temporary_kind(&name)?;
                temporary_is_stale(&name).then_some((name, kind))
            })
            .collect();
        let me = nix::unistd::geteuid().as_raw();
        let mut removed = 0;
        for (name, kind) in stale {
            let Ok(stat) = fstatat(
                self.fd.as_fd(),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            // Only what memtrace made: its user's, of the kind the name says, and (a file) not
            // linked elsewhere.
            let ours = stat.st_uid == me
                && match kind {
                    TemporaryKind::File => file_kind(&stat) == SFlag::S_IFREG && stat.st_nlink == 1,
                    TemporaryKind::Directory => file_kind(&stat) == SFlag::S_IFDIR,
                };
            if ours && remove_tree(self.fd.as_fd(), &name, 0).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Makes the directory's entries (a rename into it) survive a crash. Not every file
    /// system can sync a directory, and the data is already safe, so a failure is ignored.
    pub fn sync(&self) {
        let _ = nix::unistd::fsync(self.fd.as_fd());
    }

    /// The directory's identity, to tell two paths to it apart.
    fn identity(&self) -> Option<(u64, u64)> {
        fstat(self.fd.as_fd())
            .ok()
            .map(|stat| (stat.st_dev, stat.st_ino))
    }

    /// A new, empty, owner-only file in this directory; returns it and its name.
    fn create_temporary(&self, path: &Path) -> Result<(File, OsString), OutputError> {
        let mut attempts = 0;
        loop {
            let name = temporary_name(TEMPORARY_FILE);
            match create_file(self.fd.as_fd(), &name) {
                Ok(file) => return Ok((file, name)),
                Err(Errno::EEXIST) if attempts < 100 => attempts += 1,
                Err(errno) => return Err(io_error(path)(errno)),
            }
        }
    }

    fn remove_file(&self, name: &OsStr) {
        let _ = unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir);
    }
}

/// Creates `name` in `dir` with `O_EXCL|O_NOFOLLOW` and mode exactly 0600.
fn create_file(dir: impl AsFd, name: &OsStr) -> Result<File, Errno> {
    let fd = openat(
        dir.as_fd(),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(OUTPUT_MODE),
    )?;
    let file = File::from(fd);
    // The umask may have taken bits away; the mode is exactly 0600 either way.
    if let Err(error) = file.set_permissions(PermissionsExt::from_mode(OUTPUT_MODE)) {
        let _ = unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir);
        return Err(error.raw_os_error().map_or(Errno::EIO, Errno::from_raw));
    }
    Ok(file)
}

/// A subdirectory being filled under a temporary name (see [`Directory::stage`]). Dropped
/// without [`commit`](Self::commit), it is removed.
pub struct Staged {
    parent: Directory,
    dir: Directory,
    temporary: OsString,
    committed: bool,
}

impl Staged {
    /// The staged directory itself, for reading back what was written.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// Writes `contents` as a new file `name` in the staged directory (0600, synced).
    pub fn write_file(&self, name: &OsStr, contents: &[u8]) -> Result<(), OutputError> {
        self.write_file_with(name, |file| file.write_all(contents))
    }

    /// [`write_file`](Self::write_file) for contents made as they are written.
    pub fn write_file_with(
        &self,
        name: &OsStr,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), OutputError> {
        let path = self.dir.path.join(name);
        let mut file = create_file(self.dir.fd.as_fd(), name).map_err(io_error(&path))?;
        if let Err(error) = write(&mut file).and_then(|()| file.sync_all()) {
            self.dir.remove_file(name);
            return Err(OutputError::Io { path, error });
        }
        Ok(())
    }

    /// Syncs the staged directory, renames it to `name` in its parent (refusing an entry
    /// already there) and syncs the parent: after this returns, a crash leaves the directory
    /// complete under `name`.
    pub fn commit(mut self, name: &OsStr) -> Result<(), OutputError> {
        let path = self.parent.path.join(name);
        nix::unistd::fsync(self.dir.fd.as_fd()).map_err(io_error(&path))?;
        // renameat2's RENAME_NOREPLACE would make this one call, but nix offers it only with
        // glibc, and the static build links musl: the name is looked at first. A rename over
        // a file or a directory with anything in it fails anyway; only an empty directory
        // made at the name in between could be replaced, and that loses nothing.
        match fstatat(self.parent.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {}
            Ok(_) => return Err(io_error(&path)(Errno::EEXIST)),
            Err(errno) => return Err(io_error(&path)(errno)),
        }
        renameat(
            self.parent.fd.as_fd(),
            self.temporary.as_os_str(),
            self.parent.fd.as_fd(),
            name,
        )
        .map_err(io_error(&path))?;
        self.committed = true;
        self.parent.sync();
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(self.parent.fd.as_fd(), &self.temporary, 0);
        }
    }
}

/// An output path, checked: its directory resolved once and held, the name in it judged.
/// Writing it later never looks the directory up again. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Output {
    path: PathBuf,
    dir: Directory,
    name: OsString,
    existing: Existing,
}

/// Checks that `path` may be written, without writing it, and keeps its directory open:
/// the session refuses a bad output before it starts tracing rather than after, and writes
/// through what was checked. Temporaries a killed run left in that directory are removed.
pub fn check(path: &Path) -> Result<Output, OutputError> {
    let not_regular = |kind| OutputError::NotRegular {
        path: path.to_owned(),
        kind,
    };
    // `a/b/..` and `/` name directories, whatever `file_name` would make of them.
    let name = match path.file_name() {
        Some(name) if !path.as_os_str().as_bytes().ends_with(b"/") => name.to_owned(),
        _ => return Err(not_regular("a directory")),
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = Directory::open_for(parent, path)?;
    dir.remove_stale_temporaries();
    dir.output(&name, path)
}

impl Output {
    /// The path as the user gave it (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` atomically: into a new owner-only file, synced, then renamed over
    /// the name. A reader (or a crash) sees the old file or the new one, never a mix.
    pub fn write_atomic(&self, contents: &[u8]) -> Result<(), OutputError> {
        self.write_atomic_with(|file| file.write_all(contents))
    }

    /// [`write_atomic`](Self::write_atomic) for contents made as they are written (a report
    /// too large to hold as one string): `write` gets the new file, or the device the name
    /// was checked to be.
    pub fn write_atomic_with(
        &self,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), OutputError> {
        if let Some(mut device) = self.reopen_device()? {
            return write(&mut device).map_err(|error| OutputError::Io {
                path: self.path.clone(),
                error,
            });
        }
        let (mut file, temporary) = self.dir.create_temporary(&self.path)?;
        if let Err(error) = write(&mut file).and_then(|()| file.sync_all()) {
            self.dir.remove_file(&temporary);
            return Err(OutputError::Io {
                path: self.path.clone(),
                error,
            });
        }
        self.rename_into_place(&temporary)
    }

    /// Creates the name as a new, empty, owner-only file for appending over a long time: it
    /// is renamed into place right after its exclusive creation, so whatever has been written
    /// is under the final name when the process is killed.
    pub fn create_streaming(&self) -> Result<File, OutputError> {
        if let Some(device) = self.reopen_device()? {
            return Ok(device);
        }
        let (file, temporary) = self.dir.create_temporary(&self.path)?;
        self.rename_into_place(&temporary)?;
        Ok(file)
    }

    /// The identity two paths share when they name the same file: the directory entry, and
    /// the inode when there is one (hard links).
    fn same_as(&self, other: &Output) -> bool {
        let same_entry = self.name == other.name
            && self.dir.identity().is_some()
            && self.dir.identity() == other.dir.identity();
        let inode = self.inode();
        same_entry || (inode.is_some() && inode == other.inode())
    }

    fn inode(&self) -> Option<(u64, u64)> {
        match self.existing {
            Existing::Regular { device, inode } | Existing::CharDevice { device, inode } => {
                Some((device, inode))
            }
            Existing::Nothing => None,
        }
    }

    /// The device the name was checked to be, opened again if it still is that device; `None`
    /// when it was not one, or has been replaced since (the name is then written as any
    /// other: a new file renamed over it).
    fn reopen_device(&self) -> Result<Option<File>, OutputError> {
        let Existing::CharDevice { device, inode } = self.existing else {
            return Ok(None);
        };
        let same = |stat: &FileStat| {
            file_kind(stat) == SFlag::S_IFCHR && (stat.st_dev, stat.st_ino) == (device, inode)
        };
        match fstatat(
            self.dir.fd.as_fd(),
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) if same(&stat) => {}
            _ => return Ok(None),
        }
        // Non-blocking, so that whatever is at the name by now cannot hold the open; checked
        // again on the descriptor, then made blocking for the writes.
        let fd = openat(
            self.dir.fd.as_fd(),
            self.name.as_os_str(),
            OFlag::O_WRONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NOCTTY
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error(&self.path))?;
        match fstat(fd.as_fd()) {
            Ok(stat) if same(&stat) => {}
            _ => return Ok(None),
        }
        let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io_error(&self.path))?;
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io_error(&self.path))?;
        Ok(Some(File::from(fd)))
    }

    /// Renames the temporary over the name, whatever is there now: a file or a link planted
    /// since the check is replaced (never written through). Only a directory made at the name
    /// since then stops it.
    fn rename_into_place(&self, temporary: &OsStr) -> Result<(), OutputError> {
        renameat(
            self.dir.fd.as_fd(),
            temporary,
            self.dir.fd.as_fd(),
            self.name.as_os_str(),
        )
        .map_err(|errno| {
            self.dir.remove_file(temporary);
            io_error(&self.path)(errno)
        })?;
        // The rename itself must survive a crash too.
        self.dir.sync();
        Ok(())
    }
}

/// Refuses two outputs that name the same file. `outputs` are (option, output) pairs, e.g.
/// `("--record", …)`, `("-o", …)`.
pub fn refuse_same_file(outputs: &[(&str, &Output)]) -> Result<(), OutputError> {
    for (i, (first_option, first)) in outputs.iter().enumerate() {
        for (second_option, second) in &outputs[i + 1..] {
            if first.same_as(second) {
                return Err(OutputError::SameFile {
                    first_option: first_option.to_string(),
                    first: first.path.clone(),
                    second_option: second_option.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Refuses an output that names the file a run reads (`memtrace replay rec.mtr -o rec.mtr`
/// would replace the recording with its report).
pub fn refuse_input(output: (&str, &Output), input: (&str, &Path)) -> Result<(), OutputError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(read) = std::fs::metadata(input.1) else {
        return Ok(());
    };
    match output.1.existing {
        Existing::Regular { device, inode } if (device, inode) == (read.dev(), read.ino()) => {
            Err(OutputError::SameFile {
                first_option: output.0.to_string(),
                first: output.1.path.clone(),
                second_option: input.0.to_string(),
            })
        }
        _ => Ok(()),
    }
}

fn file_kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// Applies the policy to what exists at the target when it is checked.
fn judge(path: &Path, stat: &FileStat) -> Result<Existing, OutputError> {
    let not_regular = |kind| {
        Err(OutputError::NotRegular {
            path: path.to_owned(),
            kind,
        })
    };
    match file_kind(stat) {
        SFlag::S_IFLNK => Err(OutputError::Symlink {
            path: path.to_owned(),
        }),
        SFlag::S_IFCHR => Ok(Existing::CharDevice {
            device: stat.st_dev,
            inode: stat.st_ino,
        }),
        SFlag::S_IFDIR => not_regular("a directory"),
        SFlag::S_IFIFO => not_regular("a FIFO"),
        SFlag::S_IFSOCK => not_regular("a socket"),
        SFlag::S_IFBLK => not_regular("a block device"),
        SFlag::S_IFREG => {
            let you = invoking_uid();
            if stat.st_uid != 0 && stat.st_uid != you {
                return Err(OutputError::ForeignOwner {
                    path: path.to_owned(),
                    owner: stat.st_uid,
                    you,
                });
            }
            Ok(Existing::Regular {
                device: stat.st_dev,
                inode: stat.st_ino,
            })
        }
        _ => not_regular("of an unknown type"),
    }
}

/// Who asked for the output: under sudo the user who ran sudo (whose files memtrace may
/// replace), else memtrace's own real user.
pub fn invoking_uid() -> u32 {
    let real = nix::unistd::getuid();
    if real.is_root() {
        if let Some(uid) = std::env::var("SUDO_UID")
            .ok()
            .and_then(|uid| uid.parse().ok())
        {
            return uid;
        }
    }
    real.as_raw()
}

/// Opens the directory `path` names, one component at a time, without letting the kernel
/// follow any link: each link met is judged ([`link_is_trusted`]) and followed by hand. The
/// kernel's own `fs.protected_symlinks` would refuse some of these links, but not all (a link
/// in another user's directory that is not sticky), and it may be off. Hand-written because
/// no resolver in the standard library or nix lets the caller judge each link (openat2's
/// RESOLVE_NO_SYMLINKS refuses them all, which would refuse `/var/run` too).
fn resolve_directory(path: &Path, target: &Path) -> Result<OwnedFd, OutputError> {
    let fail = io_error(target);
    let open_dir = |at: &dyn AsFd, name: &OsStr| {
        openat(
            at.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let root = || {
        openat(
            nix::fcntl::AT_FDCWD,
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let mut current = if path.is_absolute() {
        root()
    } else {
        openat(
            nix::fcntl::AT_FDCWD,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }
    .map_err(&fail)?;
    let mut pending: VecDeque<OsString> = components(path).collect();
    // Where the walk is, as the user would name it: for messages.
    let mut walked = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    };
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            current = open_dir(&current, &name).map_err(&fail)?;
            walked.push("..");
            continue;
        }
        let fd = openat(
            current.as_fd(),
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(&fail)?;
        let stat = fstat(fd.as_fd()).map_err(&fail)?;
        walked.push(&name);
        match file_kind(&stat) {
            SFlag::S_IFDIR => current = fd,
            SFlag::S_IFLNK => {
                let directory = fstat(current.as_fd()).map_err(&fail)?;
                if !link_is_trusted(&directory, &stat) {
                    return Err(OutputError::UntrustedLink {
                        path: target.to_owned(),
                        link: walked,
                        owner: stat.st_uid,
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail(Errno::ELOOP));
                }
                // An O_PATH descriptor of the link itself: reads the link that was judged.
                let destination = PathBuf::from(readlinkat(fd.as_fd(), "").map_err(&fail)?);
                if destination.is_absolute() {
                    current = root().map_err(&fail)?;
                }
                for component in components(&destination).rev() {
                    pending.push_front(component);
                }
            }
            _ => return Err(fail(Errno::ENOTDIR)),
        }
    }
    // A descriptor that can be synced and listed, of the directory the walk ended in.
    openat(
        current.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(&fail)
}

/// The names a walk goes through (`.` and the root left out: the walk starts at the root or
/// the working directory).
fn components(path: &Path) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(name.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Whether a link found in `directory` may be followed: no one but root and you could have
/// put it there. A link owned by root or you, or any link in a directory that only root or
/// you own and can write (no group or other write bit).
fn link_is_trusted(directory: &FileStat, link: &FileStat) -> bool {
    let trusted =
        |uid: u32| uid == 0 || uid == invoking_uid() || uid == nix::unistd::geteuid().as_raw();
    trusted(link.st_uid) || (trusted(directory.st_uid) && directory.st_mode & 0o022 == 0)
}

/// The name of a pseudo file system no output can be created on, if `dir` is on one.
fn pseudo_file_system(dir: &OwnedFd) -> Option<&'static str> {
    use nix::sys::statfs;
    let kind = fstatfs(dir.as_fd()).ok()?.filesystem_type();
    [
        (statfs::PROC_SUPER_MAGIC, "/proc"),
        (statfs::SYSFS_MAGIC, "sysfs"),
        (statfs::CGROUP2_SUPER_MAGIC, "cgroupfs"),
        (statfs::CGROUP_SUPER_MAGIC, "cgroupfs"),
        (statfs::DEBUGFS_MAGIC, "debugfs"),
        (statfs::TRACEFS_MAGIC, "tracefs"),
        (statfs::SECURITYFS_MAGIC, "securityfs"),
        (statfs::BPF_FS_MAGIC, "bpffs"),
    ]
    .into_iter()
    .find(|(magic, _)| *magic == kind)
    .map(|(_, name)| name)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TemporaryKind {
    File,
    Directory,
}

/// This process's id and start time (clock ticks after boot, from /proc/self/stat): a
/// temporary is this process's if its name carries both; a pid alone could be reused.
fn me() -> (u32, u64) {
    static ME: OnceLock<(u32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        (pid, start_time(pid).unwrap_or(0))
    })
}

/// A process's start time, field 22 of /proc/PID/stat; `None` when it is gone.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold anything, spaces and parentheses included).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    fields.get(19)?.parse().ok()
}

/// `.memtrace-PID-START-RANDOM.tmp` (or `.tmp.d`): whose it is, and unpredictable enough that
/// a name planted in advance is unlikely (and O_EXCL makes a collision an error, never a write
/// into someone else's file).
fn temporary_name(suffix: &str) -> OsString {
    let (pid, start) = me();
    let mut random = [0u8; 4];
    // Without randomness the name is still exclusive; only a planted name becomes likelier.
    let _ = getrandom::fill(&mut random);
    OsString::from(format!(
        "{TEMPORARY_PREFIX}{pid}-{start}-{:08x}{suffix}",
        u32::from_le_bytes(random)
    ))
}

/// Whether `name` is named as memtrace's temporaries are, and which kind.
fn temporary_kind(name: &OsStr) -> Option<TemporaryKind> {
    let name = name.to_str()?.strip_prefix(TEMPORARY_PREFIX)?;
    if name.ends_with(TEMPORARY_DIRECTORY) {
        Some(TemporaryKind::Directory)
    } else if name.ends_with(TEMPORARY_FILE) {
        Some(TemporaryKind::File)
    } else {
        None
    }
}

/// Whether the process that made the temporary `name` is gone. Names of this format carry a
/// pid and a start time; older memtraces wrote `.memtrace-PID-N-NANOS.tmp`, whose pid alone
/// is checked.
fn temporary_is_stale(name: &OsStr) -> bool {
    let Some(fields) = name
        .to_str()
        .and_then(|name| name.strip_prefix(TEMPORARY_PREFIX))
        .and_then(|name| {
            name.strip_suffix(TEMPORARY_DIRECTORY)
                .or_else(|| name.strip_suffix(TEMPORARY_FILE))
        })
    else {
        return false;
    };
    let fields: Vec<&str> = fields.split('-').collect();
    let Some(pid) = fields.first().and_then(|pid| pid.parse::<u32>().ok()) else {
        return false;
    };
    let current_format = fields.len() == 3 && fields[2].len() == 8;
    match (
        start_time(pid),
        fields.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) {
        (None, _) => true,
        (Some(running), Some(start)) if current_format => running != start,
        _ => false,
    }
}

/// Removes `name` in `dir`: unlinks a file or link; empties a directory through its own
/// descriptor, then removes it. Depth-limited, so a crafted tree cannot exhaust the stack.
fn remove_tree(dir: impl AsFd, name: &OsStr, depth: usize) -> Result<(), Errno> {
    match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) => {}
        other => return other,
    }
    if depth >= 64 {
        return Err(Errno::ELOOP);
    }
    let sub = openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<OsString> = {
        let mut listing = nix::dir::Dir::openat(
            sub.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        listing
            .iter()
            .filter_map(Result::ok)
            .map(|entry| OsString::from_vec(entry.file_name().to_bytes().to_vec()))
            .filter(|name| name != "." && name != "..")
            .collect()
    };
    for entry in names {
        remove_tree(sub.as_fd(), &entry, depth + 1)?;
    }
    unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::fs::{symlink, MetadataExt},
    };

    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("memtrace-output-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, PermissionsExt::from_mode(0o644)).unwrap();
        let link = dir.join("out");
        symlink(&victim, &link).unwrap();
        let error = check(&link).unwrap_err();
        assert!(matches!(error, OutputError::Symlink { .. }), "{error}");
        assert!(error.to_string().ends_with("out: it is a symbolic link"));
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&victim), 0o644);
        fs::remove_dir_all(dir).unwrap();
    }

    /// What is planted at the name after the check is replaced, never written through, and
    /// the output is written all the same.
    #[test]
    fn a_link_or_file_planted_after_the_check_is_replaced() {
        let dir = scratch("planted");
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.join("out");
        let output = check(&path).unwrap();
        symlink(&victim, &path).unwrap();
        output.write_atomic(b"report").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"report");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");

        // A hard link to the victim planted at the name: the name is replaced, the victim kept.
        fs::remove_file(&path).unwrap();
        let output = check(&path).unwrap();
        fs::hard_link(&victim, &path).unwrap();
        output.write_atomic(b"again").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");

        // A directory made at the name stops that output only, and says so.
        fs::remove_file(&path).unwrap();
        let output = check(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let error = output.write_atomic(b"lost").unwrap_err();
        assert!(
            error.to_string().contains("a directory is at its name now"),
            "{error}"
        );
        assert_eq!(names(&dir), ["out", "victim"], "no temporary left");
        fs::remove_dir_all(dir).unwrap();
    }

    /// The directory is resolved once: moved and replaced by a link after the check, the
    /// output still goes to the directory that was checked.
    #[test]
    fn the_directory_checked_is_the_one_written() {
        let base = scratch("swap");
        let checked = base.join("d");
        let elsewhere = base.join("elsewhere");
        fs::create_dir(&checked).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        let output = check(&checked.join("report")).unwrap();
        fs::rename(&checked, base.join("d.old")).unwrap();
        symlink(&elsewhere, &checked).unwrap();
        output.write_atomic(b"report").unwrap();
        assert_eq!(fs::read(base.join("d.old/report")).unwrap(), b"report");
        assert!(names(&elsewhere).is_empty());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn links_others_could_plant_are_not_followed() {
        let base = scratch("trust");
        let target = base.join("real");
        fs::create_dir(&target).unwrap();
        // Links of one's own (root's, in these tests, or the user's) are followed.
        symlink(&target, base.join("mine")).unwrap();
        check(&base.join("mine/report")).unwrap();
        check(&base.join("real/../mine/./report")).unwrap();
        let directory = nix::sys::stat::stat(&base).unwrap();
        let (mut link, mut trusted_dir) = (directory, directory);
        link.st_uid = 65534;
        assert!(!link_is_trusted(
            &{
                trusted_dir.st_mode |= 0o022;
                trusted_dir
            },
            &link
        ));
        let mut private = directory;
        private.st_mode &= !0o022;
        private.st_uid = 0;
        assert!(link_is_trusted(&private, &link));
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn an_existing_file_is_replaced_by_a_new_private_inode() {
        let dir = scratch("replace");
        let path = dir.join("report");
        fs::write(&path, b"old contents, longer than the new").unwrap();
        fs::set_permissions(&path, PermissionsExt::from_mode(0o666)).unwrap();
        // A descriptor opened before the write must not see the new contents.
        let earlier = fs::File::open(&path).unwrap();
        let old_inode = earlier.metadata().unwrap().ino();
        check(&path).unwrap().write_atomic(b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        assert_ne!(fs::metadata(&path).unwrap().ino(), old_inode);
        assert_eq!(
            std::io::read_to_string(earlier).unwrap(),
            "old contents, longer than the new"
        );
        assert_eq!(names(&dir), ["report"], "no temporary left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_streaming_file_is_in_place_before_anything_is_written() {
        let dir = scratch("stream");
        let path = dir.join("rec");
        let mut file = check(&path).unwrap().create_streaming().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        file.write_all(b"frame").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"frame");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names(&dir), ["rec"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directories_fifos_and_proc_are_refused_and_devices_written_in_place() {
        let dir = scratch("kinds");
        let error = check(&dir).unwrap_err();
        assert!(error
            .to_string()
            .ends_with("it is a directory, not a regular file"));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let error = check(&fifo).unwrap_err();
        assert!(error
            .to_string()
            .ends_with("it is a FIFO, not a regular file"));
        check(Path::new("/dev/null"))
            .unwrap()
            .write_atomic(b"discarded")
            .unwrap();
        let error = check(Path::new("/proc/self/comm")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refusing to write /proc/self/comm: its directory is on /proc, where no file can be created"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_same_file_under_two_names_is_refused() {
        let dir = scratch("same");
        let path = dir.join("out");
        let dotted = dir.join("sub/../out");
        fs::create_dir(dir.join("sub")).unwrap();
        let (first, second) = (check(&path).unwrap(), check(&dotted).unwrap());
        let error = refuse_same_file(&[("--record", &first), ("-o", &second)]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--record and -o name the same file"),
            "{error}"
        );
        // A hard link is the same file too.
        fs::write(&path, b"").unwrap();
        fs::hard_link(&path, dir.join("link")).unwrap();
        let (first, linked) = (check(&path).unwrap(), check(&dir.join("link")).unwrap());
        assert!(refuse_same_file(&[("--record", &first), ("-o", &linked)]).is_err());
        let other = check(&dir.join("other")).unwrap();
        refuse_same_file(&[("--record", &first), ("-o", &other)]).unwrap();
        // An output must not replace what the run reads.
        let dotted = check(&dotted).unwrap();
        let error = refuse_input(("-o", &dotted), ("the recording", &path)).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("-o and the recording name the same file"),
            "{error}"
        );
        refuse_input(("-o", &other), ("the recording", &path)).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    /// A killed run's temporaries are removed at the next check in their directory; a live
    /// process's, another user's and other files are kept.
    #[test]
    fn temporaries_of_a_killed_run_are_removed_at_the_next_check() {
        let dir = scratch("stale");
        // A pid that is not running: beyond the kernel's pid_max.
        let dead = [
            ".memtrace-4194305-123-0badf00d.tmp",
            ".memtrace-4194305-7-000000001.tmp",
        ];
        for name in dead {
            fs::write(dir.join(name), b"partial report").unwrap();
        }
        fs::create_dir_all(dir.join(".memtrace-4194305-1-12345678.tmp.d/inner")).unwrap();
        fs::write(dir.join(".memtrace-4194305-1-12345678.tmp.d/inner/f"), b"x").unwrap();
        let (pid, start) = me();
        let live = format!(".memtrace-{pid}-{start}-00000000.tmp");
        let reused = format!(".memtrace-{pid}-{}-00000000.tmp", start + 1);
        fs::write(dir.join(&live), b"in progress").unwrap();
        fs::write(dir.join(&reused), b"pid reused since").unwrap();
        // Linked elsewhere: not a temporary memtrace would have left.
        fs::write(dir.join("kept"), b"").unwrap();
        fs::hard_link(
            dir.join("kept"),
            dir.join(".memtrace-4194305-9-abcdef01.tmp"),
        )
        .unwrap();
        check(&dir.join("report")).unwrap();
        let mut kept = vec![
            live,
            ".memtrace-4194305-9-abcdef01.tmp".into(),
            "kept".into(),
        ];
        kept.sort();
        assert_eq!(names(&dir), kept);
        fs::remove_dir_all(dir).unwrap();
    }

    /// The agent's captures: a staged directory is complete under its final name or absent.
    #[test]
    fn a_staged_directory_appears_whole_or_not_at_all() {
        let base = scratch("staged");
        let dir = Directory::open(&base).unwrap();
        let staged = dir.stage().unwrap();
        staged.write_file(OsStr::new("a.mtr"), b"frames").unwrap();
        staged
            .write_file_with(OsStr::new("report.json"), |out| out.write_all(b"{}"))
            .unwrap();
        assert!(
            dir.entries().unwrap().is_empty(),
            "a temporary is not listed"
        );
        staged.commit(OsStr::new("capture-1")).unwrap();
        let capture = base.join("capture-1");
        assert_eq!(names(&capture), ["a.mtr", "report.json"]);
        assert_eq!(mode(&capture), 0o700);
        assert_eq!(mode(&capture.join("a.mtr")), 0o600);
        assert_eq!(fs::read(capture.join("a.mtr")).unwrap(), b"frames");

        // Never over an existing entry.
        let staged = dir.stage().unwrap();
        assert!(staged.commit(OsStr::new("capture-1")).is_err());
        // Dropped uncommitted: removed.
        let staged = dir.stage().unwrap();
        staged.write_file(OsStr::new("x"), b"x").unwrap();
        drop(staged);
        assert_eq!(names(&base), ["capture-1"]);

        // Listing and rotation through the descriptor; a link is removed, not followed.
        let victim = scratch("staged-victim");
        fs::write(victim.join("keep"), b"precious").unwrap();
        symlink(&victim, base.join("link")).unwrap();
        let mut entries = dir.entries().unwrap();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let kinds: Vec<(&OsStr, EntryKind)> = entries
            .iter()
            .map(|e| (e.name.as_os_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (OsStr::new("capture-1"), EntryKind::Directory),
                (OsStr::new("link"), EntryKind::Other)
            ]
        );
        dir.remove(OsStr::new("link")).unwrap();
        dir.remove(OsStr::new("capture-1")).unwrap();
        assert!(names(&base).is_empty());
        assert_eq!(fs::read(victim.join("keep")).unwrap(), b"precious");
        fs::remove_dir_all(victim).unwrap();
        fs::remove_dir_all(base).unwrap();
    }
}
