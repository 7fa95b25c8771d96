//! `cargo xtask setup`: installs what building and testing memtrace need, skipping whatever is
//! already there, so it is cheap to run before every build.

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

/// Debian packages the tests and the benchmark use, with why.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("gcc-multilib", "32-bit test programs"),
    ("strace", "the reference tracer in tests and the benchmark"),
    (
        "golang-go",
        "`go tool pprof` reads the --pprof output in tests",
    ),
    (
        "chromium",
        "headless Chromium opens the --html report in tests",
    ),
    (
        "postgresql",
        "the reports test traces a throw-away PostgreSQL cluster under pgbench",
    ),
    ("openssh-server", "the sshd end-to-end test"),
    ("openssh-client", "the sshd end-to-end test"),
    ("binutils", "objcopy and readelf for cargo xtask dist"),
    (
        "debootstrap",
        "the old Debian userland the static-binary and container tests run in",
    ),
    (
        "qemu-system-x86",
        "the kernel matrix's guests (cargo xtask vm)",
    ),
    ("busybox-static", "the kernel matrix's initramfs"),
    ("nodejs", "the fidelity test on node"),
    ("default-jdk-headless", "the fidelity test on a JVM"),
    ("python3-numpy", "the fidelity test on python3 with numpy"),
    ("python3-pip", "installs wasmtime for the fidelity test"),
    ("gcc", "the fidelity test on gcc"),
    (
        "libc6-dev",
        "gcc -static (libc.a): the container test's program built to run on an older glibc",
    ),
    ("git", "the fidelity test on git"),
    (
        "libc6-dbg",
        "glibc's DWARF: the symbolizer's tests name libc's frames from it, unit by unit",
    ),
    (
        "bpftool",
        "the in-flight test plants a stale entry in a map",
    ),
];

/// wasmtime's Python package (its runtime with it), from PyPI, for the fidelity test. Pinned so
/// that every machine runs the same wasmtime.
const WASMTIME_PYPI: &str = "wasmtime==50.0.1";
/// Where it goes, under the xtask directory: Debian's pip refuses system-wide installs
/// (PEP 668), and a `--target` directory touches nothing else.
pub const PYTHON_PACKAGES_DIR: &str = "python";

pub fn setup(workspace: &Workspace) -> Result<()> {
    let nightly_sysroot =
        ensure_nightly_with_rust_src().context("setting up the nightly toolchain")?;
    ensure_bpf_linker(workspace, &nightly_sysroot).context("setting up bpf-linker")?;
    ensure_debian_packages().context("setting up Debian packages")?;
    ensure_wasmtime(workspace).context("installing wasmtime from PyPI")?;
    Ok(())
}

fn ensure_wasmtime(workspace: &Workspace) -> Result<()> {
    let target = workspace.xtask_dir().join(PYTHON_PACKAGES_DIR);
    let (name, version) = WASMTIME_PYPI
        .split_once("==")
        .unwrap_or((WASMTIME_PYPI, ""));
    if target.join(format!("{name}-{version}.dist-info")).is_dir() {
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

fn ensure_debian_packages() -> Result<()> {
    if privilege::find_in_path("dpkg-query").is_none() {
        bail!(
            "this is not a Debian system (no dpkg-query): install {} by hand",
            package_list(DEBIAN_PACKAGES.iter().map(|(name, _)| *name))
        );
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !debian_package_installed(name))
        .collect();
    if missing.is_empty() {
        cmd::step(format!(
            "Debian packages {}: already installed",
            package_list(DEBIAN_PACKAGES.iter().map(|(name, _)| *name))
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

    let reasons: Vec<String> = DEBIAN_PACKAGES
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
