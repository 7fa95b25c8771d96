//! Where the model keeps its processes and address spaces: indexed like vectors, but an
//! exited process folded away ([`super::exited`]) leaves nothing behind, so the model's memory
//! follows the processes it holds, not every process it ever saw.

use std::collections::BTreeMap;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use crate::model::address_space::AddressSpace;
use crate::model::process::{MmId, Process};

/// Processes by id. Ids are handed out in order of first appearance and never reused, so
/// iterating in id order lists processes as they appeared.
///
/// Boxed: ids only grow, so the B-tree's nodes are split as they fill and stay about half
/// full; a node slot of a whole `Process` (some 430 bytes) would cost twice that, a box 8.
#[derive(Debug, Default)]
pub(crate) struct ProcessTable {
    by_id: BTreeMap<usize, Box<Process>>,
    next: usize,
}

impl ProcessTable {
    pub(crate) fn push(&mut self, process: Process) -> usize {
        let id = self.next;
        self.next += 1;
        self.by_id.insert(id, Box::new(process));
        id
    }

    pub(crate) fn remove(&mut self, id: usize) -> Option<Process> {
        self.by_id.remove(&id).map(|process| *process)
    }

    /// In order of first appearance.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Process> + '_ {
        self.by_id.values().map(|process| &**process)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Process> + '_ {
        self.by_id.values_mut().map(|process| &mut **process)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

impl Index<usize> for ProcessTable {
    type Output = Process;

    fn index(&self, id: usize) -> &Process {
        &self.by_id[&id]
    }
}

impl IndexMut<usize> for ProcessTable {
    fn index_mut(&mut self, id: usize) -> &mut Process {
        self.by_id
            .get_mut(&id)
            .expect("a process id the model handed out and still holds")
    }
}

/// An address space and how many live processes run on it (more than one only while a vfork
/// child borrows its parent's).
///
/// The layout is shared copy-on-write between a parent and the children it forked: a child
/// that never runs (or only reads) costs no copy, and the first change on either side copies
/// it then ([`Mm::space_mut`]), which is when the two layouts differ.
#[derive(Debug)]
pub(crate) struct Mm {
    pub(crate) space: Arc<AddressSpace>,
    pub(crate) users: u32,
}

impl Mm {
    /// The layout to change, copied first if a fork shares it.
    pub(crate) fn space_mut(&mut self) -> &mut AddressSpace {
        Arc::make_mut(&mut self.space)
    }
}

/// Address spaces by id; the slot of one released is given to the next.
#[derive(Debug, Default)]
pub(crate) struct MmTable {
    slots: Vec<Mm>,
    free: Vec<usize>,
}

impl MmTable {
    pub(crate) fn add(&mut self, space: Arc<AddressSpace>) -> MmId {
        let mm = Mm { space, users: 1 };
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = mm;
                MmId::new(slot)
            }
            None => {
                self.slots.push(mm);
                MmId::new(self.slots.len() - 1)
            }
        }
    }

    /// Frees the space of a folded process (no one else uses an exited process's space).
    pub(crate) fn release(&mut self, id: MmId) {
        self.slots[id.slot()] = Mm {
            space: Arc::default(),
            users: 0,
        };
        self.free.push(id.slot());
    }
}

impl Index<MmId> for MmTable {
    type Output = Mm;

    fn index(&self, id: MmId) -> &Mm {
        &self.slots[id.slot()]
    }
}

impl IndexMut<MmId> for MmTable {
    fn index_mut(&mut self, id: MmId) -> &mut Mm {
        &mut self.slots[id.slot()]
    }
}
