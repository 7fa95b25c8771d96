//! What each traced syscall does to a process's layout, fds and statistics.

use crate::event::{completed_args, Abi, Event, Syscall, SyscallEvent, IO_SETUP_RING_ARG};
use crate::model::address_space::AddressSpace;
use crate::model::anomaly::{impossible_success, Anomaly};
use crate::model::backing::Backing;
use crate::model::brk::{BrkFailure, HEAP_NAME};
use crate::model::limits::MapFailure;
use crate::model::memfd::{MemfdRegistry, MEMFD_PATH_PREFIX};
use crate::model::names::Names;
use crate::model::process::Process;
use crate::model::region::{page_align_up, Creation, Origin, Perms, Region, RegionKind, PAGE_SIZE};
use crate::model::stats::SyscallName;

use crate::linux_abi::{
    AIO_RING_PATH, ENOMEM, MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_SHARED, MAP_STACK,
    MFD_CLOEXEC, MREMAP_DONTUNMAP, MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_WRITE, SHM_EXEC,
    SHM_RDONLY, SYSV_PATH_PREFIX,
};

/// mmap2 counts its offset in pages of this size, whatever the page size.
const MMAP2_OFFSET_UNIT: u64 = 4096;

/// Everything one syscall may change.
pub(crate) struct SyscallTarget<'a> {
    pub(crate) process: &'a mut Process,
    pub(crate) space: &'a mut AddressSpace,
    pub(crate) memfds: &'a mut MemfdRegistry,
    pub(crate) names: &'a mut Names,
}

/// The syscalls whose user stack the probes sample.
fn creates_memory(syscall: Syscall) -> bool {
    matches!(
        syscall,
        Syscall::Mmap
            | Syscall::Mmap2
            | Syscall::OldMmap
            | Syscall::Mremap
            | Syscall::Brk
            | Syscall::MemfdCreate
    )
}

