//! How memtrace ends when memory runs out, or when a bug panics: one line on stderr and a
//! non-zero exit, instead of Rust's "memory allocation of N bytes failed" and an abort with a
//! core dump, or a panic's several lines.
//!
//! Stable Rust has no allocation-error hook, so the global allocator is wrapped
//! ([`memtrace_common::alloc::ExitOnFailure`]): a failed allocation calls [`out_of_memory`],
//! which writes its line with one `write(2)` from a stack buffer (allocating is what just
//! failed, and a lock another thread holds must not stop it) and exits. What was
//! written before stays written: the recording holds every frame flushed so far (at most the
//! last second is lost). Allocations the input drives are bounded where they are made (frame
//! lengths, counts checked against the bytes that hold them), so a crafted recording does not
//! get here by claiming sizes.

use std::{alloc::System, io::Write as _};

use memtrace_common::alloc::ExitOnFailure;

/// The exit status after memory ran out: distinct from a failure memtrace reports (1), a
/// damaged recording (2) and a command that could not run (127).
pub const EXIT_OUT_OF_MEMORY: i32 = 3;

#[global_allocator]
static ALLOCATOR: ExitOnFailure<System> = ExitOnFailure::new(System, out_of_memory);

fn out_of_memory(size: usize) -> ! {
    let mut line = [0u8; 256];
    let mut rest = &mut line[..];
    // Formatting integers into a slice does not allocate.
    let _ = writeln!(
        rest,
        "memtrace: out of memory: an allocation of {size} bytes failed (ulimit -v, or the machine is out of memory); what was written so far is kept"
    );
    let len = 256 - rest.len();
    let _ = nix::unistd::write(std::io::stderr(), &line[..len]);
    // Runs no destructor (they could allocate); std's own cleanup only flushes stdout, without
    // waiting for a lock.
    std::process::exit(EXIT_OUT_OF_MEMORY)
}

/// A panic (a bug) prints one line saying where, unless `RUST_BACKTRACE` asks for more.
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|place| format!(" at {}:{}", place.file(), place.line()))
            .unwrap_or_default();
        eprintln!(
            "memtrace: internal error: {}{place} (RUST_BACKTRACE=1 shows more)",
            crate::escape::terminal(&message)
        );
    }));
}
