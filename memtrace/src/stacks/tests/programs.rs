//! The C test programs, built with gcc at test time into a directory removed afterwards.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The leaker's source: main → process_image → hx_alloc_tmp → malloc(16 MiB).
pub const LEAKER_SOURCE: &str = include_str!("../testdata/leaker.c");

/// A directory of its own for one test, removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("memtrace-stacks-{test}-{}", std::process::id()));
        // A leftover from an earlier run with the same pid would only be stale binaries.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("creating the test's temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Compiles the leaker with `flags` (on top of `-O1 -g`) into `dir/name`.
pub fn build_leaker(dir: &TempDir, name: &str, flags: &[&str]) -> PathBuf {
    let source = dir.path().join("leaker.c");
    fs::write(&source, LEAKER_SOURCE).expect("writing leaker.c");
    let binary = dir.path().join(name);
    let output = Command::new("gcc")
        .args(["-O1", "-g"])
        .args(flags)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("running gcc (cargo xtask setup installs gcc and gcc-multilib)");
    assert!(
        output.status.success(),
        "gcc {flags:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// The 1-based line of the leaker's source that contains `text` (once).
pub fn leaker_line(text: &str) -> u32 {
    let mut lines = LEAKER_SOURCE
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(text));
    let (index, _) = lines.next().expect("text in leaker.c");
    assert!(lines.next().is_none(), "{text:?} is on several lines");
    index as u32 + 1
}

/// The file offset of function `name` in the ELF file at `path`, read with `object` directly
/// so the symbolizer is checked against an independent computation.
pub fn file_offset_of_function(path: &Path, name: &str) -> u64 {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let data = fs::read(path).expect("reading the test binary");
    let file = object::File::parse(&*data).expect("an ELF file");
    let address = file
        .symbols()
        .find(|symbol| symbol.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} in the symbol table"))
        .address();
    file.segments()
        .find_map(|segment| {
            let (offset, size) = segment.file_range();
            let start = segment.address();
            (start..start + size)
                .contains(&address)
                .then(|| address - start + offset)
        })
        .expect("the function in a loaded segment")
}