pub(crate) fn apply(target: SyscallTarget<'_>, event: &Event, record: &SyscallEvent) {
    let Some(name) = SyscallName::of(record.syscall) else {
        return;
    };
    let failed = match record.syscall {
        Syscall::Brk => brk_refused(event.abi, record),
        _ => record.failed(),
    };
    if let Some(reason) = (!failed)
        .then(|| {
            impossible_success(event.abi, record).or_else(|| sealed_against(target.space, record))
        })
        .flatten()
    {
        // Not a call of this syscall at all: neither counted nor applied.
        target
            .process
            .activity_mut()
            .anomalies
            .get_or_insert_with(Box::default)
            .record(Anomaly {
                time_ns: event.time_ns,
                tid: event.tid,
                syscall: record.syscall,
                args: record.args,
                ret: record.ret,
                reason,
            });
        return;
    }
    // An entry time of 0: the probe saw only the exit (attached mid-call, or the task moved
    // CPUs); the call counts, its latency is unknown.
    let latency_ns = (record.entry_ns != 0).then(|| event.time_ns.saturating_sub(record.entry_ns));
    // brk never returns -errno: a break left where it was is the kernel's ENOMEM.
    let errno = failed.then(|| record.errno().unwrap_or(ENOMEM));
    target
        .process
        .activity_mut()
        .stats
        .record_call(name, errno, latency_ns);
    let created = Creation {
        origin: Origin::Syscall,
        time_ns: event.time_ns,
        syscall: Some(record.syscall),
        pid: target.process.pid,
    };
    let result = result_address(event.abi, record.ret);
    if !failed && creates_memory(record.syscall) {
        target.process.activity_mut().last_creation = Some((event.tid, event.time_ns));
    }
    if failed && record.errno() == Some(ENOMEM) {
        map_refused(target.process, target.space, event.time_ns, record);
    }
    match record.syscall {
        // brk reports failure through its result, which still tells the current break.
        Syscall::Brk => brk(
            target,
            record.args[0],
            result,
            failed,
            event.time_ns,
            created,
        ),
        Syscall::Execve | Syscall::Execveat => {
            // Failed: the kernel's mappings for the new image were thrown away. Succeeded: the
            // Exec event already used them; anything left is stale.
            target.process.activity_mut().pending_exec.clear();
        }
        _ if failed => {}
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap => mmap(target, record, result, created),
        Syscall::Munmap => {
            let [start, len, ..] = record.args;
            let len = page_align_up(len);
            target.space.unmap(start, start.saturating_add(len));
            target.process.activity_mut().stats.record_size(name, len);
        }
        // pkey_mprotect is mprotect that also sets the pages' protection key (which
        // `/proc/PID/smaps` shows, not maps); with key -1 it keeps theirs, as mprotect does.
        Syscall::Mprotect | Syscall::PkeyMprotect => {
            let [start, len, prot, pkey, ..] = record.args;
            let len = page_align_up(len);
            let end = start.saturating_add(len);
            match (record.syscall, pkey as u32 as i32) {
                (Syscall::PkeyMprotect, pkey) if pkey >= 0 => {
                    target.space.protect_with_key(start, end, prot, pkey as u32)
                }
                _ => target.space.protect(start, end, prot),
            }
            target.process.activity_mut().stats.record_size(name, len);
        }
        Syscall::Mremap => mremap(target, record, result, created),
        Syscall::MemfdCreate => memfd_create(target, record, event.time_ns),
        Syscall::Close => {
            let fd = record.args[0] as u32;
            target.process.fds.close(fd, target.memfds);
        }
        Syscall::Shmat => shmat(target, record, result, created),
        Syscall::Shmdt => {
            let unmapped = target.space.detach(record.args[0], is_sysv_segment);
            target
                .process
                .activity_mut()
                .stats
                .record_size(name, unmapped);
        }
        Syscall::IoSetup => io_setup(target, record, created),
        Syscall::IoDestroy => {
            let unmapped = target.space.detach(record.args[0], is_aio_ring);
            target
                .process
                .activity_mut()
                .stats
                .record_size(name, unmapped);
        }
        Syscall::Mseal => {
            let [start, len, ..] = record.args;
            let len = page_align_up(len);
            target.space.seal(start, start.saturating_add(len));
            target.process.activity_mut().stats.record_size(name, len);
        }
        Syscall::RemapFilePages => {
            // The kernel rounds both down to pages (mm/mmap.c), and maps the same file again
            // over the range, from page `pgoff`: the layout keeps its perms and backing.
            let [start, size, _, pgoff, ..] = record.args;
            let (start, size) = (start & !(PAGE_SIZE - 1), size & !(PAGE_SIZE - 1));
            target.space.set_offset(
                start,
                start.saturating_add(size),
                pgoff.saturating_mul(PAGE_SIZE),
            );
            target.process.activity_mut().stats.record_size(name, size);
        }
        // Never in a message: the kernel side reports the shmat or shmdt ipc(2) made.
        Syscall::Ipc => {}
    }
}

/// An mmap or mremap refused with ENOMEM: out of address space, mappings or memory.
fn map_refused(process: &mut Process, space: &AddressSpace, time_ns: u64, record: &SyscallEvent) {
    let asked_bytes = match record.syscall {
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap => record.args[1],
        // Without MREMAP_MAYMOVE, ENOMEM only says the mapping cannot grow where it is: a
        // question allocators ask, not exhaustion.
        Syscall::Mremap if record.args[3] & MREMAP_MAYMOVE != 0 => record.args[2],
        _ => return,
    };
    let failures = &mut process.bounds.get_or_insert_with(Box::default).failures;
    if failures.wants_example() {
        failures.record(MapFailure {
            time_ns,
            syscall: record.syscall,
            asked_bytes,
            mapped_bytes: space.total_bytes(),
            map_count: space.vma_count(),
        });
    } else {
        failures.count_only(asked_bytes);
    }
}

