//! Builders for synthetic event streams, shared by the model's and the reports' tests.

use crate::event::{
    Abi, AttachEvent, Comm, Event, EventBody, ExecEvent, ExecMappingEvent, ExecMappingKind,
    ExitEvent, FileRef, ForkEvent, ImageLayout, MapsLine, Syscall, SyscallEvent,
};
use crate::model::{Model, RegionKind};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

pub const PROT_NONE: u64 = 0;
pub use crate::linux_abi::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED,
    MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_WRITE,
};
pub const RW: u64 = PROT_READ | PROT_WRITE;
pub const RX: u64 = PROT_READ | PROT_EXEC;

pub const ANON: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

pub const ENOMEM: i64 = 12;
pub const ENOENT: i64 = 2;

/// One expected region: (start, end, perms, kind, name).
pub type Expected<'a> = (u64, u64, &'a str, RegionKind, &'a str);

pub fn file(inode: u64, path: &str) -> FileRef {
    FileRef {
        inode,
        path: path.to_owned(),
    }
}

/// A model fed one event at a time, each 1 µs after the last, each syscall taking 500 ns.
pub struct Feed {
    pub model: Model,
    pub time_ns: u64,
    pub abi: Abi,
    pub comm: &'static str,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        Self {
            model: Model::new(),
            time_ns: 1_000_000_000,
            abi: Abi::X86_64,
            comm: "test",
        }
    }

    pub fn send(&mut self, pid: u32, tid: u32, body: EventBody) -> &mut Self {
        self.time_ns += 1_000;
        let event = Event {
            time_ns: self.time_ns,
            pid,
            tid,
            comm: Comm::from_str_lossy(self.comm),
            abi: self.abi,
            body,
        };
        self.model.apply(&event);
        self
    }

    pub fn syscall_full(
        &mut self,
        pid: u32,
        syscall: Syscall,
        args: [u64; 6],
        ret: i64,
        string: Option<&str>,
        file: Option<FileRef>,
    ) -> &mut Self {
        let record = SyscallEvent {
            syscall,
            args,
            ret,
            entry_ns: self.time_ns + 500,
            string: string.map(str::to_owned),
            file,
        };
        self.send(pid, pid, EventBody::Syscall(record))
    }

    pub fn syscall(&mut self, pid: u32, syscall: Syscall, args: [u64; 6], ret: i64) -> &mut Self {
        self.syscall_full(pid, syscall, args, ret, None, None)
    }

    pub fn mmap_anon(&mut self, pid: u32, at: u64, len: u64, prot: u64) -> &mut Self {
        self.syscall(
            pid,
            Syscall::Mmap,
            [0, len, prot, ANON, u64::MAX, 0],
            at as i64,
        )
    }

    pub fn mmap_fixed_anon(&mut self, pid: u32, at: u64, len: u64, prot: u64) -> &mut Self {
        let flags = ANON | MAP_FIXED;
        self.syscall(
            pid,
            Syscall::Mmap,
            [at, len, prot, flags, u64::MAX, 0],
            at as i64,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn mmap_file(
        &mut self,
        pid: u32,
        at: u64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: u64,
        offset: u64,
        backing: FileRef,
    ) -> &mut Self {
        let args = [0, len, prot, flags, fd, offset];
        self.syscall_full(pid, Syscall::Mmap, args, at as i64, None, Some(backing))
    }

    pub fn munmap(&mut self, pid: u32, at: u64, len: u64) -> &mut Self {
        self.syscall(pid, Syscall::Munmap, [at, len, 0, 0, 0, 0], 0)
    }

    pub fn mprotect(&mut self, pid: u32, at: u64, len: u64, prot: u64) -> &mut Self {
        self.syscall(pid, Syscall::Mprotect, [at, len, prot, 0, 0, 0], 0)
    }

    pub fn mremap(
        &mut self,
        pid: u32,
        old: (u64, u64),
        new_len: u64,
        flags: u64,
        result: u64,
    ) -> &mut Self {
        let args = [old.0, old.1, new_len, flags, result, 0];
        self.syscall(pid, Syscall::Mremap, args, result as i64)
    }

    pub fn brk(&mut self, pid: u32, requested: u64, result: u64) -> &mut Self {
        self.syscall(pid, Syscall::Brk, [requested, 0, 0, 0, 0, 0], result as i64)
    }

    pub fn memfd_create(&mut self, pid: u32, name: &str, inode: u64, fd: i64) -> &mut Self {
        let memfd = file(inode, &format!("/memfd:{name}"));
        self.syscall_full(
            pid,
            Syscall::MemfdCreate,
            [0x1000, 0, 0, 0, 0, 0],
            fd,
            Some(name),
            Some(memfd),
        )
    }

    pub fn mmap_memfd(
        &mut self,
        pid: u32,
        at: u64,
        len: u64,
        prot: u64,
        (name, inode, fd): (&str, u64, u64),
    ) -> &mut Self {
        let memfd = file(inode, &format!("/memfd:{name}"));
        self.mmap_file(pid, at, len, prot, MAP_SHARED, fd, 0, memfd)
    }

    pub fn close(&mut self, pid: u32, fd: u64) -> &mut Self {
        self.syscall(pid, Syscall::Close, [fd, 0, 0, 0, 0, 0], 0)
    }

    pub fn fork(&mut self, parent: u32, child: u32, thread: bool, shares_mm: bool) -> &mut Self {
        let record = ForkEvent {
            child_pid: if thread { parent } else { child },
            child_tid: child,
            thread,
            shares_mm,
            untraced: false,
        };
        self.send(parent, parent, EventBody::Fork(record))
    }

    pub fn exec_mapping(&mut self, pid: u32, record: ExecMappingEvent) -> &mut Self {
        self.send(pid, pid, EventBody::ExecMapping(record))
    }

    pub fn exec(&mut self, pid: u32, record: ExecEvent) -> &mut Self {
        self.send(pid, pid, EventBody::Exec(Box::new(record)))
    }

    pub fn exit(&mut self, pid: u32, status: u32) -> &mut Self {
        let record = ExitEvent {
            status,
            group_dead: true,
        };
        self.send(pid, pid, EventBody::Exit(record))
    }

    pub fn attach(&mut self, pid: u32, record: AttachEvent) -> &mut Self {
        self.send(pid, pid, EventBody::Attach(record))
    }

    /// The process's layout as comparable tuples.
    #[track_caller]
    pub fn layout(&self, pid: u32) -> Vec<(u64, u64, String, RegionKind, String)> {
        let view = self
            .model
            .process(pid)
            .unwrap_or_else(|| panic!("pid {pid} unknown to the model"));
        view.layout()
            .iter()
            .map(|region| {
                (
                    region.start,
                    region.end,
                    region.perms.to_string(),
                    region.kind,
                    region.name().to_owned(),
                )
            })
            .collect()
    }

    #[track_caller]
    pub fn assert_layout(&self, pid: u32, expected: &[Expected<'_>]) {
        let expected: Vec<_> = expected
            .iter()
            .map(|&(start, end, perms, kind, name)| {
                (start, end, perms.to_owned(), kind, name.to_owned())
            })
            .collect();
        let actual = self.layout(pid);
        assert_eq!(
            actual,
            expected,
            "\nlayout of pid {pid}:\n{}",
            actual
                .iter()
                .map(|(s, e, p, k, n)| format!("  {s:#x}-{e:#x} {p} {k:?} {n}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

pub fn exec_mmap(
    start: u64,
    len: u64,
    prot: u32,
    offset: u64,
    backing: FileRef,
) -> ExecMappingEvent {
    ExecMappingEvent {
        kind: ExecMappingKind::Mmap,
        start,
        len,
        prot,
        flags: MAP_PRIVATE as u32,
        offset,
        file: Some(backing),
        name: None,
    }
}

pub fn exec_special(start: u64, len: u64, prot: u32, name: &str) -> ExecMappingEvent {
    ExecMappingEvent {
        kind: ExecMappingKind::Special,
        start,
        len,
        prot,
        flags: 0,
        offset: 0,
        file: None,
        name: Some(name.to_owned()),
    }
}

pub fn exec_other(kind: ExecMappingKind, start: u64, len: u64, prot: u32) -> ExecMappingEvent {
    ExecMappingEvent {
        kind,
        start,
        len,
        prot,
        flags: 0,
        offset: 0,
        file: None,
        name: None,
    }
}

/// An exec record with the fields tests care about; the rest zero.
pub fn exec_record(filename: &str, new_abi: Abi, start_brk: u64, stack: (u64, u64)) -> ExecEvent {
    ExecEvent {
        old_tid: 0,
        personality: 0,
        new_abi,
        filename: filename.to_owned(),
        interp: filename.to_owned(),
        layout: ImageLayout {
            start_code: 0,
            end_code: 0,
            start_data: 0,
            end_data: 0,
            start_brk,
            brk: start_brk,
            start_stack: stack.1 - 0x100,
            mmap_base: 0,
            stack_start: stack.0,
            stack_end: stack.1,
            interp_base: 0,
            entry: 0,
            phdr: 0,
        },
    }
}

pub fn maps_line(start: u64, end: u64, perms: &str, inode: u64, name: &str) -> MapsLine {
    MapsLine {
        start,
        end,
        perms: perms.to_owned(),
        offset: 0,
        inode,
        name: name.to_owned(),
    }
}
