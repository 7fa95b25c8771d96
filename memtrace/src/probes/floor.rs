//! The kernel hook's own cost, for `cargo xtask bench`: the eBPF object's two empty programs
//! (`floor_enter`, `floor_exit`) attached to `sys_enter`/`sys_exit`, and nothing else.
//!
//! A raw tracepoint on these hooks puts every syscall of every process on the kernel's slow
//! path, whatever the program does; memtrace's own programs can only add to that. The bench
//! runs its workloads under this floor and under memtrace in the same run and prints the ratio.

use aya::programs::RawTracePoint;

use super::{load_object, program_of, ProbeError, ProbeOptions};

const FLOOR_PROGRAMS: [(&str, &str); 2] =
    [("floor_enter", "sys_enter"), ("floor_exit", "sys_exit")];

/// The attached empty programs. Dropping it detaches them.
pub struct HookFloor {
    _ebpf: aya::Ebpf,
}

impl HookFloor {
    pub fn attach() -> Result<Self, ProbeError> {
        let (mut ebpf, _, _) = load_object(&ProbeOptions::default())?;
        for (program, tracepoint) in FLOOR_PROGRAMS {
            let raw: &mut RawTracePoint = program_of(&mut ebpf, program)?;
            raw.load()
                .map_err(|source| ProbeError::Program { program, source })?;
            raw.attach(tracepoint)
                .map_err(|source| ProbeError::Program { program, source })?;
        }
        Ok(Self { _ebpf: ebpf })
    }
}
