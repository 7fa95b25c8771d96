//! Every file memtrace writes (recordings, reports, pictures) goes through here, because
//! memtrace runs as root and the paths it is given often lie in directories other users can
//! write to (`/tmp`).
//!
//! The policy, in the spirit of systemd's atomic writes and OpenSSH's `secure_filename`:
//!
//! - The data always goes into a **new inode** created by memtrace: a hidden file next to the
//!   target, opened with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` and mode 0600, then renamed over
//!   the target. `rename` replaces the directory entry and never follows a symbolic link, so a
//!   link planted at the target (even after our checks) is replaced, not written through; and no
//!   one holds an earlier descriptor to the new inode.
//! - An existing target is **refused** with one line saying why when it is a symbolic link, a
//!   directory or anything else that is not a regular file (except a character device such as
//!   `/dev/null`, which is written as is: it holds no data to protect), or a regular file owned by
//!   someone other than root or the invoking user (under sudo, `SUDO_UID`): replacing another
//!   user's file is not memtrace's call to make.
//! - Directory look-ups go through one descriptor of the parent directory (`*at` calls), so a
//!   directory swapped between the check and the write cannot redirect the file.
//! - Two outputs of one run naming the same file (through different paths, links or `..`) are
//!   refused up front ([`refuse_same_file`]): one would silently overwrite the other.
//!
//! Reports are written whole, synced, then renamed ([`write_atomic`]): a reader sees the old
//! file or the new one. A recording streams for the whole session and must survive `kill -9`,
//! so [`create_streaming`] renames the new, still empty file into place at once and hands it
//! back for appending.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::Write,
    os::{
        fd::OwnedFd,
        unix::ffi::OsStrExt,
        unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::{
    errno::Errno,
    fcntl::{openat, renameat, AtFlags, OFlag, AT_FDCWD},
    sys::stat::{fstatat, FileStat, Mode, SFlag},
    unistd::{unlinkat, UnlinkatFlags},
};

/// Output files hold command lines, paths and address layouts (which defeat ASLR): owner-only.
pub const OUTPUT_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write {}: it is a symbolic link", path.display())]
    Symlink { path: PathBuf },
    #[error("refusing to write {}: it is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("refusing to write {}: it belongs to uid {owner}, neither root nor you (uid {you}); remove it or choose another name", path.display())]
    ForeignOwner { path: PathBuf, owner: u32, you: u32 },
    #[error("{first_option} and {second_option} name the same file ({}); give them different files", first.display())]
    SameFile {
        first_option: String,
        first: PathBuf,
        second_option: String,
    },
    #[error("cannot write {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl Fn(Errno) -> OutputError + '_ {
    move |errno| OutputError::Io {
        path: path.to_owned(),
        error: errno.into(),
    }
}

/// What is at the target's name now.
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

/// An output path resolved to its parent directory's descriptor and the name in it.
struct Target {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    existing: Existing,
}

