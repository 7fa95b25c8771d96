//! The running kernel's BTF as loading uses it, in user mode and kernel mode alike: parsed into
//! each of the two forms loading needs at most once, one after the other, each dropped as soon
//! as it has served (the kernel's BTF takes tens of MiB parsed, which would otherwise stay in
//! memtrace's RSS for the whole session):
//! - btf-rs's ([`super::btf`]) answers memtrace's own questions (struct offsets, tracepoint
//!   prototypes), and is dropped before aya's is made;
//! - aya's is what aya loads programs that attach by BTF id with (fentry/fexit, BTF
//!   tracepoints) and relocates with; the caller drops it once every program is attached.

use aya::{Btf as AyaBtf, EbpfLoader};

use super::{btf, ProbeError};

/// Lets `ask` question the kernel's BTF, and returns its answers.
pub(crate) fn answers<T>(
    ask: impl FnOnce(&btf::Btf) -> Result<T, ProbeError>,
) -> Result<T, ProbeError> {
    ask(&btf::Btf::vmlinux()?)
}

/// aya's program loader, without a BTF of its own. aya 0.14's `EbpfLoader::new()` parses
/// /sys/kernel/btf/vmlinux itself, always (and offers no constructor that does not): its copy
/// is freed at once. Make the loader after [`aya_form`]: the copy, the last thing allocated, is
/// then freed from the top of the heap, which the allocator gives back to the system (made
/// first, it leaves a hole under the programs' data that stays in RSS: 4 MiB measured). Hand
/// the loader [`aya_form`]'s with `.btf(Some(..))`.
pub(crate) fn loader<'a>() -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    loader
}

/// aya's form of the kernel's BTF.
pub(crate) fn aya_form() -> Result<AyaBtf, ProbeError> {
    AyaBtf::from_sys_fs().map_err(|e| ProbeError::Load(e.into()))
}
