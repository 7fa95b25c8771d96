//! What must hold before loading: privileges and a kernel that can run the programs. Each
//! failure is one line that says what is missing and what to do, instead of an `EPERM` from
//! deep inside the loader.

use std::path::Path;

use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};

/// BPF ring buffers (5.8), BTF in sysfs, and the user-memory helpers the programs use. Only
/// 6.18 is tested; on a kernel whose tracepoints lack an argument the programs read, attaching
/// fails with the verifier's own explanation.
pub const MINIMUM_KERNEL: (u32, u32) = (5, 17);
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("memtrace needs root, or the {0} capabilities: run it with sudo")]
    MissingCapabilities(String),
    #[error("memtrace needs Linux {}.{} or newer (BPF ring buffers, BTF); this kernel is {release}", .minimum.0, .minimum.1)]
    KernelTooOld {
        minimum: (u32, u32),
        release: String,
    },
    #[error("this kernel has no BTF ({KERNEL_BTF}): memtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoBtf,
    #[error("reading {0}: {1}")]
    Io(&'static str, std::io::Error),
}

pub fn check() -> Result<(), PreflightError> {
    check_capabilities()?;
    check_kernel_release(&kernel_release())?;
    if !Path::new(KERNEL_BTF).exists() {
        return Err(PreflightError::NoBtf);
    }
    Ok(())
}

fn check_capabilities() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| PreflightError::Io("/proc/self/status", e))?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    // Before CAP_BPF and CAP_PERFMON existed, CAP_SYS_ADMIN covered both.
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingCapabilities(missing.join(" and ")))
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from("unknown"))
}

pub fn check_kernel_release(release: &str) -> Result<(), PreflightError> {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < MINIMUM_KERNEL {
        return Err(PreflightError::KernelTooOld {
            minimum: MINIMUM_KERNEL,
            release: release.to_string(),
        });
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK; later ones ignore it.
pub fn raise_memlock_limit() {
    if let Err(error) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_gate() {
        assert!(check_kernel_release("6.18.44-fc-v769").is_ok());
        assert!(check_kernel_release("5.17.0").is_ok());
        let error = check_kernel_release("5.10.0-28-amd64").unwrap_err();
        assert_eq!(
            error.to_string(),
            "memtrace needs Linux 5.17 or newer (BPF ring buffers, BTF); this kernel is 5.10.0-28-amd64"
        );
        assert!(check_kernel_release("garbage").is_err());
    }
}