impl Target {
    fn open(path: &Path) -> Result<Self, OutputError> {
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
        // Symbolic links in the directory part are the user's own choice of directory; the
        // final component is what an attacker can plant, and is never followed.
        let dir = openat(
            AT_FDCWD,
            parent,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error(path))?;
        let existing = match fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Existing::Nothing,
            Err(errno) => return Err(io_error(path)(errno)),
            Ok(stat) => judge(path, &stat)?,
        };
        Ok(Self {
            path: path.to_owned(),
            dir,
            name,
            existing,
        })
    }

    /// The identity two paths share when they name the same file: the directory entry, and
    /// the inode when there is one (hard links).
    fn same_as(&self, other: &Target) -> bool {
        let inode = |existing: &Existing| match *existing {
            Existing::Regular { device, inode } | Existing::CharDevice { device, inode } => {
                Some((device, inode))
            }
            Existing::Nothing => None,
        };
        let dir = |target: &Target| {
            nix::sys::stat::fstat(&target.dir)
                .ok()
                .map(|stat| (stat.st_dev, stat.st_ino))
        };
        let same_entry = self.name == other.name && dir(self).is_some() && dir(self) == dir(other);
        let same_inode =
            inode(&self.existing).is_some() && inode(&self.existing) == inode(&other.existing);
        same_entry || same_inode
    }

    /// A new, empty, owner-only file next to the target; returns it and its name.
    fn create_temporary(&self) -> Result<(File, OsString), OutputError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut attempts = 0;
        loop {
            // Unpredictable enough that a name planted in advance is unlikely, and O_EXCL makes
            // a collision an error rather than a write into someone else's file.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.subsec_nanos());
            let name = OsString::from(format!(
                ".memtrace-{}-{}-{nanos:09}.tmp",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match openat(
                &self.dir,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(OUTPUT_MODE),
            ) {
                Ok(fd) => {
                    let file = File::from(fd);
                    // The umask may have taken bits away; the mode is exactly 0600 either way.
                    if let Err(error) = file.set_permissions(PermissionsExt::from_mode(OUTPUT_MODE))
                    {
                        self.remove(&name);
                        return Err(OutputError::Io {
                            path: self.path.clone(),
                            error,
                        });
                    }
                    return Ok((file, name));
                }
                Err(Errno::EEXIST) if attempts < 100 => attempts += 1,
                Err(errno) => return Err(io_error(&self.path)(errno)),
            }
        }
    }

    fn rename_into_place(&self, temporary: &OsStr) -> Result<(), OutputError> {
        renameat(&self.dir, temporary, &self.dir, self.name.as_os_str()).map_err(|errno| {
            self.remove(temporary);
            io_error(&self.path)(errno)
        })?;
        // The rename itself must survive a crash too; not every file system can sync a
        // directory, and the data is already safe, so a failure here is not the user's problem.
        let _ = nix::unistd::fsync(&self.dir);
        Ok(())
    }

    fn remove(&self, name: &OsStr) {
        let _ = unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir);
    }

    fn open_device(&self) -> Result<File, OutputError> {
        let fd = openat(
            &self.dir,
            self.name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error(&self.path))?;
        let file = File::from(fd);
        // Re-check what was opened: the name may have been replaced since it was judged.
        let metadata = file.metadata().map_err(|error| OutputError::Io {
            path: self.path.clone(),
            error,
        })?;
        if metadata.file_type().is_char_device() {
            Ok(file)
        } else {
            Err(OutputError::NotRegular {
                path: self.path.clone(),
                kind: "no longer the device it was",
            })
        }
    }
}

