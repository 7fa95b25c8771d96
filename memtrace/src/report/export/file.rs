//! Writing an export file as root without being tricked into writing somewhere else.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Writes `contents` to `path`, private to the owner (0600: layouts defeat ASLR).
///
/// memtrace runs as root, so the path may lead into a directory others can write. The data
/// goes to a new file created next to `path` with `O_CREAT | O_EXCL | O_NOFOLLOW` (no existing
/// file or symlink is ever opened), which is then renamed over `path`: a symlink planted at
/// `path` is replaced, never followed. An existing `path` that is not a regular file (a device,
/// a directory, a symlink such as /dev/stdout) or belongs to another user is refused rather
/// than replaced.
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(existing) if !existing.file_type().is_file() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a regular file",
            ));
        }
        Ok(existing) if existing.uid() != nix::unistd::geteuid().as_raw() => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "exists and belongs to another user",
            ));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let temporary = temporary_path(path)?;
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// `.NAME.PID.tmp` in the same directory, so the rename stays within one file system.
fn temporary_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(temporary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("memtrace-export-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_a_planted_symlink_instead_of_following_it() {
        let dir = scratch("symlink");
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.join("out.html");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        // A symlink is not a regular file: refused, the victim untouched.
        assert!(write(&path, b"new").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        fs::remove_file(&path).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Overwriting one's own file works, and leaves no temporary file behind.
        write(&path, b"newer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"newer");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_devices_and_directories() {
        assert!(write(Path::new("/dev/null"), b"x").is_err());
        let dir = scratch("dir");
        assert!(write(&dir, b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
