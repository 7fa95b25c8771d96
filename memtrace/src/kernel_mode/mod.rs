//! Kernel mode (`memtrace kernel`): the Linux counterpart of WinDbg's `!poolused`. Kernel
//! allocations (slab, page and per-CPU allocators) made during the trace and still
//! outstanding, grouped by call site and by slab cache, how they changed over the session,
//! and the kernel's own totals at start and end.
//!
//! - [`capture`] reads the kernel side's outstanding table into a kernel snapshot
//!   ([`crate::event::kernel_snapshot`]), naming call sites from /proc/kallsyms ([`kallsyms`])
//!   and adding the kernel's totals ([`procfs`]);
//! - [`live`] takes a kernel snapshot once per snapshot period and feeds it through the
//!   stream, which records it and hands it to the [`model`], kernel mode's consumer; a replay
//!   feeds the recorded snapshots to the same model;
//! - [`report`] turns the model into text or JSON.

pub mod capture;
pub mod kallsyms;
pub mod live;
pub mod model;
pub mod procfs;
pub mod report;
