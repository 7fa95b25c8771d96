//! Captures: a window of the flight recorder saved to `--capture-dir` when a trigger fires,
//! one directory per capture holding the window's recording, its text and JSON reports and
//! what fired.
//!
//! The agent runs as root for days and the capture directory may sit where others can look,
//! so the directory is opened once and checked (root's, a directory, not a link, writable by
//! root alone) and everything after goes through its descriptor. A capture is written into a
//! hidden temporary directory beside the others and renamed into place only once every file
//! in it is synced: after a crash a capture is complete or absent, and the temporaries a
//! killed agent left are removed at the next start.

use std::{
    ffi::OsStr,
    fs::File,
    io::Write as _,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use nix::{
    dir::Dir,
    errno::Errno,
    fcntl::{openat, renameat, AtFlags, OFlag},
    sys::stat::{fstat, fstatat, mkdirat, Mode},
    unistd::{fsync, unlinkat, UnlinkatFlags},
};

use super::{flight::Window, triggers::Fired};
use crate::{
    clock,
    recording::{RecordingHeader, RecordingReader, RecordingWriter, WriterOptions},
    replay::{self, ReplayOptions, Replayed},
    report::{self, Detail, SessionInfo, Source, TextOptions},
    user_mode::DEFAULT_KEEP_EXITED,
};

/// Captures are owner-only, like every output: they hold command lines, paths and layouts.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
/// Temporaries of captures being written start so; complete captures never do.
const TEMPORARY_PREFIX: &str = ".partial-";

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("--capture-dir {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("--capture-dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("capture {name}: {source}")]
    Write {
        name: String,
        source: std::io::Error,
    },
    #[error("capture {name}: the recording: {source}")]
    Recording {
        name: String,
        source: crate::recording::RecordError,
    },
}

/// The checked capture directory, held by its descriptor.
#[derive(Debug)]
pub struct CaptureDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// A complete capture on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub bytes: u64,
}

