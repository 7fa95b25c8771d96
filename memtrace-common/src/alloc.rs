//! A global allocator that never returns a null pointer: when the allocator it wraps fails,
//! it calls a handler that does not return (memtrace's writes one line and exits).
//!
//! Stable Rust has no hook for allocation failures (`std::alloc::set_alloc_error_hook` is
//! unstable): a failed allocation prints "memory allocation of N bytes failed" and aborts with
//! a core dump. Wrapping the allocator is the stable way to decide what happens instead. It
//! lives here because implementing `GlobalAlloc` is unsafe, and unsafe code is kept to this
//! crate and the eBPF programs; the handler itself is ordinary code in memtrace.
//!
//! A consequence: `try_reserve` cannot fail gracefully under this allocator either; memtrace
//! bounds what its input can make it allocate instead.

use core::alloc::{GlobalAlloc, Layout};

/// `inner`, except that a failed allocation calls `on_failure` with the size asked for.
pub struct ExitOnFailure<A> {
    inner: A,
    on_failure: fn(usize) -> !,
}

impl<A> ExitOnFailure<A> {
    pub const fn new(inner: A, on_failure: fn(usize) -> !) -> Self {
        Self { inner, on_failure }
    }

    #[inline]
    fn check(&self, pointer: *mut u8, size: usize) -> *mut u8 {
        if pointer.is_null() {
            (self.on_failure)(size)
        }
        pointer
    }
}

// SAFETY: every call is forwarded to `inner` with the caller's own arguments, so `inner`'s
// guarantees hold; a null result never reaches the caller because `on_failure` does not return.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ExitOnFailure<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `inner`'s.
        self.check(unsafe { self.inner.alloc(layout) }, layout.size())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        self.check(unsafe { self.inner.alloc_zeroed(layout) }, layout.size())
    }

    #[inline]
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from this allocator, so from `inner`, with `layout`.
        unsafe { self.inner.dealloc(pointer, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract on `new_size`.
        self.check(
            unsafe { self.inner.realloc(pointer, layout, new_size) },
            new_size,
        )
    }
}
