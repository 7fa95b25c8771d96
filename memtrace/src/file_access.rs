//! How memtrace opens the files it reads about traced programs (executables, interpreters,
//! libraries, debug files): only regular files, and never in a way that can block.
//!
//! The paths come from the traced processes and from recordings, which anyone may craft, and
//! memtrace runs as root: a path naming a FIFO would block `open` forever (a FIFO's open waits
//! for a writer), a device could block in `read`. So files are opened non-blocking (a FIFO
//! opens at once that way), checked with `fstat` on the opened descriptor (no race with a
//! rename between check and open), and refused unless regular.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// Whether the last component of the path may be a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Follow it: e.g. a program interpreter named by its link (`/lib64/ld-linux-x86-64.so.2`),
    /// or `/proc/PID/map_files/…`, which are links to the mapped files.
    Follow,
    /// Refuse it: paths the kernel resolved (the names in `/proc/PID/maps`, exec events) never
    /// end in a link, so one found there is not the file that was mapped.
    Refuse,
}

/// Opens `path` read-only, non-blocking and close-on-exec, and returns it only if it is a
/// regular file.
pub fn open_regular(path: &Path, links: Links) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("memtrace-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("module.so");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        let error = open_regular(&fifo, Links::Follow).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_and_directories_are_refused() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            let error = open_regular(Path::new(path), Links::Follow).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{path}: {error}");
        }
    }

    #[test]
    fn a_final_link_is_followed_only_when_asked() {
        let dir = std::env::temp_dir().join(format!("memtrace-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("lib.so");
        std::fs::write(&target, b"\x7fELF").unwrap();
        let link = dir.join("link.so");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_regular(&link, Links::Follow).is_ok());
        assert!(open_regular(&link, Links::Refuse).is_err());
        assert!(open_regular(&target, Links::Refuse).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
