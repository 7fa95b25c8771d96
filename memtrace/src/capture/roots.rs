//! The root directory each process names its files from, as this machine reaches it
//! (`/proc/PID/root`: `/` on the host, a chroot's directory), remembered while memtrace needs
//! it: a short-lived process is often gone before its exec event or its stack samples are
//! read, and its `/proc/PID/root` with it. A child starts in its parent's root, as the kernel
//! forks it.
//!
//! Capture learns roots from `/proc` at first sight (exec layouts are read on the reader
//! thread, before the session knows who a process is); user mode learns them from the
//! container identity the session tells it. Both keep them in this one map.

use std::{collections::HashMap, path::Path, sync::Arc};

use crate::event::{Event, EventBody};

#[derive(Debug, Default)]
pub struct Roots {
    known: HashMap<u32, Arc<str>>,
}

impl Roots {
    /// Capture's rule: learns the root of a process seen for the first time (read now, if it
    /// still runs) and a child's at fork, and forgets a process at its exit.
    pub fn observe(&mut self, event: &Event) {
        if event.pid != 0 && !self.known.contains_key(&event.pid) {
            if let Ok(root) = std::fs::read_link(format!("/proc/{}/root", event.pid)) {
                self.set(event.pid, &root.to_string_lossy());
            }
        }
        self.inherit(event);
        if let EventBody::Exit(exit) = &event.body {
            if exit.group_dead {
                self.known.remove(&event.pid);
            }
        }
    }

    /// `pid`'s root is `root`; a relative one (a kernel thread's, or unreadable) says nothing.
    pub fn set(&mut self, pid: u32, root: &str) {
        if root.starts_with('/') {
            self.known.insert(pid, Arc::from(root));
        }
    }

    /// At a fork, the child starts in its parent's root (unless already known).
    pub fn inherit(&mut self, event: &Event) {
        if let EventBody::Fork(fork) = &event.body {
            if !fork.thread {
                if let Some(root) = self.known.get(&event.pid).cloned() {
                    self.known.entry(fork.child_pid).or_insert(root);
                }
            }
        }
    }

    /// Forgets a process the session no longer keeps (folded away long after its exit).
    pub fn forget(&mut self, pid: u32) {
        self.known.remove(&pid);
    }

    /// Where process `pid`'s files were last known to be: `None` when never known.
    pub fn root_of(&self, pid: u32) -> Option<&Path> {
        self.known.get(&pid).map(|root| Path::new(&**root))
    }

    /// The same, shared, for what outlives this borrow.
    pub fn shared_root_of(&self, pid: u32) -> Option<Arc<str>> {
        self.known.get(&pid).cloned()
    }
}
