//! What must hold before loading: privileges and a kernel that can run the programs. Each
//! failure is one line that says what is missing and what to do, instead of an `EPERM` from
//! deep inside the loader.

use std::path::Path;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, BpfHelper},
};
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};

/// The oldest mainline kernel with everything the programs use: BPF ring buffers (5.8), BTF in
/// sysfs (5.5), bpf_probe_read_{kernel,user}[_str] (5.5), raw tracepoints (4.17). It only words
/// the message: what decides is probing the kernel itself, since distribution kernels backport
/// these (RHEL 8's 4.18 has ring buffers). Tested oldest: Debian 11's 5.10 (see README).
pub const MINIMUM_KERNEL: (u32, u32) = (5, 8);
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("memtrace needs root, or the {0} capabilities: run it with sudo")]
    MissingCapabilities(String),
    #[error("this kernel ({release}) lacks {}: memtrace needs Linux {}.{} or newer", .missing.join(", "), MINIMUM_KERNEL.0, MINIMUM_KERNEL.1)]
    KernelTooOld {
        release: String,
        /// What the probes found missing, each with the release that brought it.
        missing: Vec<&'static str>,
    },
    #[error("this kernel has no BTF ({KERNEL_BTF}): memtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoBtf,
    #[error("reading {0}: {1}")]
    Io(&'static str, std::io::Error),
}

pub fn check() -> Result<(), PreflightError> {
    check_capabilities()?;
    let missing = missing_features();
    if !missing.is_empty() {
        return Err(PreflightError::KernelTooOld {
            release: kernel_release(),
            missing,
        });
    }
    if !Path::new(KERNEL_BTF).exists() {
        return Err(PreflightError::NoBtf);
    }
    Ok(())
}

/// What the programs use that this kernel lacks, found by asking the kernel (aya loads a
/// minimal map or program per feature, as libbpf's probes do). A probe that cannot run at all
/// (no bpf() syscall) counts as missing.
fn missing_features() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !is_map_supported(MapType::RingBuf).unwrap_or(false) {
        missing.push("BPF ring buffers (Linux 5.8)");
    }
    let helpers = [
        (
            BpfHelper::BPF_FUNC_probe_read_kernel,
            "bpf_probe_read_kernel (Linux 5.5)",
        ),
        (
            BpfHelper::BPF_FUNC_probe_read_user,
            "bpf_probe_read_user (Linux 5.5)",
        ),
        (
            BpfHelper::BPF_FUNC_probe_read_user_str,
            "bpf_probe_read_user_str (Linux 5.5)",
        ),
        (
            BpfHelper::BPF_FUNC_ringbuf_reserve,
            "bpf_ringbuf_reserve (Linux 5.8)",
        ),
    ];
    for (helper, what) in helpers {
        if !is_helper_supported(ProgramType::RawTracePoint, helper).unwrap_or(false) {
            missing.push(what);
        }
    }
    missing
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
    fn a_kernel_too_old_is_one_line_naming_what_it_lacks() {
        let error = PreflightError::KernelTooOld {
            release: "4.19.0-27-amd64".to_owned(),
            missing: vec![
                "BPF ring buffers (Linux 5.8)",
                "bpf_ringbuf_reserve (Linux 5.8)",
            ],
        };
        assert_eq!(
            error.to_string(),
            "this kernel (4.19.0-27-amd64) lacks BPF ring buffers (Linux 5.8), \
             bpf_ringbuf_reserve (Linux 5.8): memtrace needs Linux 5.8 or newer"
        );
    }

    #[test]
    fn this_kernel_has_every_feature() {
        // Root only: probing loads BPF programs. This machine's kernel is new enough.
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root: feature probing must be tested"
            );
            return;
        }
        assert_eq!(missing_features(), Vec::<&str>::new());
    }
}
