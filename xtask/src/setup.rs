//! `cargo xtask setup`: installs what a command needs, skipping whatever is already there, so it
//! is cheap to run before every command. Each command asks for its own [`Purpose`]: building
//! and running memtrace need the eBPF toolchain and a C compiler for the demo, not the test
//! suite's browsers, emulators and language runtimes.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, privilege, workspace::Workspace};

/// bpf-linker 0.13 is the newest release that builds with the Rust we have (later releases, like
/// the matching aya, need rustc 1.98).
const BPF_LINKER_VERSION: &str = "0.13";
/// The LLVM majors bpf-linker 0.13 has a feature for (`llvm-21` ...).
const BPF_LINKER_LLVM_MAJORS: [u32; 3] = [21, 22, 23];

/// The commands that set up before they run, by what they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// `cargo xtask build`: the eBPF toolchain (nightly rust-src, bpf-linker).
    Build,
    /// `cargo xtask run`: the build, and a C compiler for the demo workload.
    Run,
    /// `cargo xtask dist`: the build, and binutils to split the debug info off.
    Dist,
    /// `cargo xtask vm`: qemu and busybox for the guests.
    Vm,
    /// `cargo xtask bench`: the build, the workloads' compiler, strace to compare with.
    Bench,
    /// `cargo xtask test`: everything the test suite and the kernel matrix use.
    Test,
}

impl Purpose {
    /// What else this purpose includes (the test suite builds, ships and boots guests).
    fn includes(self, other: Self) -> bool {
        self == other
            || matches!(
                (self, other),
                (
                    Self::Run | Self::Dist | Self::Bench | Self::Test,
                    Self::Build
                ) | (Self::Test, Self::Dist | Self::Vm)
            )
    }

    /// Whether the eBPF toolchain is needed (everything but the guests' runner).
    fn builds(self) -> bool {
        self.includes(Self::Build)
    }

    /// The command, as `--for` takes it.
    fn command(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Run => "run",
            Self::Dist => "dist",
            Self::Vm => "vm",
            Self::Bench => "bench",
            Self::Test => "test",
        }
    }
}

use Purpose::{Bench, Dist, Run, Test, Vm};

/// Debian packages, with why and for which purposes ([`Purpose::Test`] takes every package it
/// includes the purposes of, and its own).
const DEBIAN_PACKAGES: &[(&str, &str, &[Purpose])] = &[
    (
        "gcc",
        "the demo's and the benchmark's workloads, the tests' C programs; the fidelity test on gcc",
        &[Run, Bench, Test],
    ),
    (
        "libc6-dev",
        "C headers and libc.a: the workloads, and gcc -static for the container test",
        &[Run, Bench, Test],
    ),
    (
        "gcc-multilib",
        "32-bit programs: the demo's 32-bit parent, the tests' i386 builds",
        &[Run, Test],
    ),
    (
        "strace",
        "the reference tracer in tests and the benchmark",
        &[Bench, Test],
    ),
    (
        "binutils",
        "objcopy and readelf for cargo xtask dist",
        &[Dist],
    ),
    (
        "qemu-system-x86",
        "the kernel matrix's guests (cargo xtask vm)",
        &[Vm],
    ),
    ("busybox-static", "the kernel matrix's initramfs", &[Vm]),
    (
        "golang-go",
        "`go tool pprof` reads the --pprof output in tests",
        &[Test],
    ),
    (
        "chromium",
        "headless Chromium opens the --html report in tests",
        &[Test],
    ),
    ("openssh-server", "the sshd end-to-end test", &[Test]),
    ("openssh-client", "the sshd end-to-end test", &[Test]),
    (
        "debootstrap",
        "the old Debian userland the static-binary and container tests run in",
        &[Test],
    ),
    ("nodejs", "the fidelity test on node", &[Test]),
    (
        "default-jdk-headless",
        "the fidelity test on a JVM",
        &[Test],
    ),
    (
        "python3-numpy",
        "the fidelity test on python3 with numpy",
        &[Test],
    ),
    (
        "python3-pip",
        "installs wasmtime for the fidelity test",
        &[Test],
    ),
    ("git", "the fidelity test on git", &[Test]),
    (
        "libc6-dbg",
        "glibc's DWARF: the symbolizer's tests name libc's frames from it, unit by unit",
        &[Test],
    ),
    (
        "bpftool",
        "the in-flight test plants a stale entry in a map",
        &[Test],
    ),
    (
        "prometheus",
        "a real Prometheus to scrape memtrace's metrics, and promtool to check them",
        &[Test],
    ),
    (
        "postgresql",
        "a real PostgreSQL 15 server to trace",
        &[Test],
    ),
    ("redis-server", "a real Redis server to trace", &[Test]),
    (
        "systemd",
        "systemd-analyze verifies the agent's unit (deploy/systemd)",
        &[Test],
    ),
    (
        "redis-tools",
        "redis-cli and redis-benchmark drive it",
        &[Test],
    ),
];

