//! Names for JIT-compiled code, from the perf maps runtimes write.
//!
//! A runtime that compiles code at run time (node with `--perf-basic-prof`, .NET with
//! `DOTNET_PerfMapEnabled=1`, a JVM after `jcmd PID Compiler.perfmap`, Python 3.12+ with
//! `-X perf`) can list its code in `/tmp/perf-PID.map`, one `START SIZE NAME` line (hex start
//! and size) per function. The file is the process's own: its `/tmp` and its pid in its own
//! pid namespace, so a container's map is read through `/proc/PID/root`, never the host's
//! `/tmp` (which may hold another process's map of the same number).
//!
//! A map is read only when a frame falls in anonymous memory, and read on from where it was
//! left when it has grown (runtimes append as they compile); a map that shrank or was
//! replaced (a JVM's `Compiler.perfmap` writes a new one) is read again from the start.
//!
//! memtrace runs as root and the file is in a world-writable directory: it is opened as a
//! regular file only, never through a final link, never blocking
//! ([`crate::file_access`]), and at most [`MAX_MAP_BYTES`] of it are read.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufRead, BufReader, Read as _, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::file_access::{open_regular, Links};

use super::FileView;

/// How much of one perf map is read, at most: a large JVM's map is tens of MiB; past this,
/// later code stays unnamed rather than memtrace growing with the traced program.
pub const MAX_MAP_BYTES: u64 = 64 << 20;

/// A function of JIT code, as a perf map names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitSymbol {
    pub start: u64,
    pub len: u64,
    pub name: Arc<str>,
}

/// The perf maps of the traced processes, each read when first needed.
#[derive(Debug, Default)]
pub struct PerfMaps {
    maps: HashMap<u32, PerfMap>,
}

/// How long a process whose perf map could not be opened goes without another look: a
/// process that writes none would otherwise cost a status read and two opens per frame of
/// its JIT code.
const RETRY_MISSING: Duration = Duration::from_secs(1);

/// One process's perf map, as far as it was read.
#[derive(Debug, Default)]
struct PerfMap {
    /// Its pid in its own namespace, which names the file.
    ns_pid: Option<u32>,
    /// When the map could not be opened last, if it could not.
    missing_since: Option<Instant>,
    /// The file read, by device and inode: another file there is read from the start.
    identity: Option<(u64, u64)>,
    /// Bytes parsed so far (up to the end of the last whole line).
    consumed: u64,
    /// By start address; of two at one start, the later line last (the runtime reused the
    /// address). Names are in `names`: a large JVM's map has tens of thousands of lines.
    symbols: Vec<Symbol>,
    names: String,
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u64,
    len: u64,
    name_start: u32,
    name_len: u32,
}

impl PerfMaps {
    /// The JIT function at `address` in the process `view` names, read from its perf map
    /// (again, if the map grew since it was last read); `None` when it has no map or the map
    /// does not cover `address`.
    pub fn symbol_at(&mut self, view: &FileView, address: u64) -> Option<JitSymbol> {
        let FileView::Process { pid, root } = view else {
            return None;
        };
        let map = self.maps.entry(*pid).or_default();
        if let Some(found) = map.lookup(address) {
            return Some(found);
        }
        if map
            .missing_since
            .is_some_and(|since| since.elapsed() < RETRY_MISSING)
        {
            return None;
        }
        let ns_pid = *map
            .ns_pid
            .get_or_insert_with(|| namespace_pid(*pid).unwrap_or(*pid));
        let Some((file, path)) = open_map(*pid, ns_pid, root.as_deref()) else {
            map.missing_since = Some(Instant::now());
            return None;
        };
        map.missing_since = None;
        if let Err(error) = map.read_on(file) {
            log::debug!("{}: {error}", path.display());
        }
        map.lookup(address)
    }

    /// The processes whose perf map named at least one function.
    pub fn processes_with_maps(&self) -> impl Iterator<Item = u32> + '_ {
        self.maps
            .iter()
            .filter(|(_, map)| !map.symbols.is_empty())
            .map(|(&pid, _)| pid)
    }

    /// Process `pid` is gone for good: its map goes, and a new process with its pid starts
    /// with none.
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
    }
}

impl PerfMap {
    fn lookup(&self, address: u64) -> Option<JitSymbol> {
        let after = self
            .symbols
            .partition_point(|symbol| symbol.start <= address);
        let symbol = self.symbols.get(after.checked_sub(1)?)?;
        let start = symbol.name_start as usize;
        let name = self.names.get(start..start + symbol.name_len as usize)?;
        (address - symbol.start < symbol.len).then(|| JitSymbol {
            start: symbol.start,
            len: symbol.len,
            name: Arc::from(name),
        })
    }

