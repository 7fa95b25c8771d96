//! The root directory each traced process names its files from, as this machine reaches it
//! (`/proc/PID/root`: `/` on the host, a chroot's directory), remembered while the process
//! lives: a short-lived process is often gone before its exec event is read, and its
//! `/proc/PID/root` with it. A child inherits its parent's root at fork, as the kernel does.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::event::{Event, EventBody};

#[derive(Debug, Default)]
pub struct Roots {
    known: HashMap<u32, PathBuf>,
}

impl Roots {
    /// Learns from an event: the root of a process seen for the first time (read now, if it
    /// still runs), a child's at fork, and forgets a process at its exit.
    pub fn observe(&mut self, event: &Event) {
        if event.pid == 0 {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.known.entry(event.pid) {
            if let Ok(root) = std::fs::read_link(format!("/proc/{}/root", event.pid)) {
                if root.is_absolute() {
                    entry.insert(root);
                }
            }
        }
        match &event.body {
            EventBody::Fork(fork) if !fork.thread => {
                if let Some(root) = self.known.get(&event.pid).cloned() {
                    self.known.entry(fork.child_pid).or_insert(root);
                }
            }
            EventBody::Exit(exit) if exit.group_dead => {
                self.known.remove(&event.pid);
            }
            _ => {}
        }
    }

    /// Where process `pid`'s files were last known to be: `None` when never known.
    pub fn root_of(&self, pid: u32) -> Option<&Path> {
        self.known.get(&pid).map(PathBuf::as_path)
    }
}