/// wasmtime's Python package (its runtime with it), from PyPI, for the fidelity test. Pinned so
/// that every machine runs the same wasmtime.
const WASMTIME_PYPI: &str = "wasmtime==50.0.1";
/// Where it goes, under the xtask directory: Debian's pip refuses system-wide installs
/// (PEP 668), and a `--target` directory touches nothing else.
pub const PYTHON_PACKAGES_DIR: &str = "python";

/// The Debian packages `purpose` needs, with why.
fn debian_packages(purpose: Purpose) -> Vec<(&'static str, &'static str)> {
    DEBIAN_PACKAGES
        .iter()
        .filter(|(_, _, purposes)| purposes.iter().any(|&needed| purpose.includes(needed)))
        .map(|(name, why, _)| (*name, *why))
        .collect()
}

/// Installs what `purpose` needs.
pub fn setup(workspace: &Workspace, purpose: Purpose) -> Result<()> {
    if purpose.builds() {
        let nightly_sysroot =
            ensure_nightly_with_rust_src().context("setting up the nightly toolchain")?;
        ensure_bpf_linker(workspace, &nightly_sysroot).context("setting up bpf-linker")?;
    }
    ensure_debian_packages(purpose).context("setting up Debian packages")?;
    if purpose == Test {
        ensure_wasmtime(workspace).context("installing wasmtime from PyPI")?;
    }
    Ok(())
}

/// Says what [`setup`] would install for `purpose`, installing nothing.
pub fn explain(workspace: &Workspace, purpose: Purpose) -> Result<()> {
    cmd::step(format!(
        "what `cargo xtask {}` sets up (--dry-run: nothing is installed):",
        purpose.command()
    ));
    if purpose.builds() {
        let nightly = cmd::probe(
            Command::new("rustc")
                .args(["+nightly", "--print", "sysroot"])
                .env("RUSTUP_AUTO_INSTALL", "0"),
        );
        let rust_src = nightly.as_deref().is_some_and(|sysroot| {
            Path::new(sysroot.trim())
                .join("lib/rustlib/src/rust/library")
                .is_dir()
        });
        println!("  nightly with rust-src: {}", present(rust_src));
        let linker =
            cmd::probe(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"]))
                .is_some_and(|version| {
                    version.starts_with(&format!("bpf-linker {BPF_LINKER_VERSION}."))
                });
        println!("  bpf-linker {BPF_LINKER_VERSION}: {}", present(linker));
    }
    for (name, why) in debian_packages(purpose) {
        println!(
            "  Debian package {name}: {} ({why})",
            present(debian_package_installed(name))
        );
    }
    if purpose == Test {
        println!(
            "  {WASMTIME_PYPI} (PyPI): {}",
            present(wasmtime_installed(workspace))
        );
    }
    Ok(())
}

fn present(installed: bool) -> &'static str {
    if installed {
        "installed"
    } else {
        "missing, would be installed"
    }
}

fn wasmtime_installed(workspace: &Workspace) -> bool {
    let (name, version) = WASMTIME_PYPI
        .split_once("==")
        .unwrap_or((WASMTIME_PYPI, ""));
    workspace
        .xtask_dir()
        .join(PYTHON_PACKAGES_DIR)
        .join(format!("{name}-{version}.dist-info"))
        .is_dir()
}

fn ensure_wasmtime(workspace: &Workspace) -> Result<()> {
    let target = workspace.xtask_dir().join(PYTHON_PACKAGES_DIR);
    if wasmtime_installed(workspace) {
        cmd::step(format!("{WASMTIME_PYPI}: already installed"));
        return Ok(());
    }
    cmd::step(format!(
        "installing {WASMTIME_PYPI} into {}",
        target.display()
    ));
    cmd::run(
        Command::new("/usr/bin/python3")
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .arg("--target")
            .arg(&target)
            .arg(WASMTIME_PYPI),
    )
}

