//! memtrace: trace memory-mapping syscalls with eBPF and rebuild each process's address space.
//!
//! The layers, each using only those below it (docs/glossary.md names every concept):
//! - [`probes`] load the kernel side (memtrace-ebpf) and the offsets it needs from BTF;
//!   [`capture`] reads its rings and decodes the messages into [`event`]s;
//! - [`stream`] is mode-free: every event, live or replayed, passes it once, to the `--events`
//!   printer ([`event_line`]), to the recorder ([`recording`]), into the counts, and on to the
//!   consumer of the session's mode;
//! - the consumers: [`user_mode`] (the address-space [`model`], call [`stacks`], folding,
//!   `--interval`; its reports in [`report`]) and [`kernel_mode`] (kernel allocations by call
//!   site and cache);
//! - [`session`] runs a live user-mode session ([`launch`] starts the command, [`procfs`]
//!   reads the layouts of attached processes); [`replay`] feeds a recording to the consumer
//!   its header names; [`cli`] parses the command line and runs one of them.

pub mod agent;
pub mod capture;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod escape;
pub mod event;
pub mod event_line;
pub mod file_access;
pub mod kernel_mode;
pub mod launch;
pub mod linux_abi;
pub mod model;
pub mod output;
pub mod probes;
pub mod procfs;
pub mod recording;
pub mod replay;
pub mod report;
pub mod session;
pub mod stacks;
pub mod stream;
pub mod user_mode;
