//! Kernel mode (`memtrace kernel`): the Linux counterpart of WinDbg's `!poolused`. Kernel
//! allocations (slab, page and per-CPU allocators) made during the trace and still
//! outstanding, grouped by call site and by slab cache, how they changed over the session,
//! and the kernel's own totals at start and end.
//!
//! - [`capture`] reads the kernel side's outstanding table into a snapshot ([`record`]),
//!   naming call sites from /proc/kallsyms ([`kallsyms`]) and adding the kernel's totals
//!   ([`procfs`]);
//! - [`live`] takes a snapshot at each interval and feeds it through the pipeline, which
//!   records it and hands it to the [`model`]; a replay feeds the recorded snapshots to the
//!   same model;
//! - [`report`] turns the model into text or JSON.

pub mod capture;
pub mod kallsyms;
pub mod live;
pub mod model;
pub mod procfs;
pub mod report;
