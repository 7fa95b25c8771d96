//! An old Debian userland to run programs in: Debian 11 "bullseye" (glibc 2.31), made once with
//! `debootstrap --variant=minbase` from the mirror this machine's apt uses, and cached under
//! `target/` between runs. The old userland is the point: it is what servers run, and its
//! files differ from the host's at the same paths.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::Command,
};

use crate::workspace_root;

const SUITE: &str = "bullseye";

/// The root directory of the cached Debian 11 minbase userland, built on first use.
///
/// Test binaries run in parallel and each may ask for it: a lock file serializes the build, and
/// the root is built in a side directory and renamed into place, so a root that exists is whole
/// (an interrupted debootstrap leaves only the side directory, removed by the next attempt).
#[track_caller]
pub fn debian_root() -> PathBuf {
    let cache = workspace_root().join("target").join("debian-root");
    fs::create_dir_all(&cache).unwrap();
    let root = cache.join(SUITE);
    let lock = File::create(cache.join(format!("{SUITE}.lock"))).unwrap();
    lock.lock().expect("locking the Debian root's cache");
    if !root.join("bin/bash").exists() {
        let partial = cache.join(format!("{SUITE}.partial"));
        let _ = fs::remove_dir_all(&partial);
        let mirror = apt_mirror();
        let output = Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(&partial)
            .arg(&mirror)
            .output()
            .expect("running debootstrap (cargo xtask setup installs it)");
        assert!(
            output.status.success(),
            "debootstrap {SUITE} from {mirror} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        fs::rename(&partial, &root).unwrap();
    }
    root
}

/// The Debian mirror apt uses here: the first `URIs:` (deb822) or `deb URI` (one-line) source
/// of the main archive, not of the security archive.
#[track_caller]
fn apt_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut listed: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        listed.sort();
        files.extend(listed);
    }
    files
        .iter()
        .filter(|path| is_source_file(path))
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| {
                    let line = line.trim();
                    match line.strip_prefix("URIs:") {
                        Some(uris) => uris.split_whitespace().next().map(str::to_string),
                        None => line
                            .strip_prefix("deb ")
                            .and_then(|rest| {
                                rest.split_whitespace().find(|word| word.contains("://"))
                            })
                            .map(str::to_string),
                    }
                })
                .collect::<Vec<_>>()
        })
        .find(|uri| uri.trim_end_matches('/').ends_with("/debian"))
        .expect("no Debian archive in /etc/apt/sources.list*: debootstrap needs a mirror")
}

fn is_source_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "sources.list" || name.ends_with(".list") || name.ends_with(".sources")
}
