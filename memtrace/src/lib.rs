//! memtrace: trace memory-mapping syscalls with eBPF and rebuild each process's address space.
//!
//! The flow, one module per stage:
//! - [`probes`] load the kernel side (memtrace-ebpf) and the offsets it needs from BTF;
//! - [`capture`] reads its ring buffer and decodes records into the [`event`] stream;
//! - [`pipeline`] feeds every event to the [`model`] (per-process address spaces), to the
//!   `--events` printer ([`event_line`]) and to the recorder ([`record`]);
//! - [`report`] turns the model into text or JSON.
//!
//! [`kernel`] is kernel mode (`memtrace kernel`): kernel allocations by call site and cache.
//!
//! [`session`] runs a live trace ([`launch`] starts the command, [`procfs`] snapshots attached
//! processes); [`replay`] feeds a recording through the same pipeline.

pub mod agent;
pub mod capture;
pub mod cgroup;
pub mod cli;
pub mod event;
pub mod event_line;
pub mod file_access;
pub mod interval;
pub mod kernel;
pub mod launch;
pub mod linux_abi;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod probes;
pub mod procfs;
pub mod record;
pub mod replay;
pub mod report;
pub mod session;
pub mod stacks;