/// Applies the policy to what exists at the target.
fn judge(path: &Path, stat: &FileStat) -> Result<Existing, OutputError> {
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    let not_regular = |kind| {
        Err(OutputError::NotRegular {
            path: path.to_owned(),
            kind,
        })
    };
    match kind {
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

/// Checks that `path` may be written, without writing it: lets a session refuse a bad output
/// before it starts tracing rather than after.
pub fn check(path: &Path) -> Result<(), OutputError> {
    Target::open(path).map(drop)
}

/// Refuses two outputs that name the same file. `outputs` are (option, path) pairs, e.g.
/// `("--record", …)`, `("-o", …)`; each path is also [`check`]ed.
pub fn refuse_same_file(outputs: &[(&str, &Path)]) -> Result<(), OutputError> {
    let targets = outputs
        .iter()
        .map(|(option, path)| Ok((*option, Target::open(path)?)))
        .collect::<Result<Vec<_>, OutputError>>()?;
    for (i, (first_option, first)) in targets.iter().enumerate() {
        for (second_option, second) in &targets[i + 1..] {
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
pub fn refuse_input(output: (&str, &Path), input: (&str, &Path)) -> Result<(), OutputError> {
    let target = Target::open(output.1)?;
    let Ok(read) = std::fs::metadata(input.1) else {
        return Ok(());
    };
    match target.existing {
        Existing::Regular { device, inode } if (device, inode) == (read.dev(), read.ino()) => {
            Err(OutputError::SameFile {
                first_option: output.0.to_string(),
                first: output.1.to_owned(),
                second_option: input.0.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Writes `contents` to `path` atomically: into a new owner-only file, synced, then renamed
/// over `path`. A reader (or a crash) sees the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), OutputError> {
    write_atomic_with(path, |file| file.write_all(contents))
}

/// [`write_atomic`] for contents made as they are written (a report too large to hold as one
/// string): `write` gets the new file, or the device `path` names.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let target = Target::open(path)?;
    if let Existing::CharDevice { .. } = target.existing {
        let mut device = target.open_device()?;
        return write(&mut device).map_err(|error| OutputError::Io {
            path: path.to_owned(),
            error,
        });
    }
    let (mut file, temporary) = target.create_temporary()?;
    if let Err(error) = write(&mut file).and_then(|()| file.sync_all()) {
        target.remove(&temporary);
        return Err(OutputError::Io {
            path: path.to_owned(),
            error,
        });
    }
    target.rename_into_place(&temporary)
}

/// Creates `path` as a new, empty, owner-only file for appending over a long time: it is
/// renamed into place right after its exclusive creation, so whatever has been written is
/// under the final name when the process is killed.
pub fn create_streaming(path: &Path) -> Result<File, OutputError> {
    let target = Target::open(path)?;
    if let Existing::CharDevice { .. } = target.existing {
        return target.open_device();
    }
    let (file, temporary) = target.create_temporary()?;
    target.rename_into_place(&temporary)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

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

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, PermissionsExt::from_mode(0o644)).unwrap();
        let link = dir.join("out");
        symlink(&victim, &link).unwrap();
        for result in [
            write_atomic(&link, b"report").map(drop),
            create_streaming(&link).map(drop),
        ] {
            let error = result.unwrap_err();
            assert!(matches!(error, OutputError::Symlink { .. }), "{error}");
            assert!(error.to_string().ends_with("out: it is a symbolic link"));
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&victim), 0o644);
        fs::remove_dir_all(dir).unwrap();
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
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        assert_ne!(fs::metadata(&path).unwrap().ino(), old_inode);
        assert_eq!(
            std::io::read_to_string(earlier).unwrap(),
            "old contents, longer than the new"
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_streaming_file_is_in_place_before_anything_is_written() {
        let dir = scratch("stream");
        let path = dir.join("rec");
        let mut file = create_streaming(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        file.write_all(b"frame").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"frame");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directories_and_fifos_are_refused_and_devices_written_in_place() {
        let dir = scratch("kinds");
        let error = write_atomic(&dir, b"x").unwrap_err();
        assert!(error
            .to_string()
            .ends_with("it is a directory, not a regular file"));
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let error = create_streaming(&fifo).unwrap_err();
        assert!(error
            .to_string()
            .ends_with("it is a FIFO, not a regular file"));
        write_atomic(Path::new("/dev/null"), b"discarded").unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_same_file_under_two_names_is_refused() {
        let dir = scratch("same");
        let path = dir.join("out");
        let dotted = dir.join("sub/../out");
        fs::create_dir(dir.join("sub")).unwrap();
        let error = refuse_same_file(&[("--record", &path), ("-o", &dotted)]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--record and -o name the same file"),
            "{error}"
        );
        // A hard link is the same file too.
        fs::write(&path, b"").unwrap();
        fs::hard_link(&path, dir.join("link")).unwrap();
        assert!(refuse_same_file(&[("--record", &path), ("-o", &dir.join("link"))]).is_err());
        refuse_same_file(&[("--record", &path), ("-o", &dir.join("other"))]).unwrap();
        // An output must not replace what the run reads.
        let error = refuse_input(("-o", &dotted), ("the recording", &path)).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("-o and the recording name the same file"),
            "{error}"
        );
        refuse_input(("-o", &dir.join("other")), ("the recording", &path)).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }
}