/// Why a success the model was told of cannot be one, given the layout: the range it changes
/// holds a sealed region (`mseal`), and the kernel refuses with EPERM to unmap, move, remap
/// over or reprotect one.
fn sealed_against(space: &AddressSpace, record: &SyscallEvent) -> Option<&'static str> {
    let [address, len, _, flags, ..] = record.args;
    let range = match record.syscall {
        Syscall::Munmap | Syscall::Mprotect | Syscall::PkeyMprotect => (address, len),
        // The old range, whether it moves, shrinks or grows in place.
        Syscall::Mremap => (address, len),
        Syscall::Mmap | Syscall::Mmap2 | Syscall::OldMmap if flags & MAP_FIXED != 0 => {
            (address, len)
        }
        _ => return None,
    };
    let (start, len) = (range.0, page_align_up(range.1));
    space
        .any_sealed(start, start.saturating_add(len))
        .then_some("the range is sealed")
}

/// A SysV shared memory segment's region, as shmat and `/proc/PID/maps` name it.
fn is_sysv_segment(region: &Region) -> bool {
    region.kind == RegionKind::SharedAnon && region.name().starts_with(SYSV_PATH_PREFIX)
}

/// An AIO ring's region, as io_setup and `/proc/PID/maps` name it.
fn is_aio_ring(region: &Region) -> bool {
    region.name() == AIO_RING_PATH
}

/// shmat maps the whole segment, shared, at the address it returns: named as
/// `/proc/PID/maps` names it (`/SYSV` and the key), with the segment's id as its inode (as
/// maps shows it). Its size is not among the arguments: capture read it
/// ([`completed_args::SHMAT_SIZE`]); unknown, nothing is mapped.
fn shmat(target: SyscallTarget<'_>, record: &SyscallEvent, start: u64, created: Creation) {
    let [shmid, _, shmflg, ..] = record.args;
    let len = page_align_up(record.args[completed_args::SHMAT_SIZE]);
    let Some(end) = start.checked_add(len).filter(|_| len > 0) else {
        return;
    };
    let key = record.args[completed_args::SHMAT_KEY] as u32;
    let mut prot = PROT_READ;
    if shmflg & SHM_RDONLY == 0 {
        prot |= PROT_WRITE;
    }
    if shmflg & SHM_EXEC != 0 {
        prot |= PROT_EXEC;
    }
    let name = format!("{SYSV_PATH_PREFIX}{key:08x}");
    let backing = Backing {
        inode: shmid as u32 as u64,
        ..Backing::named(RegionKind::SharedAnon, &name, target.names)
    };
    target
        .space
        .map(backing.region(start, end, Perms::from_prot(prot, true), 0, created));
    target
        .process
        .activity_mut()
        .stats
        .record_size(SyscallName::Shmat, len);
}

/// io_setup maps the context's ring, shared and writable, at the address it writes through
/// `ctx_idp` (the kernel side read it into `args[IO_SETUP_RING_ARG]`); its size, which the
/// kernel derives from `nr_events` and the number of possible CPUs, capture read
/// ([`completed_args::IO_SETUP_RING_SIZE`]).
fn io_setup(target: SyscallTarget<'_>, record: &SyscallEvent, created: Creation) {
    let start = record.args[IO_SETUP_RING_ARG];
    let len = page_align_up(record.args[completed_args::IO_SETUP_RING_SIZE]);
    let Some(end) = start.checked_add(len).filter(|_| len > 0 && start != 0) else {
        return;
    };
    let backing = Backing::named(RegionKind::Other, AIO_RING_PATH, target.names);
    target.space.map(backing.region(
        start,
        end,
        Perms::from_prot(PROT_READ | PROT_WRITE, true),
        0,
        created,
    ));
    target
        .process
        .activity_mut()
        .stats
        .record_size(SyscallName::IoSetup, len);
}

/// An address result. An ia32 task's addresses are 32-bit: whatever the upper half holds
/// (sign extension on the way out of the kernel) is not part of it.
fn result_address(abi: Abi, ret: i64) -> u64 {
    match abi {
        Abi::I386 => ret as u64 & u64::from(u32::MAX),
        _ => ret as u64,
    }
}

/// brk never returns -errno: it refused when asked to move and the break stayed elsewhere.
fn brk_refused(abi: Abi, record: &SyscallEvent) -> bool {
    let requested = record.args[0];
    requested != 0 && result_address(abi, record.ret) != requested
}