impl CaptureDir {
    /// Opens `path`, creating it (0700, and its parents as root's) when missing, and refuses it
    /// unless it is a directory (not a link) owned by root and writable by no one else.
    /// Temporaries left by a killed agent are removed.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let io = |source: std::io::Error| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(io)?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE))
                .map_err(io)?;
        }
        // Said before the open, which refuses a link too but only as "not a directory".
        if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(CaptureError::Unsafe {
                path: path.to_owned(),
                reason: "it is a symbolic link".into(),
            });
        }
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::ELOOP => CaptureError::Unsafe {
                path: path.to_owned(),
                reason: "it is a symbolic link".into(),
            },
            Errno::ENOTDIR => CaptureError::Unsafe {
                path: path.to_owned(),
                reason: "it is not a directory".into(),
            },
            errno => io(errno.into()),
        })?;
        let stat = fstat(&fd).map_err(|errno| io(errno.into()))?;
        let unsafe_because = |reason: &str| CaptureError::Unsafe {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if stat.st_uid != nix::unistd::geteuid().as_raw() {
            return Err(unsafe_because(
                "it is owned by another user, who could replace what the agent writes",
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(unsafe_because(
                "others may write in it (group or world writable), and so swap what the agent writes",
            ));
        }
        let dir = Self {
            path: path.to_owned(),
            fd,
        };
        dir.remove_temporaries()?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete captures, oldest first (their names start with the time).
    pub fn list(&self) -> Result<Vec<Stored>, CaptureError> {
        let mut stored: Vec<Stored> = self
            .entries()?
            .into_iter()
            .filter(|name| !name.starts_with('.'))
            .map(|name| {
                let bytes = self.size_of(&name).unwrap_or(0);
                Stored { name, bytes }
            })
            .collect();
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(stored)
    }

    /// Removes the oldest captures until at most `max_count` remain, taking at most
    /// `max_bytes`; returns the names removed. The newest is never removed.
    pub fn rotate(&self, max_count: usize, max_bytes: u64) -> Result<Vec<String>, CaptureError> {
        let mut stored = self.list()?;
        let mut removed = Vec::new();
        let mut total: u64 = stored.iter().map(|capture| capture.bytes).sum();
        while stored.len() > 1 && (stored.len() > max_count || total > max_bytes) {
            let oldest = stored.remove(0);
            total -= oldest.bytes;
            self.remove_tree(&oldest.name)?;
            removed.push(oldest.name);
        }
        Ok(removed)
    }

    fn entries(&self) -> Result<Vec<String>, CaptureError> {
        entries_of(&self.fd).map_err(|errno| CaptureError::Io {
            path: self.path.clone(),
            source: errno.into(),
        })
    }

    fn remove_temporaries(&self) -> Result<(), CaptureError> {
        for name in self.entries()? {
            if name.starts_with(TEMPORARY_PREFIX) {
                self.remove_tree(&name)?;
            }
        }
        Ok(())
    }

    /// Removes one capture (or temporary) directory and its files, through descriptors.
    fn remove_tree(&self, name: &str) -> Result<(), CaptureError> {
        let io = |errno: Errno| CaptureError::Io {
            path: self.path.join(name),
            source: errno.into(),
        };
        let sub = open_subdirectory(&self.fd, name).map_err(io)?;
        for entry in entries_of(&sub).map_err(io)? {
            unlinkat(&sub, entry.as_str(), UnlinkatFlags::NoRemoveDir).map_err(io)?;
        }
        unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir).map_err(io)?;
        Ok(())
    }

    fn size_of(&self, name: &str) -> Result<u64, Errno> {
        let sub = open_subdirectory(&self.fd, name)?;
        let mut total = 0;
        for entry in entries_of(&sub)? {
            let stat = fstatat(&sub, entry.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            total += stat.st_size as u64;
        }
        Ok(total)
    }

    /// Writes one capture: a temporary directory filled by `fill`, synced, renamed to `name`.
    pub fn write(
        &self,
        name: &str,
        fill: impl FnOnce(&CaptureFiles<'_>) -> Result<(), CaptureError>,
    ) -> Result<(), CaptureError> {
        let temporary = format!("{TEMPORARY_PREFIX}{name}");
        let write_error = |source: std::io::Error| CaptureError::Write {
            name: name.to_owned(),
            source,
        };
        mkdirat(
            &self.fd,
            temporary.as_str(),
            Mode::from_bits_truncate(DIR_MODE),
        )
        .map_err(|errno| write_error(errno.into()))?;
        let result = (|| {
            let sub = open_subdirectory(&self.fd, &temporary).map_err(|e| write_error(e.into()))?;
            fill(&CaptureFiles { dir: &sub, name })?;
            fsync(&sub).map_err(|e| write_error(e.into()))?;
            renameat(&self.fd, temporary.as_str(), &self.fd, name)
                .map_err(|e| write_error(e.into()))?;
            fsync(&self.fd).map_err(|e| write_error(e.into()))
        })();
        if result.is_err() {
            let _ = self.remove_tree(&temporary);
        }
        result
    }
}

/// The files of a capture being written.
pub struct CaptureFiles<'d> {
    dir: &'d OwnedFd,
    name: &'d str,
}

impl CaptureFiles<'_> {
    /// A new file in the capture (0600, refusing anything already there), for writing.
    pub fn create(&self, file: &str) -> Result<File, CaptureError> {
        let fd = openat(
            self.dir,
            file,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(FILE_MODE),
        )
        .map_err(|errno| self.error(errno.into()))?;
        Ok(File::from(fd))
    }

    /// A whole file, written and synced.
    pub fn write(&self, file: &str, contents: &[u8]) -> Result<(), CaptureError> {
        let mut out = self.create(file)?;
        out.write_all(contents).map_err(|error| self.error(error))?;
        out.sync_all().map_err(|error| self.error(error))
    }

    /// A file of the capture, to read back.
    pub fn open(&self, file: &str) -> Result<File, CaptureError> {
        let fd = openat(
            self.dir,
            file,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| self.error(errno.into()))?;
        Ok(File::from(fd))
    }

    fn error(&self, source: std::io::Error) -> CaptureError {
        CaptureError::Write {
            name: self.name.to_owned(),
            source,
        }
    }
}

fn open_subdirectory(parent: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory (not `.` or `..`), read through a duplicate of its descriptor.
fn entries_of(dir: &OwnedFd) -> Result<Vec<String>, Errno> {
    let fd = nix::unistd::dup(dir.as_fd())?;
    let mut listing = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if entry.file_type() == Some(nix::dir::Type::Symlink) {
            // Never ours: capture directories hold directories and files only.
            continue;
        }
        names.push(name.to_string_lossy().into_owned());
    }
    Ok(names)
}

/// A capture's directory name: when, what, whom. Sorting names sorts captures by time.
pub fn capture_name(fired: &Fired, wall_ns: u64) -> String {
    let seconds = (wall_ns / 1_000_000_000) as i64;
    let millis = (wall_ns / 1_000_000) % 1000;
    let time = utc(seconds);
    let who: String = fired
        .comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if fired.pid == 0 {
        format!("{time}.{millis:03}Z-{}", fired.kind.as_str())
    } else {
        format!(
            "{time}.{millis:03}Z-{}-{}-{who}",
            fired.kind.as_str(),
            fired.pid
        )
    }
}

/// `YYYYMMDDTHHMMSS` of a Unix time, in UTC (days to a civil date, as `date -u` does).
fn utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// `pid`, its ancestors and its descendants among the processes of `model`; empty (everyone)
/// for pid 0.
fn family_of(model: &crate::model::Model, pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let parents: std::collections::HashMap<u32, u32> = model
        .processes()
        .map(|view| (view.process().pid(), view.process().ppid()))
        .collect();
    let mut family = vec![pid];
    let mut up = pid;
    while let Some(&parent) = parents.get(&up) {
        if parent == 0 || family.contains(&parent) {
            break;
        }
        family.push(parent);
        up = parent;
    }
    let descends = |mut child: u32| {
        for _ in 0..parents.len() {
            match parents.get(&child) {
                Some(&parent) if parent == pid => return true,
                Some(&parent) if parent != 0 && parent != child => child = parent,
                _ => return false,
            }
        }
        false
    };
    family.extend(parents.keys().copied().filter(|&child| descends(child)));
    family.sort_unstable();
    family.dedup();
    family
}

/// What a capture holds beside its recording.
#[derive(Debug)]
pub struct CaptureInput {
    pub fired: Fired,
    /// Triggers of its kind and process skipped by the rate limit since the last capture.
    pub skipped_before: u64,
    pub header: RecordingHeader,
    pub window: Window,
    pub lost: crate::event::Losses,
    /// The backend the agent traces with, for the reports.
    pub backend: Option<report::BackendInfo>,
    /// Extra files (the kernel report of a kernel trigger): name and contents.
    pub extra: Vec<(String, Vec<u8>)>,
}

/// Writes a capture: `capture.mtr`, then its reports as `memtrace replay capture.mtr` gives
/// them (`report.txt`, `report.json`), then `trigger.json`. Returns its name and size.
pub fn write_capture(dir: &CaptureDir, input: CaptureInput) -> Result<Stored, CaptureError> {
    let name = capture_name(
        &input.fired,
        input.header.clock_base.wall_time_ns(input.fired.time_ns),
    );
    let recording_error = |source| CaptureError::Recording {
        name: name.clone(),
        source,
    };
    let mut size = 0;
    let mut reported = Vec::new();
    dir.write(&name, |files| {
        let file = files.create("capture.mtr")?;
        let mut writer = RecordingWriter::new(file, &input.header, WriterOptions::default())
            .map_err(recording_error)?;
        let mut events = 0u64;
        for event in input.window.events() {
            // A segment is always whole (flushed frames), so an error is memtrace's own.
            let event = event.map_err(recording_error)?;
            writer.write_event(&event).map_err(recording_error)?;
            events += 1;
        }
        let file = writer.finish(input.lost).map_err(recording_error)?;
        size += file.metadata().map(|m| m.len()).unwrap_or(0);

        let reader = RecordingReader::new(files.open("capture.mtr")?).map_err(recording_error)?;
        let replay = replay::replay_from(
            reader,
            &ReplayOptions {
                path: PathBuf::new(),
                until: None,
                print_events: false,
                interval: None,
                since: None,
                keep_exited: DEFAULT_KEEP_EXITED,
                // The process the trigger is about stays whole, never folded.
                pids: vec![input.fired.pid]
                    .into_iter()
                    .filter(|&pid| pid != 0)
                    .collect(),
            },
            None,
        )
        .map_err(recording_error)?;
        if let Replayed::User(mut user_mode) = replay.consumer {
            let info = SessionInfo {
                source: Source::Replay,
                events: replay.stream.events(),
                lost: replay.stream.lost(),
                backend: input.backend.clone(),
            };
            // The process a trigger is about, with its ancestors and descendants: a whole
            // server's report would bury it (its recording holds everything, for
            // `memtrace replay`). A trigger about the system reports every process.
            let family = family_of(&user_mode.model, input.fired.pid);
            let report = user_mode.report_for(&info, &family, Detail::Whole);
            let json = report::json::render(&report);
            // A family chosen by the trigger is detailed whole, as `replay --pid` details
            // the processes it names; the system's report ranks and details the top ones.
            let text = report::text::render(
                &report,
                &TextOptions {
                    all: !family.is_empty(),
                    ..TextOptions::default()
                },
            );
            files.write("report.json", json.as_bytes())?;
            files.write("report.txt", text.as_bytes())?;
            reported = family;
            size += (json.len() + text.len()) as u64;
        }
        for (file, contents) in &input.extra {
            files.write(file, contents)?;
            size += contents.len() as u64;
        }
        let trigger = serde_json::json!({
            "trigger": input.fired.kind.as_str(),
            "pid": input.fired.pid,
            "comm": input.fired.comm,
            "detail": input.fired.detail,
            "figures": input.fired.figures,
            "time_ns": input.fired.time_ns,
            "wall_time_ns": input.header.clock_base.wall_time_ns(input.fired.time_ns),
            "skipped_before": input.skipped_before,
            // The processes the reports show (`memtrace replay capture.mtr --pid P ...` gives
            // the same); empty: every process.
            "reported_pids": reported,
            "window": {
                "start_ns": input.window.start_ns,
                "end_ns": input.window.end_ns,
                "events": events,
            },
            "written_at_ns": clock::realtime_ns(),
        });
        let trigger = serde_json::to_vec_pretty(&trigger).unwrap_or_default();
        files.write("trigger.json", &trigger)?;
        size += trigger.len() as u64;
        Ok(())
    })?;
    Ok(Stored { name, bytes: size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_are_civil_dates() {
        assert_eq!(utc(0), "19700101T000000");
        assert_eq!(utc(1_765_056_600), "20251206T213000");
        assert_eq!(utc(951_782_400), "20000229T000000");
    }

    #[test]
    fn capture_names_sort_by_time_and_keep_to_safe_characters() {
        let fired = Fired {
            kind: super::super::triggers::TriggerKind::BrkFailed,
            pid: 42,
            comm: "evil/\u{1b}name".into(),
            time_ns: 0,
            detail: String::new(),
            figures: serde_json::Value::Null,
        };
        let name = capture_name(&fired, 1_765_056_600_123_000_000);
        assert_eq!(name, "20251206T213000.123Z-brk-failed-42-evil__name");
    }

    fn scratch(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("memtrace-capture-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn a_capture_is_complete_or_absent_and_rotation_keeps_the_newest() {
        let path = scratch("rotate");
        let dir = CaptureDir::open(&path).unwrap();
        for index in 0..5 {
            dir.write(&format!("2025120{index}T000000.000Z-signal"), |files| {
                files.write("report.txt", &vec![b'x'; 1000])
            })
            .unwrap();
        }
        // A failing fill leaves nothing behind.
        let failed = dir.write("20251209T000000.000Z-signal", |files| {
            files.write("a", b"1")?;
            files.write("a", b"2")
        });
        assert!(failed.is_err());
        assert_eq!(dir.list().unwrap().len(), 5);
        // A killed agent's temporary is removed at the next start.
        std::fs::create_dir(path.join(".partial-20251210T000000.000Z-signal")).unwrap();
        std::fs::write(path.join(".partial-20251210T000000.000Z-signal/x"), b"half").unwrap();
        let dir = CaptureDir::open(&path).unwrap();
        assert!(!path.join(".partial-20251210T000000.000Z-signal").exists());
        let removed = dir.rotate(3, u64::MAX).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(dir.list().unwrap()[0].name, "20251202T000000.000Z-signal");
        let removed = dir.rotate(10, 1500).unwrap();
        assert_eq!(
            removed.len(),
            2,
            "bytes bound the captures too, the newest stays"
        );
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_in_is_refused() {
        let path = scratch("unsafe");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let error = CaptureDir::open(&path).unwrap_err().to_string();
        assert!(error.contains("others may write in it"), "{error}");
        let link = scratch("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = CaptureDir::open(&link).unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&path).unwrap();
    }
}