/// The eBPF programs build with nightly and `-Z build-std=core`, which needs nightly's rust-src.
/// Returns nightly's sysroot.
fn ensure_nightly_with_rust_src() -> Result<PathBuf> {
    // The toolchain must be called exactly "nightly": aya-build runs `rustup run nightly`.
    // RUSTUP_AUTO_INSTALL=0 keeps this a question rather than an implicit install.
    let nightly_installed = cmd::probe(
        Command::new("rustc")
            .args(["+nightly", "--version"])
            .env("RUSTUP_AUTO_INSTALL", "0"),
    )
    .is_some();
    if !nightly_installed {
        cmd::step("installing the nightly toolchain (minimal, with rust-src) for the eBPF build");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }

    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library").is_dir() {
        cmd::step("nightly rust-src: already installed");
    } else {
        cmd::step("adding rust-src to nightly (the eBPF build compiles core from source)");
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(sysroot)
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = cmd::read_stdout(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(PathBuf::from(sysroot.trim()))
}

/// bpf-linker links the eBPF programs. It is built against nightly's own libLLVM, so the LLVM
/// that rustc emits bitcode for is exactly the one that links it.
fn ensure_bpf_linker(workspace: &Workspace, nightly_sysroot: &Path) -> Result<()> {
    // aya-build runs the eBPF build under `rustup run nightly`, which puts nightly's lib/ (and
    // its libLLVM) on LD_LIBRARY_PATH; probing the same way checks that bpf-linker both exists
    // and loads that libLLVM.
    let mut probe = Command::new("rustup");
    probe.args(["run", "nightly", "bpf-linker", "--version"]);
    let installed = match cmd::capture(&mut probe) {
        _ if privilege::find_in_path("bpf-linker").is_none() => "not installed".to_owned(),
        Err(error) => format!("could not be probed ({error})"),
        Ok(output) if output.status.success() => {
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let wanted = format!("bpf-linker {BPF_LINKER_VERSION}.");
            if version.starts_with(&wanted) {
                cmd::step(format!("{version}: already installed"));
                return Ok(());
            }
            format!("found {version:?}")
        }
        // Usually "libLLVM... cannot open shared object file": nightly was updated since
        // bpf-linker was built.
        Ok(output) => format!(
            "does not run ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    };

    let llvm_major = nightly_llvm_major()?;
    if !BPF_LINKER_LLVM_MAJORS.contains(&llvm_major) {
        bail!(
            "nightly uses LLVM {llvm_major}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM \
             {BPF_LINKER_LLVM_MAJORS:?}: install a nightly with one of those"
        );
    }
    let llvm_prefix = link_nightly_llvm(workspace, nightly_sysroot, llvm_major)?;

    cmd::step(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm_major} \
         (bpf-linker {installed}; takes a few minutes)"
    ));
    cmd::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm_major}"))
            // Its own lockfile: the newest dependencies may need a newer rustc than ours.
            // --force: replace a same-version install that no longer loads its libLLVM.
            .args(["--locked", "--force"])
            .env("LLVM_PREFIX", &llvm_prefix),
    )?;

    let version = cmd::probe(&mut probe).unwrap_or_default();
    if !version.starts_with(&format!("bpf-linker {BPF_LINKER_VERSION}.")) {
        bail!(
            "bpf-linker was installed, but `rustup run nightly bpf-linker --version` reports \
             {:?}: is cargo's bin directory (~/.cargo/bin) first on PATH?",
            version.trim()
        );
    }
    Ok(())
}

/// The LLVM major version nightly's rustc was built with ("LLVM version: 22.1.4").
fn nightly_llvm_major() -> Result<u32> {
    let version =
        cmd::read_stdout(Command::new("rustc").args(["+nightly", "--version", "--verbose"]))?;
    let llvm = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .context("`rustc +nightly -vV` does not say which LLVM it uses")?
        .trim();
    let major = llvm.split('.').next().unwrap_or(llvm);
    major
        .parse()
        .with_context(|| format!("parsing nightly's LLVM version {llvm:?}"))
}

/// Builds an LLVM prefix whose lib/ holds nightly's libLLVM under the names bpf-linker's build
/// looks for: `libLLVM.so` to link against, and the library's own soname for the rpath the
/// build records, so the installed binary also runs outside `rustup run`.
fn link_nightly_llvm(
    workspace: &Workspace,
    nightly_sysroot: &Path,
    llvm_major: u32,
) -> Result<PathBuf> {
    let sysroot_lib = nightly_sysroot.join("lib");
    let soname_prefix = format!("libLLVM.so.{llvm_major}.");
    let soname = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("listing {}", sysroot_lib.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| {
            name.starts_with(&soname_prefix)
                && name.contains("-rust-")
                && name.ends_with("-nightly")
        })
        .with_context(|| {
            format!(
                "nightly ships no {soname_prefix}*-rust-*-nightly in {}",
                sysroot_lib.display()
            )
        })?;
    let library = sysroot_lib.join(&soname);

    let prefix = workspace.xtask_dir().join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = prefix_lib.join(name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("replacing {}", link.display()))?;
        }
        symlink(&library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), library.display()))?;
    }
    Ok(prefix)
}

fn ensure_debian_packages(purpose: Purpose) -> Result<()> {
    let packages = debian_packages(purpose);
    if packages.is_empty() {
        return Ok(());
    }
    let names = || packages.iter().map(|(name, _)| *name);
    if privilege::find_in_path("dpkg-query").is_none() {
        bail!(
            "this is not a Debian system (no dpkg-query): install {} by hand",
            package_list(names())
        );
    }
    let missing: Vec<&str> = names()
        .filter(|name| !debian_package_installed(name))
        .collect();
    if missing.is_empty() {
        cmd::step(format!(
            "Debian packages {}: already installed",
            package_list(names())
        ));
        return Ok(());
    }
    if !privilege::is_root()? {
        bail!(
            "setup needs root to install missing Debian packages with apt-get: {} \
             (run `cargo xtask setup` as root, or `sudo apt-get install {}`)",
            package_list(missing.iter().copied()),
            missing.join(" ")
        );
    }

    let reasons: Vec<String> = packages
        .iter()
        .filter(|(name, _)| missing.contains(name))
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    cmd::step(format!(
        "installing Debian packages: {}",
        reasons.join(", ")
    ));
    cmd::run(apt_get().arg("update"))?;
    cmd::run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

fn debian_package_installed(name: &str) -> bool {
    cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

/// apt-get that never asks: CI has no stdin.
fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn package_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}
