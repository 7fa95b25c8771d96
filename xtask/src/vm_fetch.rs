//! The Debian kernels the VM matrix boots, and fetching them: `apt-get download` through a
//! private apt configuration under target/vm/apt, so suites this machine does not list
//! (bullseye-security, trixie-backports...) can be fetched while the machine's own apt set-up
//! (sources, lists, cache, status) stays exactly as it is.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, workspace::Workspace};

/// Which Debian archive a suite lives in: security suites have their own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Archive {
    Main,
    Security,
}

/// One Debian kernel of the matrix. The packages are pinned by exact name, so a test run is
/// reproducible; when the archive drops one, bump it here to the suite's newest.
pub struct Kernel {
    /// What `--kernel` takes: the upstream series.
    pub label: &'static str,
    /// The packages with /boot/vmlinuz-* and the modules, unpacked into one directory: one
    /// package up to 6.x, two from 7.x, when Debian split the image (`linux-binary-*`) from
    /// the modules (`linux-modules-*`). The first names the kernel in reports.
    pub packages: &'static [&'static str],
    suite: &'static str,
    archive: Archive,
    /// Who runs this kernel, for `cargo xtask vm --list`.
    pub why: &'static str,
    /// Whether memtrace's fentry backend loads on it (the guests allow ftrace). 5.10's BTF
    /// gives some syscall functions' `pt_regs` argument as a forward declaration, which the
    /// verifier refuses (probes/kernel_differences.rs).
    pub fentry: bool,
}

pub const KERNELS: [Kernel; 5] = [
    Kernel {
        label: "5.10",
        packages: &["linux-image-5.10.0-46-amd64"],
        suite: "bullseye-security",
        archive: Archive::Security,
        why: "Debian 11; the oldest supported",
        fentry: false,
    },
    Kernel {
        label: "6.1",
        packages: &["linux-image-6.1.0-56-amd64"],
        suite: "bookworm",
        archive: Archive::Main,
        why: "Debian 12's default",
        fentry: true,
    },
    Kernel {
        label: "6.12",
        packages: &["linux-image-6.12.117+deb12-amd64"],
        suite: "bookworm-security",
        archive: Archive::Security,
        why: "Debian 13, RHEL 10",
        fentry: true,
    },
    Kernel {
        label: "6.18",
        packages: &["linux-image-6.18.15+deb13-amd64"],
        suite: "trixie-backports",
        archive: Archive::Main,
        why: "trixie-backports; this machine's series",
        fentry: true,
    },
    Kernel {
        label: "7.2",
        packages: &[
            "linux-binary-7.2.13+deb14-amd64",
            "linux-modules-7.2.13+deb14-amd64",
        ],
        suite: "sid",
        archive: Archive::Main,
        why: "Debian's newest (sid)",
        fentry: true,
    },
];

impl Kernel {
    /// The package that names this kernel.
    pub fn package(&self) -> &'static str {
        self.packages[0]
    }
}

pub fn find(label: &str) -> Result<&'static Kernel> {
    KERNELS
        .iter()
        .find(|kernel| kernel.label == label)
        .with_context(|| {
            let labels: Vec<&str> = KERNELS.iter().map(|kernel| kernel.label).collect();
            format!(
                "no kernel {label:?} in the matrix (known: {})",
                labels.join(", ")
            )
        })
}

/// A kernel package unpacked on disk.
pub struct Unpacked {
    pub vmlinuz: PathBuf,
    /// lib/modules/<release> inside the package.
    pub modules: PathBuf,
}

/// Downloads (once) and unpacks (once) a kernel's packages under target/vm.
pub fn fetch(workspace: &Workspace, kernel: &Kernel) -> Result<Unpacked> {
    let vm_dir = vm_dir(workspace);
    let root = vm_dir.join("kernels").join(kernel.package());
    let stamp = root.join(".unpacked");
    if !stamp.exists() {
        let mut debs = Vec::new();
        for package in kernel.packages {
            debs.push(download(&vm_dir, kernel, package)?);
        }
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
        }
        // dpkg-deb makes the last directory only: a fresh checkout has no target/vm/kernels.
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        for (package, deb) in kernel.packages.iter().zip(&debs) {
            cmd::step(format!("unpacking {package}"));
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
        }
        fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))?;
    }
    unpacked(&root)
}

pub fn vm_dir(workspace: &Workspace) -> PathBuf {
    workspace.target_dir.join("vm")
}

fn download(vm_dir: &Path, kernel: &Kernel, package: &str) -> Result<PathBuf> {
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    if let Some(deb) = find_deb(&debs, package)? {
        return Ok(deb);
    }
    let apt = PrivateApt::create(&vm_dir.join("apt"))?;
    cmd::step(format!("downloading {package} from {}", kernel.suite));
    cmd::run(apt.command("apt-get").arg("update"))?;
    cmd::run(
        apt.command("apt-get")
            .current_dir(&debs)
            .arg("download")
            .arg(package),
    )?;
    find_deb(&debs, package)?.with_context(|| format!("apt-get download left no {package}_*.deb"))
}

