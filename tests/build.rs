//! Builds the C test programs (tests/programs/*.c) once per change, for both ABIs, into
//! `$OUT_DIR/programs`, where `memtrace_tests::program` finds them. Every test process of
//! every run (and every kernel-matrix guest, which shares this machine's root) uses the same
//! binaries, and nothing is left in /tmp.
//!
//! Written by hand rather than with the `cc` crate: `cc` builds libraries to link into Rust,
//! these are standalone executables, one gcc command each.
//!
//! Each program is built, as `NAME-BITS[-VARIANT]`:
//! - with the C library (`NAME-64`, `NAME-32`), or, if it includes raw_syscall.h (its own
//!   `_start`, raw syscalls, no C library), static and bare (`NAME-64-bare`, `NAME-32-bare`);
//! - in the extra variants of [`EXTRA_VARIANTS`].

use std::{
    collections::VecDeque,
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    thread,
};

/// Flags every program is built with: the tests name their functions and lines.
const COMMON_FLAGS: [&str; 3] = ["-O1", "-g", "-Wall"];

/// A bare program: no C library, static, exactly the syscalls in its source.
const BARE_FLAGS: [&str; 5] = [
    "-static",
    "-nostdlib",
    "-fno-stack-protector",
    "-fno-pie",
    "-no-pie",
];

/// Programs that exist for one ABI only (their source says why).
const I386_ONLY: [&str; 1] = ["old_mmap"];

/// (program, variant suffix, ABIs, extra flags) built on top of the default variant.
type ExtraVariant = (
    &'static str,
    &'static str,
    &'static [Bits],
    &'static [&'static str],
);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bits {
    B64,
    B32,
}

impl Bits {
    fn number(self) -> &'static str {
        match self {
            Self::B64 => "64",
            Self::B32 => "32",
        }
    }
}

const BOTH: &[Bits] = &[Bits::B64, Bits::B32];

const EXTRA_VARIANTS: [ExtraVariant; 5] = [
    // The stack tests: frame pointers kept, and omitted (only DWARF CFI unwinds it).
    ("bigalloc", "fp", BOTH, &["-fno-omit-frame-pointer"]),
    ("bigalloc", "nofp", BOTH, &["-fomit-frame-pointer"]),
    (
        "stack_depth",
        "nofp",
        &[Bits::B64],
        &["-fomit-frame-pointer"],
    ),
    // The container test: a static program the container's older glibc can run, and a decoy
    // with other functions at the same path on the host (see inside.c).
    (
        "inside",
        "static",
        &[Bits::B64],
        &["-static", "-DPREFIX=memtrace_inside"],
    ),
    (
        "inside",
        "static-decoy",
        &[Bits::B64],
        &["-static", "-DPREFIX=host_decoy", "-DDECOY"],
    ),
];

/// One gcc run.
struct Build {
    source: PathBuf,
    output: PathBuf,
    flags: Vec<String>,
}

fn main() {
    let sources = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("programs");
    println!("cargo::rerun-if-changed={}", sources.display());
    let out_dir = Path::new(&env::var("OUT_DIR").unwrap()).join("programs");
    fs::create_dir_all(&out_dir).unwrap();

    let mut builds = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&sources)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    names.sort();
    for source in names {
        let name = source.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = fs::read_to_string(&source).unwrap();
        let bare = text.contains("#include \"raw_syscall.h\"");
        let threads = text.contains("#include <pthread.h>");
        let abis: &[Bits] = if I386_ONLY.contains(&name.as_str()) {
            &[Bits::B32]
        } else {
            BOTH
        };
        for &bits in abis {
            let mut flags: Vec<String> = Vec::new();
            if bare {
                flags.extend(BARE_FLAGS.iter().map(|flag| flag.to_string()));
            }
            if threads {
                flags.push("-pthread".into());
            }
            let suffix = if bare { "-bare" } else { "" };
            builds.push(build(&source, &out_dir, &name, bits, suffix, &flags));
        }
        for (program, variant, abis, extra) in EXTRA_VARIANTS {
            if program != name {
                continue;
            }
            for &bits in abis {
                let flags: Vec<String> = extra.iter().map(|flag| flag.to_string()).collect();
                let suffix = format!("-{variant}");
                builds.push(build(&source, &out_dir, &name, bits, &suffix, &flags));
            }
        }
    }
    run_all(builds);
}

fn build(
    source: &Path,
    out_dir: &Path,
    name: &str,
    bits: Bits,
    suffix: &str,
    extra: &[String],
) -> Build {
    let mut flags = vec![format!("-m{}", bits.number())];
    flags.extend(COMMON_FLAGS.iter().map(|flag| flag.to_string()));
    flags.extend(extra.iter().cloned());
    Build {
        source: source.to_owned(),
        output: out_dir.join(format!("{name}-{}{suffix}", bits.number())),
        flags,
    }
}

/// Runs the builds, as many at once as there are CPUs; panics with every failure's gcc output
/// (cargo shows it), so a program that does not build fails the test build, not one test.
fn run_all(builds: Vec<Build>) {
    let queue = Mutex::new(VecDeque::from(builds));
    let failures = Mutex::new(Vec::new());
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(build) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                if let Err(failure) = run(&build) {
                    failures.lock().unwrap().push(failure);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "building the test programs failed (cargo xtask test installs gcc and gcc-multilib):\n{}",
        failures.join("\n")
    );
}

fn run(build: &Build) -> Result<(), String> {
    // Built under a side name and renamed: a binary that exists is whole.
    let partial = build.output.with_extension("partial");
    let mut gcc = Command::new("gcc");
    gcc.args(&build.flags)
        .arg("-o")
        .arg(&partial)
        .arg(&build.source);
    let describe = format!("{gcc:?}");
    let output = gcc
        .output()
        .map_err(|error| format!("{describe}: could not run gcc: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{describe} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::rename(&partial, &build.output).map_err(|error| format!("{describe}: {error}"))
}
