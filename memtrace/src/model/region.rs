//! One mapped range of a process and what the reports need to explain it: its permissions,
//! what backs it, and who created it when.

use std::fmt;
use std::sync::Arc;

use crate::event::Syscall;
use crate::model::memfd::MemfdId;

pub use crate::linux_abi::PAGE_SIZE;

/// Rounds up to the next page boundary, as the kernel does with every mapping length.
pub fn page_align_up(value: u64) -> u64 {
    value.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Access rights plus private/shared, as `/proc/PID/maps` prints them (`r-xp`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Perms(u8);

impl Perms {
    const READ: u8 = 1;
    const WRITE: u8 = 2;
    const EXEC: u8 = 4;
    const SHARED: u8 = 8;
    /// The `PROT_READ | PROT_WRITE | PROT_EXEC` bits; the same values as `Self`'s own.
    const PROT_MASK: u64 = 7;

    pub const PRIVATE_RW: Perms = Perms(Self::READ | Self::WRITE);

    /// From `PROT_*` bits (higher bits such as `PROT_GROWSDOWN` are ignored).
    pub fn from_prot(prot: u64, shared: bool) -> Self {
        let access = (prot & Self::PROT_MASK) as u8;
        Self(access | if shared { Self::SHARED } else { 0 })
    }

    /// Parses the kernel's four-character form; unknown characters count as "no".
    pub fn parse(text: &str) -> Self {
        let bytes = text.as_bytes();
        let flag = |index: usize, expected: u8, bit: u8| {
            if bytes.get(index) == Some(&expected) {
                bit
            } else {
                0
            }
        };
        Self(
            flag(0, b'r', Self::READ)
                | flag(1, b'w', Self::WRITE)
                | flag(2, b'x', Self::EXEC)
                | flag(3, b's', Self::SHARED),
        )
    }

    /// New access rights from `PROT_*` bits, keeping private/shared (what mprotect does).
    pub fn with_prot(self, prot: u64) -> Self {
        Self::from_prot(prot, self.shared())
    }

    pub fn readable(self) -> bool {
        self.0 & Self::READ != 0
    }

    pub fn writable(self) -> bool {
        self.0 & Self::WRITE != 0
    }

    pub fn executable(self) -> bool {
        self.0 & Self::EXEC != 0
    }

    pub fn shared(self) -> bool {
        self.0 & Self::SHARED != 0
    }

    /// `---p`: address space reserved, no memory anyone can touch.
    pub fn inaccessible(self) -> bool {
        self.0 & (Self::READ | Self::WRITE | Self::EXEC) == 0
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = [
            if self.readable() { 'r' } else { '-' },
            if self.writable() { 'w' } else { '-' },
            if self.executable() { 'x' } else { '-' },
            if self.shared() { 's' } else { 'p' },
        ];
        chars.iter().try_for_each(|c| write!(f, "{c}"))
    }
}

impl fmt::Debug for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What backs a region, as a person reading a report groups memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionKind {
    File,
    Anon,
    Heap,
    Stack,
    Memfd,
    SharedAnon,
    /// vdso, vvar and vsyscall: the kernel's own pages.
    Vdso,
    Other,
}

impl RegionKind {
    pub const ALL: [RegionKind; 8] = [
        Self::File,
        Self::Anon,
        Self::Heap,
        Self::Stack,
        Self::Memfd,
        Self::SharedAnon,
        Self::Vdso,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Anon => "anon",
            Self::Heap => "heap",
            Self::Stack => "stack",
            Self::Memfd => "memfd",
            Self::SharedAnon => "shared-anon",
            Self::Vdso => "vdso",
            Self::Other => "other",
        }
    }

    /// Whether the region's offset is a position in something (a file, a memfd), so that it
    /// moves along when the region is split.
    pub fn has_backing_offset(self) -> bool {
        matches!(
            self,
            Self::File | Self::Memfd | Self::SharedAnon | Self::Other
        )
    }
}

/// How memtrace learned about a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// Mapped by the kernel while loading an image.
    Exec,
    /// Already there when memtrace attached (`/proc/PID/maps`).
    Attach,
    /// Created by a traced syscall.
    Syscall,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            // The JSON word predates "attach" and stays, for the tools that read it.
            Self::Attach => "snapshot",
            Self::Syscall => "syscall",
        }
    }
}

/// Who made a region and when. Kept by every piece of the region through splits, moves and
/// forks, so that a leak is charged to the process whose syscall created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creation {
    pub origin: Origin,
    pub time_ns: u64,
    /// The syscall that created it, for [`Origin::Syscall`].
    pub syscall: Option<Syscall>,
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    pub perms: Perms,
    pub kind: RegionKind,
    /// File path, `memfd:NAME`, `[heap]`, `[stack]`, `[vdso]`…; `None` for anonymous memory.
    pub name: Option<Arc<str>>,
    /// Offset into the backing file or memfd, in bytes.
    pub offset: u64,
    /// Inode of the backing file; 0 when there is none or it is unknown.
    pub inode: u64,
    pub created: Creation,
    /// The memfd behind a [`RegionKind::Memfd`] region, when it was created during the session.
    pub memfd: Option<MemfdId>,
    /// Mapped with `MAP_STACK` or `MAP_GROWSDOWN`: a thread stack, not a leak candidate.
    pub thread_stack: bool,
    /// Sealed by `mseal` (Linux 6.10): the kernel refuses to unmap, move or reprotect it, so a
    /// success that would have is not one this process made.
    pub sealed: bool,
    /// Its memory protection key (`pkey_mprotect`); 0, the default key, for all others.
    pub pkey: u32,
    /// The user call stack of the syscall that created it, when one was sampled.
    pub stack: Option<crate::model::call_stacks::StackId>,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// The name, or "" for anonymous memory.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}