fn brk(
    target: SyscallTarget<'_>,
    requested: u64,
    current: u64,
    failed: bool,
    time_ns: u64,
    created: Creation,
) {
    let brk = &mut target.process.brk;
    if failed {
        brk.record_failure(BrkFailure {
            time_ns,
            requested,
            current,
            asked_bytes: requested.saturating_sub(current),
        });
    }
    // Even a refusal tells the current break: if the model disagrees (events lost), it
    // follows the kernel.
    let old_break = brk.current();
    if old_break != Some(current) {
        let heap_name = target.names.intern(HEAP_NAME);
        brk.move_break(current, target.space, created, &heap_name);
    }
    if let Some(old) = old_break.filter(|&old| old < current) {
        target
            .process
            .activity_mut()
            .stats
            .record_size(SyscallName::Brk, current - old);
    }
}

fn mmap(mut target: SyscallTarget<'_>, record: &SyscallEvent, start: u64, created: Creation) {
    let [_, len, prot, flags, fd, offset] = record.args;
    let len = page_align_up(len);
    let Some(end) = start.checked_add(len).filter(|_| len > 0) else {
        return;
    };
    let offset = match record.syscall {
        Syscall::Mmap2 => offset.wrapping_mul(MMAP2_OFFSET_UNIT),
        _ => offset,
    };
    // MAP_SHARED and MAP_SHARED_VALIDATE (3) both have the low bit; MAP_PRIVATE (2) does not.
    let shared = flags & MAP_SHARED != 0;
    let backing = if flags & MAP_ANONYMOUS != 0 {
        Backing::anonymous(shared)
    } else {
        file_backing(&mut target, record, fd as u32)
    };
    let mut region = backing.region(start, end, Perms::from_prot(prot, shared), offset, created);
    region.thread_stack = flags & (MAP_STACK | MAP_GROWSDOWN) != 0;
    target.space.map(region);
    target
        .process
        .activity_mut()
        .stats
        .record_size(SyscallName::Mmap, len);
}

/// What a file mapping through `fd` shows: the file the kernel side named, else the memfd the
/// process got that fd from.
fn file_backing(target: &mut SyscallTarget<'_>, record: &SyscallEvent, fd: u32) -> Backing {
    let fd_memfd = target.process.fds.memfd(fd);
    match &record.file {
        Some(file) => Backing::of_file(file, fd_memfd, target.memfds, target.names),
        None => fd_memfd
            .and_then(|id| Backing::memfd(id, target.memfds))
            .unwrap_or_else(|| Backing::unnamed(RegionKind::Other)),
    }
}

fn mremap(target: SyscallTarget<'_>, record: &SyscallEvent, new_start: u64, created: Creation) {
    let [old_start, old_len, new_len, flags, ..] = record.args;
    let (old_len, new_len) = (page_align_up(old_len), page_align_up(new_len));
    let keep_old = flags & MREMAP_DONTUNMAP != 0;
    let unknown = target
        .space
        .remap(old_start, old_len, new_start, new_len, keep_old);
    if let Some((start, end)) = unknown {
        // The model never saw the old mapping (created before the session, or its event was
        // lost). The range is mapped now; most remapped memory is malloc's anonymous blocks.
        let region = Backing::anonymous(false).region(start, end, Perms::PRIVATE_RW, 0, created);
        target.space.map(region);
    }
    target
        .process
        .activity_mut()
        .stats
        .record_size(SyscallName::Mremap, new_len);
}

fn memfd_create(target: SyscallTarget<'_>, record: &SyscallEvent, time_ns: u64) {
    let bare_name = record.string.as_deref().unwrap_or_else(|| {
        record
            .file
            .as_ref()
            .and_then(|file| file.path.strip_prefix(MEMFD_PATH_PREFIX))
            .unwrap_or("")
    });
    let inode = record.file.as_ref().map_or(0, |file| file.inode);
    let id = target
        .memfds
        .create(bare_name, inode, time_ns, target.process.pid, target.names);
    let cloexec = record.args[1] & MFD_CLOEXEC != 0;
    target
        .process
        .fds
        .open(record.ret as u32, id, cloexec, target.memfds);
}