fn find_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(debs).with_context(|| format!("listing {}", debs.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Finds the kernel image and the modules directory: Debian moved modules from /lib/modules
/// to /usr/lib/modules with the /usr merge (trixie), so both layouts occur; from 7.x the image
/// is no longer /boot/vmlinuz-RELEASE but lives beside the modules (.../RELEASE/vmlinuz).
fn unpacked(root: &Path) -> Result<Unpacked> {
    let module_dirs = ["lib/modules", "usr/lib/modules"];
    let boot = root.join("boot");
    let in_boot = fs::read_dir(&boot).ok().and_then(|entries| {
        entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("vmlinuz-"))
            })
    });
    if let Some(vmlinuz) = in_boot {
        let release = vmlinuz
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_owned();
        let modules = module_dirs
            .iter()
            .map(|dir| root.join(dir).join(&release))
            .find(|dir| dir.is_dir())
            .with_context(|| format!("no modules for {release} in {}", root.display()))?;
        return Ok(Unpacked { vmlinuz, modules });
    }
    for dir in module_dirs {
        let Ok(releases) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for release in releases.filter_map(|entry| entry.ok()) {
            let vmlinuz = release.path().join("vmlinuz");
            if vmlinuz.is_file() {
                return Ok(Unpacked {
                    vmlinuz,
                    modules: release.path(),
                });
            }
        }
    }
    bail!(
        "no kernel image (boot/vmlinuz-* or lib/modules/*/vmlinuz) in {}",
        root.display()
    )
}

/// An apt configuration of our own: its sources list the suites of the matrix on the mirror
/// this machine's apt already uses; its lists, cache and dpkg status are private too.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn create(dir: &Path) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        // An empty dpkg status: nothing counts as installed, and the real one is never read.
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        }
        let mirror = Mirror::from_machine()?;
        let mut sources = String::new();
        for kernel in &KERNELS {
            let uri = match kernel.archive {
                Archive::Main => &mirror.main,
                Archive::Security => &mirror.security,
            };
            let line = format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {} main\n",
                kernel.suite
            );
            if !sources.contains(&line) {
                sources.push_str(&line);
            }
        }
        let list = dir.join("sources.list");
        fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let dir = |sub: &str| self.dir.join(sub).display().to_string();
        for (option, value) in [
            ("Dir::Etc::SourceList", dir("sources.list")),
            ("Dir::Etc::SourceParts", dir("sources.list.d")),
            ("Dir::State::Lists", dir("lists")),
            ("Dir::Cache", dir("cache")),
            ("Dir::State::status", dir("status")),
            ("APT::Architecture", "amd64".to_owned()),
            // Only the kernel's Packages index: no translations or AppStream data.
            ("Acquire::Languages", "none".to_owned()),
            (
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
                "false".to_owned(),
            ),
            // Files land in target/, which apt's unprivileged _apt user may not be able to
            // write; as root, fetch as root rather than warn on every file.
            ("APT::Sandbox::User", "root".to_owned()),
        ] {
            command.arg("-o").arg(format!("{option}={value}"));
        }
        command
    }
}

/// The Debian archive and security archive URIs this machine's apt uses.
struct Mirror {
    main: String,
    security: String,
}

impl Mirror {
    /// Reads the URIs from /etc/apt/sources.list and sources.list.d (both the one-line and the
    /// deb822 formats): the first ending in /debian, and one ending in /debian-security (or
    /// the main one's host with /debian-security).
    fn from_machine() -> Result<Self> {
        let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut parts: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect();
            parts.sort();
            files.extend(parts);
        }
        let mut uris = Vec::new();
        for file in files {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            uris.extend(uris_in(&text));
        }
        let main = uris
            .iter()
            .find(|uri| uri.ends_with("/debian"))
            .cloned()
            .context(
                "this machine's apt sources name no Debian mirror (a URI ending in /debian)",
            )?;
        let security = uris
            .iter()
            .find(|uri| uri.ends_with("/debian-security"))
            .cloned()
            .unwrap_or_else(|| format!("{main}-security"));
        Ok(Self { main, security })
    }
}

/// The repository URIs in an apt sources file, trailing slashes removed.
fn uris_in(text: &str) -> Vec<String> {
    let mut uris = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
            rest.split_whitespace().collect()
        } else if line.starts_with("deb ") {
            // `deb [options] uri suite components`: the URI is the first word after the options.
            let rest = line.trim_start_matches("deb ").trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(options) => options.split_once(']').map_or("", |(_, rest)| rest),
                None => rest,
            };
            rest.split_whitespace().take(1).collect()
        } else {
            continue;
        };
        uris.extend(words.iter().map(|uri| uri.trim_end_matches('/').to_owned()));
    }
    uris
}

/// `dpkg-deb` and `apt-get` must exist: this is a Debian-only facility.
pub fn check_tools() -> Result<()> {
    for tool in ["apt-get", "dpkg-deb", "qemu-system-x86_64", "busybox"] {
        if crate::privilege::find_in_path(tool).is_none() {
            bail!("the VM runner needs {tool} (run `cargo xtask setup --for vm` on Debian)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::uris_in;

    #[test]
    fn reads_uris_from_both_source_formats() {
        let text = "# deb http://commented/debian x main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x\n";
        assert_eq!(
            uris_in(text),
            [
                "http://mirror.example/debian",
                "http://mirror.example/debian-security"
            ]
        );
    }
}