    /// Reads the lines added since the last read; all of them when `file` is another file
    /// or shorter than what was read.
    fn read_on(&mut self, file: File) -> io::Result<()> {
        let metadata = file.metadata()?;
        let identity = Some((metadata.dev(), metadata.ino()));
        if identity != self.identity || metadata.len() < self.consumed {
            self.identity = identity;
            self.consumed = 0;
            self.symbols.clear();
            self.names.clear();
        }
        let end = metadata.len().min(MAX_MAP_BYTES);
        if end <= self.consumed {
            return Ok(());
        }
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(self.consumed))?;
        let mut reader = reader.take(end - self.consumed);
        let mut line = Vec::new();
        let result = loop {
            line.clear();
            let read = match reader.read_until(b'\n', &mut line) {
                Ok(read) => read,
                Err(error) => break Err(error),
            };
            // A line still being written (no newline yet) is read next time, whole.
            if read == 0 || line.last() != Some(&b'\n') {
                break Ok(());
            }
            self.consumed += read as u64;
            if let Some((start, len, name)) = parse_line(&line) {
                self.push(start, len, &name);
            }
        };
        // Stable: of two lines at one start, the later stays after the earlier.
        self.symbols.sort_by_key(|symbol| symbol.start);
        result
    }

    fn push(&mut self, start: u64, len: u64, name: &str) {
        let (Ok(name_start), Ok(name_len)) =
            (u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return;
        };
        self.names.push_str(name);
        self.symbols.push(Symbol {
            start,
            len,
            name_start,
            name_len,
        });
    }
}

/// The perf map of live process `pid`: in its own `/tmp`, under its pid in its own namespace;
/// once it is gone, under the root it was last known to have.
fn open_map(pid: u32, ns_pid: u32, root: Option<&str>) -> Option<(File, PathBuf)> {
    let name = format!("tmp/perf-{ns_pid}.map");
    let mut candidates = vec![PathBuf::from(format!("/proc/{pid}/root/{name}"))];
    candidates.extend(root.map(|root| PathBuf::from(root).join(&name)));
    candidates
        .into_iter()
        .find_map(|path| Some((open_regular(&path, Links::Refuse).ok()?, path)))
}

/// The pid of `pid` in its innermost pid namespace (the last of its status's `NSpid`).
fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// `START SIZE NAME`: start and size in hex, with or without `0x`; the name is the rest of
/// the line (it may hold spaces: `LazyCompile:*run /app/main.js:3`).
fn parse_line(line: &[u8]) -> Option<(u64, u64, String)> {
    let line = String::from_utf8_lossy(line);
    let mut fields = line.trim_end_matches(['\n', '\r']).splitn(3, ' ');
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16).ok();
    let start = hex(fields.next()?)?;
    let len = hex(fields.next()?)?;
    let name = fields.next()?.trim();
    (len > 0 && !name.is_empty()).then(|| (start, len, name.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_of_the_runtimes_parse() {
        assert_eq!(
            parse_line(b"3a1f0c0e8a40 5c LazyCompile:*makeBuffers /app/jit.js:3\n"),
            Some((
                0x3a1f_0c0e_8a40,
                0x5c,
                "LazyCompile:*makeBuffers /app/jit.js:3".to_string()
            ))
        );
        assert_eq!(
            parse_line(b"0x7f3b2c000000 0x80 Interpreter\n"),
            Some((0x7f3b_2c00_0000, 0x80, "Interpreter".to_string()))
        );
        assert_eq!(parse_line(b"garbage\n"), None);
        assert_eq!(parse_line(b"1000 0 empty\n"), None);
    }

    /// This process's own map (`/tmp/perf-PID.map` through its `/proc/PID/root`), read on as
    /// it grows and from the start once replaced; a line not yet finished waits; a link
    /// planted in its place is not followed. (One test: they share the one path.)
    #[test]
    fn a_growing_map_is_read_on_and_a_replaced_one_again() {
        let pid = std::process::id();
        let path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
        let _ = std::fs::remove_file(&path);
        let view = FileView::Process { pid, root: None };
        let mut maps = PerfMaps::default();
        assert_eq!(maps.symbol_at(&view, 0x1000), None, "no map yet");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"1000 100 first\n").unwrap();
        assert_eq!(
            maps.symbol_at(&view, 0x1000),
            None,
            "not looked for again at once"
        );

        let mut maps = PerfMaps::default();
        let mut file = File::create(&path).unwrap();
        file.write_all(b"1000 100 first\n2000 10 sec").unwrap();
        let first = maps.symbol_at(&view, 0x10ff).unwrap();
        assert_eq!(
            (first.start, first.len, &*first.name),
            (0x1000, 0x100, "first")
        );
        assert_eq!(maps.symbol_at(&view, 0x1100), None);
        assert_eq!(
            maps.symbol_at(&view, 0x2000),
            None,
            "an unfinished line waits"
        );
        file.write_all(b"ond\n").unwrap();
        assert_eq!(&*maps.symbol_at(&view, 0x2008).unwrap().name, "second");
        assert_eq!(maps.processes_with_maps().collect::<Vec<_>>(), [pid]);

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"1000 8 replaced\n").unwrap();
        // A miss reads the new file from the start: only its own line is known then.
        assert_eq!(maps.symbol_at(&view, 0x3000), None);
        assert_eq!(&*maps.symbol_at(&view, 0x1004).unwrap().name, "replaced");
        assert_eq!(maps.symbol_at(&view, 0x2008), None);

        std::fs::remove_file(&path).unwrap();
        let target = PathBuf::from(format!("/tmp/memtrace-perf-target-{pid}"));
        std::fs::write(&target, b"4000 100 planted\n").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let mut maps = PerfMaps::default();
        assert_eq!(
            maps.symbol_at(&view, 0x4000),
            None,
            "a link is not followed"
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&target).unwrap();
    }
}
