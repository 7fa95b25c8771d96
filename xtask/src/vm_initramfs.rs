//! The guest's initramfs: busybox, the few modules needed to reach this machine's root (Debian
//! builds virtio-pci, 9p and overlayfs as modules), and an /init that mounts that root
//! read-only over virtio-9p with a tmpfs overlay on top and `switch_root`s into it. switch_root
//! rather than chroot: under a chroot the kernel would report paths (/proc/PID/maps, exe links)
//! relative to the initramfs, not the host's paths the tests expect.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, vm_fetch::Unpacked};

/// The virtio-9p mount tag of the host's root.
pub const ROOT_TAG: &str = "hostroot";

/// The modules /init loads, before their dependencies are added.
const WANTED_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// The guest's first process. Kernel parameters the kernel does not know (`xtask_vm_script=`)
/// reach it as environment variables.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules/order); do
    insmod /modules/$module.ko || echo "xtask-vm: insmod $module failed"
done
mkdir -p /lower /upper /newroot
# cache=loose: the host's root does not change under a running guest, and reading binaries
# over 9p is slow under emulation.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
    || echo "xtask-vm: mounting the host's root over 9p failed"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot \
    || echo "xtask-vm: mounting the overlay failed"
umount /proc /sys /dev
exec switch_root /newroot /bin/sh "$xtask_vm_script"
"#;

/// Builds (once per kernel) the initramfs for an unpacked kernel, next to it.
pub fn build(kernel: &Unpacked, out: &Path) -> Result<PathBuf> {
    let image = out.join("initramfs.cpio");
    if image.exists() {
        return Ok(image);
    }
    let staging = out.join("initramfs");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("clearing {}", staging.display()))?;
    }
    for dir in ["bin", "modules", "proc", "sys", "dev"] {
        fs::create_dir_all(staging.join(dir))
            .with_context(|| format!("creating {}", staging.join(dir).display()))?;
    }
    let busybox = crate::privilege::find_in_path("busybox").context("busybox is not installed")?;
    fs::copy(&busybox, staging.join("bin/busybox")).context("copying busybox")?;
    write_executable(&staging.join("init"), INIT)?;

    let order = module_load_order(&kernel.modules)?;
    let mut names = Vec::new();
    for (name, path) in &order {
        let bytes = decompressed(path)?;
        fs::write(staging.join("modules").join(format!("{name}.ko")), bytes)
            .with_context(|| format!("writing module {name}"))?;
        names.push(name.as_str());
    }
    fs::write(staging.join("modules/order"), names.join("\n"))
        .context("writing the module order")?;

    cmd::step(format!(
        "building the initramfs {} (modules: {})",
        image.display(),
        names.join(" ")
    ));
    let partial = out.join("initramfs.cpio.partial");
    write_cpio(&staging, &partial)?;
    fs::rename(&partial, &image).with_context(|| format!("writing {}", image.display()))?;
    Ok(image)
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// Packs a directory with `busybox cpio -o -H newc`, the format the kernel unpacks.
fn write_cpio(staging: &Path, image: &Path) -> Result<()> {
    let mut files = Vec::new();
    list_tree(staging, staging, &mut files)?;
    let output =
        fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    let mut child = Command::new("busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(staging)
        .stdin(Stdio::piped())
        .stdout(output)
        .spawn()
        .context("starting busybox cpio")?;
    let mut stdin = child.stdin.take().context("cpio's stdin")?;
    stdin
        .write_all(files.join("\n").as_bytes())
        .context("listing files to cpio")?;
    drop(stdin);
    let status = child.wait().context("waiting for busybox cpio")?;
    if !status.success() {
        bail!("busybox cpio failed ({status})");
    }
    Ok(())
}

fn list_tree(base: &Path, dir: &Path, files: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let relative = path.strip_prefix(base).unwrap_or(&path);
        files.push(relative.display().to_string());
        if path.is_dir() && !path.is_symlink() {
            list_tree(base, &path, files)?;
        }
    }
    Ok(())
}

/// The wanted modules and their dependencies, each after what it depends on, as (name, file).
/// Modules built into the kernel have no file and are left out.
fn module_load_order(modules: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut index = BTreeMap::new();
    index_modules(&modules.join("kernel"), &mut index)?;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in WANTED_MODULES {
        add_with_dependencies(name, &index, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn add_with_dependencies(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let name = canonical_module_name(name);
    if !seen.insert(name.clone()) {
        return Ok(());
    }
    let Some(path) = index.get(&name) else {
        // Built in (CONFIG_...=y): nothing to load.
        return Ok(());
    };
    for dependency in module_dependencies(&decompressed(path)?) {
        add_with_dependencies(&dependency, index, seen, order)?;
    }
    order.push((name, path.clone()));
    Ok(())
}

/// Module names treat `-` and `_` alike; files use either.
fn canonical_module_name(name: &str) -> String {
    name.replace('-', "_")
}

fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
            continue;
        }
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some((stem, _)) = file_name.split_once(".ko") {
            index.insert(canonical_module_name(stem), path.clone());
        }
    }
    Ok(())
}

/// The `depends=` entry of a module's .modinfo section: NUL-separated `key=value` strings.
/// Read directly because kmod's modinfo is not installed here and the format is this simple.
fn module_dependencies(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(start) = module
        .windows(KEY.len())
        .position(|window| window == KEY)
        .map(|at| at + KEY.len())
    else {
        return Vec::new();
    };
    let value = &module[start..];
    let end = value
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A module file's contents, decompressed: Debian compresses modules with xz since 6.x (and
/// may use zstd); busybox's insmod loads only plain ELF.
fn decompressed(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let mut command = if name.ends_with(".ko.xz") {
        let mut command = Command::new("busybox");
        command.args(["xz", "-dc"]).arg(path);
        command
    } else if name.ends_with(".ko.zst") {
        let mut command = Command::new("zstd");
        command.args(["-dc", "-q"]).arg(path);
        command
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let output =
        cmd::capture(&mut command).with_context(|| format!("decompressing {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "decompressing {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::module_dependencies;

    #[test]
    fn reads_the_depends_entry_of_modinfo() {
        let modinfo = b"\x7fELF...\0license=GPL\0depends=netfs,9pnet\0intree=Y\0";
        assert_eq!(module_dependencies(modinfo), ["netfs", "9pnet"]);
        assert!(module_dependencies(b"\0depends=\0").is_empty());
    }
}
